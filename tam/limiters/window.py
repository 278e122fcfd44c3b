"""A sliding-window limiter for one provider account (max in flight + requests per interval)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from tam.settings import LimitConfig


class CapacitySource(Protocol):
    """Grants the limiter how many calls it may run at once right now.

    The local source grants the configured maximum at once. A shared source (Prefect
    leases) grants blocks as it obtains them and takes them back when the limiter is idle.
    """

    async def want(self, limiter: AccountLimiter, demand: int) -> None:
        """Called when `demand` callers wait; may raise the limiter's capacity later."""

    async def idle(self, limiter: AccountLimiter) -> None:
        """Called when nothing is waiting or running; may shrink capacity."""

    async def close(self) -> None: ...


@dataclass
class LimiterStats:
    started: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    waiting: int = 0
    rate_limited: int = 0
    capacity: int = 0
    # AIMD congestion window on concurrency (≤ capacity); see `rate_limited`.
    window: float = 1.0
    paused_until: float = 0.0
    recent_starts: deque[float] = field(default_factory=deque)


class AccountLimiter:
    """Admits a call when a slot is free, the interval budget allows it, and no 429 pause holds.

    Waiters are served first come, first served, so no item starves. On a 429 the limiter
    pauses every new start until `retry-after` and halves its concurrency window, which
    grows back by one per answer.
    """

    def __init__(
        self,
        name: str,
        config: LimitConfig,
        *,
        capacity: CapacitySource | None = None,
        clock: _Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self._source = capacity
        self._clock = clock
        self._cond = asyncio.Condition()
        self._queue: deque[asyncio.Future[None]] = deque()
        self.stats = LimiterStats(
            capacity=config.max_in_flight if capacity is None else 0,
            window=float(config.max_in_flight),
        )
        self._wakeup: asyncio.TimerHandle | None = None

    # --- public --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.stats.capacity

    def set_capacity(self, value: int) -> None:
        """Used by capacity sources; never above the configured maximum."""
        self.stats.capacity = max(0, min(value, self.config.max_in_flight))
        self._admit()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append(fut)
        self.stats.waiting += 1
        self._admit()
        if not fut.done() and self._source is not None:
            await self._source.want(self, self.stats.waiting + self.stats.in_flight)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Admitted and cancelled in the same breath: give the slot back.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._queue.remove(fut)
                self.stats.waiting -= 1
            raise

    def release(self) -> None:
        self.stats.in_flight -= 1
        self._admit()
        if self._source is not None and self.stats.in_flight == 0 and not self._queue:
            asyncio.get_running_loop().create_task(self._source.idle(self))

    def rate_limited(self, retry_after: float | None) -> None:
        """A call got 429: pause every new start until `retry-after` and halve the window.

        AIMD on concurrency (halve on 429, +1 per answer) rather than a learned request rate:
        a rate learned from a noisy window ratchets down under scattered 429s, while a
        halved window climbs back within a few calls and still settles under a real cap.
        """
        now = self._clock()
        self.stats.rate_limited += 1
        pause = retry_after if retry_after is not None and retry_after > 0 else 1.0
        self.stats.paused_until = max(self.stats.paused_until, now + pause)
        self.stats.window = max(1.0, min(self.stats.window, float(self.stats.capacity)) / 2)
        self._admit()

    def succeeded(self) -> None:
        """A call got an answer: the window grows back by one."""
        if self.stats.window < self.config.max_in_flight:
            self.stats.window = min(float(self.config.max_in_flight), self.stats.window + 1)
            self._admit()

    # --- scheduling ------------------------------------------------------------------------
    def _admit(self) -> None:
        now = self._clock()
        window = self.config.interval_s
        starts = self.stats.recent_starts
        while starts and starts[0] <= now - window:
            starts.popleft()
        while self._queue:
            if self._queue[0].done():
                self._queue.popleft()
                continue
            if self.stats.in_flight >= min(self.stats.capacity, int(self.stats.window)):
                return
            if now < self.stats.paused_until:
                self._schedule(self.stats.paused_until - now)
                return
            cap = self.config.requests_per_interval
            if cap is not None and len(starts) >= cap:
                self._schedule(starts[len(starts) - cap] + window - now)
                return
            fut = self._queue.popleft()
            self.stats.waiting -= 1
            self.stats.in_flight += 1
            self.stats.started += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            starts.append(now)
            fut.set_result(None)

    def _schedule(self, delay: float) -> None:
        if self._wakeup is not None and not self._wakeup.cancelled():
            return
        loop = asyncio.get_running_loop()

        def wake() -> None:
            self._wakeup = None
            self._admit()

        # Re-check at least every 0.2 s: cheap (local), and robust to clock adjustments.
        self._wakeup = loop.call_later(min(max(delay, 0.001), 0.2), wake)


class _Clock(Protocol):
    def __call__(self) -> float: ...


_REGISTRY: dict[tuple[int, str], AccountLimiter] = {}


def limiter_for(
    name: str, config: LimitConfig, *, capacity: CapacitySource | None = None
) -> AccountLimiter:
    """The process-wide limiter of one account on the running loop (one per loop: asyncio
    primitives cannot be shared between loops)."""
    key = (id(asyncio.get_running_loop()), name)
    limiter = _REGISTRY.get(key)
    if limiter is None or limiter.config != config:
        limiter = AccountLimiter(name, config, capacity=capacity)
        _REGISTRY[key] = limiter
    return limiter
