"""The one retry layer: every provider call goes through `call_with_retries`.

SDK-level retries are switched off (anthropic `max_retries=0`) so retries never stack, and so
a 429 can pause the shared limiter instead of each caller sleeping on its own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tam.clients._constants import (
    INITIAL_RETRY_DELAY_S,
    MAX_RATE_LIMIT_WAITS,
    MAX_RETRY_AFTER_S,
    MAX_RETRY_DELAY_S,
)
from tam.errors import ProviderError, RateLimited
from tam.limiters import AccountLimiter

T = TypeVar("T")


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Jittered exponential delay; a server's `retry-after` wins when it is given."""
    if retry_after is not None and retry_after >= 0:
        return float(min(retry_after, MAX_RETRY_AFTER_S))
    base: float = min(INITIAL_RETRY_DELAY_S * 2 ** max(attempt - 1, 0), MAX_RETRY_DELAY_S)
    return base * (0.75 + random.random() * 0.5)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    limiter: AccountLimiter | None,
    max_attempts: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call` inside a limiter slot, retrying what is retryable.

    Waits happen outside the slot so other items keep the account busy meanwhile.
    Non-retryable errors (systemic, not found, invalid request) propagate at once.
    """
    attempt = 0
    rate_waits = 0
    while True:
        try:
            if limiter is None:
                result = await call()
            else:
                async with limiter.slot():
                    result = await call()
                limiter.succeeded()
            return result
        except RateLimited as exc:
            rate_waits += 1
            if limiter is not None:
                limiter.rate_limited(exc.retry_after)
            if rate_waits > MAX_RATE_LIMIT_WAITS:
                raise
            # The limiter's pause already holds every caller back; only wait here when
            # there is no shared limiter to do it.
            if limiter is None:
                await sleep(backoff_delay(rate_waits, exc.retry_after))
        except ProviderError as exc:
            attempt += 1
            if not exc.retryable or attempt >= max_attempts:
                raise
            await sleep(backoff_delay(attempt, exc.retry_after))
