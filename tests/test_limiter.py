"""Limiter semantics without timing: slots, FIFO, rate window, 429 pause and recovery."""

from __future__ import annotations

import asyncio

import pytest

from tam.clients._retry import call_with_retries
from tam.errors import AuthFailed, RateLimited, Unavailable
from tam.limiters import AccountLimiter
from tam.settings import LimitConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_never_more_in_flight_than_the_limit() -> None:
    limiter = AccountLimiter("x", LimitConfig(max_in_flight=3))
    current = peak = 0

    async def work() -> None:
        nonlocal current, peak
        async with limiter.slot():
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            current -= 1

    await asyncio.gather(*(work() for _ in range(50)))
    assert peak == 3
    assert limiter.stats.max_in_flight == 3
    assert limiter.stats.in_flight == 0
    assert limiter.stats.started == 50


async def test_next_call_starts_the_moment_a_slot_frees() -> None:
    """Sliding window: a finished call lets exactly one waiter in, without waiting for
    the other in-flight calls (a fixed batch would wait for the slowest)."""
    limiter = AccountLimiter("x", LimitConfig(max_in_flight=2))
    slow_release = asyncio.Event()
    order: list[str] = []

    async def slow() -> None:
        async with limiter.slot():
            order.append("slow-start")
            await slow_release.wait()

    async def fast(name: str) -> None:
        async with limiter.slot():
            order.append(f"{name}-start")

    slow_task = asyncio.create_task(slow())
    await asyncio.sleep(0)
    fast_tasks = [asyncio.create_task(fast(f"f{i}")) for i in range(5)]
    await asyncio.gather(*fast_tasks)  # all complete while `slow` still holds its slot
    assert order[0] == "slow-start"
    assert order[1:] == [f"f{i}-start" for i in range(5)]  # FIFO
    slow_release.set()
    await slow_task


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = AccountLimiter("x", LimitConfig(max_in_flight=1))
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.stats.in_flight == 0
    assert limiter.stats.waiting == 0
    async with limiter.slot():
        assert limiter.stats.in_flight == 1


async def test_requests_per_interval_holds_starts_back() -> None:
    clock = FakeClock()
    limiter = AccountLimiter(
        "x", LimitConfig(max_in_flight=10, requests_per_interval=3, interval_s=60), clock=clock
    )
    started: list[int] = []

    async def work(i: int) -> None:
        async with limiter.slot():
            started.append(i)

    tasks = [asyncio.create_task(work(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert sorted(started) == [0, 1, 2]  # the window is full
    clock.now += 61
    await asyncio.sleep(0.3)  # the scheduled wake-up re-checks the window
    assert sorted(started) == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)


async def test_429_pauses_everyone_then_window_recovers() -> None:
    clock = FakeClock()
    limiter = AccountLimiter("x", LimitConfig(max_in_flight=8, interval_s=60), clock=clock)
    limiter.rate_limited(retry_after=30)
    assert limiter.stats.paused_until == clock.now + 30
    assert limiter.stats.window == 4  # halved
    blocked = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not blocked.done()  # paused for everyone
    clock.now += 31
    await asyncio.sleep(0.3)
    assert blocked.done()
    limiter.release()
    # While the window is 4, a fifth concurrent caller waits even though capacity is 8.
    for _ in range(4):
        await limiter.acquire()
    fifth = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not fifth.done()
    limiter.release()
    limiter.succeeded()  # window 5: room for the fifth
    await asyncio.sleep(0.01)
    assert fifth.done()
    for _ in range(4):
        limiter.release()
        limiter.succeeded()
    assert limiter.stats.window == 8  # fully recovered


async def test_retries_honour_retry_after_and_stop_on_systemic() -> None:
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited("slow down", provider="p", status_code=429, retry_after=7)
        if calls == 2:
            raise Unavailable("overloaded", provider="p", status_code=529)
        return "ok"

    assert await call_with_retries(flaky, limiter=None, max_attempts=3, sleep=fake_sleep) == "ok"
    assert sleeps[0] == 7  # retry-after honoured
    assert 0 < sleeps[1] <= 1.0

    async def bad_key() -> str:
        raise AuthFailed("invalid x-api-key", provider="p", status_code=401)

    with pytest.raises(AuthFailed):
        await call_with_retries(bad_key, limiter=None, max_attempts=5, sleep=fake_sleep)


async def test_outage_gives_up_after_max_attempts() -> None:
    attempts = 0

    async def down() -> str:
        nonlocal attempts
        attempts += 1
        raise Unavailable("connection refused", provider="p")

    async def no_sleep(_: float) -> None:
        return None

    with pytest.raises(Unavailable):
        await call_with_retries(down, limiter=None, max_attempts=4, sleep=no_sleep)
    assert attempts == 4
