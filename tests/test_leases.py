"""Prefect-leased account budgets against a real Prefect server: the limit holds across
processes, both processes get a share, crashed holders' slots come back, idle holders give
everything back, and the limits commands are idempotent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from cli.limits import apply_limits, show_limits
from orchestration.leases import PrefectLeaseCapacity
from orchestration.limits import account_limiter, close_account_limiters, lease_source
from tam.limiters import AccountLimiter
from tam.limiters.lease_policy import Lease
from tam.settings import LimitConfig, Settings

pytestmark = pytest.mark.prefect

WORKER = Path(__file__).parent / "helpers" / "lease_worker.py"


@pytest.fixture
async def provider(prefect_server: Any) -> AsyncIterator[str]:
    """A fresh provider name per test; GCLs named after it are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await close_account_limiters()
    async with get_client() as client:
        for gcl in await client.read_global_concurrency_limits(limit=200):
            if name in gcl.name:
                await client.delete_global_concurrency_limit_by_name(gcl.name)


async def active_slots(name: str) -> int:
    """Slots in use on a GCL; -1 while it does not exist yet."""
    async with get_client() as client:
        try:
            return (await client.read_global_concurrency_limit_by_name(name)).active_slots
        except ObjectNotFound:
            return -1


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


async def read_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line.strip() == expected, (line, proc.stderr.read() if proc.stderr else "")


async def finish(proc: subprocess.Popen[str], timeout: float = 120) -> None:
    code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def load(path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if "start" in r], next(r["stats"] for r in rows if "stats" in r)


def peak_overlap(calls: list[dict[str, float]]) -> int:
    # An end sorts before a start at the same instant: the slot was free again.
    events = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def test_limit_holds_across_two_processes_and_both_get_a_share(
    provider: str, tmp_path: Path
) -> None:
    limit = 4
    base = {"provider": provider, "max_in_flight": limit, "mode": "work", "min_ms": 20}
    # ~7.5 s of work alone: room for the fair-share period (2 s) and the occasional 2 s
    # client retry when the SQLite-backed server answers 503 under concurrent writes.
    first = spawn({**base, "calls": 600, "max_ms": 80, "out": str(tmp_path / "a.jsonl")})
    go = tmp_path / "go"
    second = spawn(
        {**base, "calls": 80, "max_ms": 80, "out": str(tmp_path / "b.jsonl"), "go_file": str(go)}
    )
    await read_line(second, "ready")
    # The second process starts only once the first holds the whole account, so it has to
    # be given slots back (fair share), not merely win a race.
    api = f"tam-api-{provider}"

    async def saturated() -> bool:
        return await active_slots(api) == limit

    await wait_until(saturated, 60, "the first process to hold every slot")
    go.touch()
    await finish(first)
    await finish(second)

    a_calls, a_stats = load(tmp_path / "a.jsonl")
    b_calls, b_stats = load(tmp_path / "b.jsonl")
    assert len(a_calls) == 600 and len(b_calls) == 80
    assert peak_overlap(a_calls + b_calls) <= limit
    # The second process ran calls while the first still had work, and vice versa.
    stats = f"first: {a_stats}, second: {b_stats}"
    assert min(c["start"] for c in b_calls) < max(c["end"] for c in a_calls), stats
    assert min(c["start"] for c in a_calls) < max(c["end"] for c in b_calls), stats
    assert a_stats["given_back"] >= 1, stats

    async def released() -> bool:
        return await active_slots(api) == 0

    await wait_until(released, 10, "both processes to release their leases")


async def test_requests_per_interval_hold_across_processes(provider: str, tmp_path: Path) -> None:
    """6 requests/s shared by two processes of 12 calls each: 24 starts need about
    (24 - 6) / 6 = 3 s of bucket refill; each process alone would be done in ~1 s."""
    base = {
        "provider": provider,
        "max_in_flight": 4,
        "requests_per_interval": 6,
        "interval_s": 1.0,
        "mode": "work",
        "calls": 12,
        "min_ms": 30,
        "max_ms": 60,
    }
    go = tmp_path / "go"
    procs = [
        spawn({**base, "out": str(tmp_path / f"{i}.jsonl"), "go_file": str(go)}) for i in (0, 1)
    ]
    for proc in procs:
        await read_line(proc, "ready")
    go.touch()
    for proc in procs:
        await finish(proc)
    results = [load(tmp_path / f"{i}.jsonl") for i in (0, 1)]
    starts = sorted(c["start"] for calls, _ in results for c in calls)
    assert len(starts) == 24
    assert peak_overlap([c for calls, _ in results for c in calls]) <= 4
    stats = [stats for _, stats in results]
    # A token bucket of 6 admits at most its 6 plus 6 refilled in any 1 s window.
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    print(f"24 starts over {starts[-1] - starts[0]:.2f}s, busiest 1 s window: {busiest}")
    assert busiest <= 2 * 6 + 1, stats
    assert starts[-1] - starts[0] >= 2.0, f"the global rate was not enforced: {stats}"
    assert sum(s["tokens_bought"] for s in stats) >= 24 - 8, stats


@pytest.mark.slow
async def test_a_crashed_holders_slots_come_back_and_a_live_holder_keeps_its_own(
    provider: str,
) -> None:
    limit = 3
    api = f"tam-api-{provider}"
    holder = spawn({"provider": provider, "max_in_flight": limit, "mode": "hold", "out": ""})
    try:
        await read_line(holder, "ready")
        await read_line(holder, "held")
        assert await active_slots(api) == limit
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # Meanwhile a live process holds slots of another account for longer than a lease lasts:
    # renewals must keep them.
    live = f"{provider}live"
    live_limiter = account_limiter(
        live, Settings(limits={live: LimitConfig(max_in_flight=2)}, limiter_backend="prefect")
    )
    done = asyncio.Event()

    async def long_call() -> None:
        async with live_limiter.slot():
            await done.wait()

    long_calls = [asyncio.create_task(long_call()) for _ in range(2)]

    # Leases last at least 60 s (the server's minimum) and the repossessor frees expired
    # ones every PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS (15 s by default).
    async def freed() -> bool:
        return await active_slots(api) == 0

    waited = await wait_until(freed, 60 + 15 + 30, "the dead holder's lease to expire")
    print(f"slots of a killed holder came back after {waited:.1f}s")
    assert await active_slots(f"tam-api-{live}") == 2
    live_source = lease_source(live)
    assert live_source is not None and live_source.stats.lost == 0
    assert live_source.stats.renewed >= 2 * 2  # two leases, renewed every 20 s
    done.set()
    await asyncio.gather(*long_calls)

    settings = Settings(
        limits={provider: LimitConfig(max_in_flight=limit)}, limiter_backend="prefect"
    )
    limiter = account_limiter(provider, settings)

    async def call() -> None:
        async with limiter.slot():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(asyncio.gather(*(call() for _ in range(3 * limit))), 30)
    assert limiter.stats.max_in_flight == limit


async def test_a_lease_the_server_forgot_is_replaced_without_over_admitting(
    provider: str,
) -> None:
    settings = Settings(limits={provider: LimitConfig(max_in_flight=4)}, limiter_backend="prefect")
    limiter = account_limiter(provider, settings)
    api = f"tam-api-{provider}"
    done = asyncio.Event()

    async def call() -> None:
        async with limiter.slot():
            await done.wait()

    calls = [asyncio.create_task(call()) for _ in range(8)]

    async def full() -> bool:
        return limiter.stats.in_flight == 4

    await wait_until(full, 10, "four calls in flight")
    source = lease_source(provider)
    assert source is not None
    # Revoke one lease behind the holder's back, then make its renewal due now.
    lease = next(iter(source._leases.values()))  # the test reaches into the source
    async with get_client() as client:
        await client.release_concurrency_slots_with_lease(lease.id)
    lease.renew_at = 0.0
    await source.want(limiter, 0)

    async def replaced() -> bool:
        return source.stats.lost == 1 and source.held == 4

    await wait_until(replaced, 10, "the lost lease to be replaced")
    assert await active_slots(api) == 4
    assert limiter.stats.in_flight == 4 and limiter.stats.max_in_flight == 4
    done.set()
    await asyncio.gather(*calls)
    assert limiter.stats.started == 8


async def test_slots_go_back_promptly_after_a_burst(provider: str) -> None:
    settings = Settings(limits={provider: LimitConfig(max_in_flight=4)}, limiter_backend="prefect")
    limiter = account_limiter(provider, settings)
    api = f"tam-api-{provider}"
    seen: list[int] = []

    async def call() -> None:
        async with limiter.slot():
            await asyncio.sleep(0.02)

    async def watch() -> None:
        while True:
            seen.append(await active_slots(api))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(call() for _ in range(40)))
    watcher.cancel()
    assert limiter.stats.started == 40
    assert limiter.stats.max_in_flight == 4
    assert max(seen) <= 4

    async def released() -> bool:
        return await active_slots(api) == 0

    waited = await wait_until(released, 5, "the idle limiter to release its leases")
    assert limiter.capacity == 0
    source = lease_source(provider)
    assert source is not None and source.held == 0
    times = sorted(source.stats.acquire_s)
    print(
        f"released {waited:.2f}s after the burst; lease request p50 {times[len(times) // 2]:.4f}s"
    )

    # The same limiter leases again for the next burst.
    await asyncio.gather(*(call() for _ in range(8)))
    assert limiter.stats.started == 48


async def test_apply_limits_is_idempotent_and_show_limits_reflects_settings(
    provider: str,
) -> None:
    other = f"{provider}x"
    async with get_client() as client:
        before = {g.name for g in await client.read_global_concurrency_limits(limit=200)}
    settings = Settings(
        limits={
            provider: LimitConfig(max_in_flight=3),
            other: LimitConfig(max_in_flight=2, requests_per_interval=10, interval_s=1.0),
        }
    )
    try:
        rows = await apply_limits(settings)
        mine = {(r["name"], r["action"]) for r in rows if r["provider"] in (provider, other)}
        assert mine == {
            (f"tam-api-{provider}", "created"),
            (f"tam-demand-{provider}", "created"),
            (f"tam-api-{other}", "created"),
            (f"tam-demand-{other}", "created"),
            (f"tam-rate-{other}", "created"),
        }
        again = await apply_limits(settings)
        assert {r["action"] for r in again} == {"unchanged"}

        changed = Settings(
            limits={provider: LimitConfig(max_in_flight=5), other: LimitConfig(max_in_flight=2)}
        )
        rows = await apply_limits(changed)
        actions = {r["name"]: r["action"] for r in rows if r["provider"] in (provider, other)}
        assert actions[f"tam-api-{provider}"] == "updated"
        assert actions[f"tam-api-{other}"] == "unchanged"
        assert actions[f"tam-rate-{other}"] == "deleted"

        shown = {r["name"]: r for r in await show_limits(changed)}
        assert shown[f"tam-api-{provider}"]["limit"] == 5
        assert shown[f"tam-api-{provider}"]["active_slots"] == 0
        assert shown[f"tam-api-{provider}"]["in_sync"] is True
        assert f"tam-rate-{other}" not in shown
        assert all(r["in_sync"] for r in shown.values())
        stale = {r["name"]: r for r in await show_limits(settings)}
        assert stale[f"tam-api-{provider}"]["in_sync"] is False
        assert stale[f"tam-rate-{other}"]["exists"] is False
    finally:
        async with get_client() as client:
            for gcl in await client.read_global_concurrency_limits(limit=200):
                if gcl.name not in before:
                    await client.delete_global_concurrency_limit_by_name(gcl.name)


class FakeClient:
    """The two calls a fair-share check makes: read the demand GCL, release a lease."""

    def __init__(self, starving: int) -> None:
        self.starving = starving
        self.released: list[uuid.UUID] = []

    async def read_global_concurrency_limit_by_name(self, name: str) -> Any:
        assert name.startswith("tam-demand-")
        return SimpleNamespace(active_slots=self.starving)

    async def release_concurrency_slots_with_lease(self, lease_id: uuid.UUID) -> None:
        self.released.append(lease_id)


@pytest.mark.parametrize(("slots", "starving", "keeps"), [([2, 2, 2, 2], 1, 6), ([2, 2], 2, 4)])
async def test_the_client_hands_back_the_lease_the_policy_picks(
    slots: list[int], starving: int, keeps: int
) -> None:
    config = LimitConfig(max_in_flight=10)
    source = PrefectLeaseCapacity("acct", config, block=2)
    client = FakeClient(starving)
    source._client = client  # type: ignore[assignment]
    source._limiter = AccountLimiter("acct", config, capacity=source)
    far = time.monotonic() + 3600
    for n in slots:
        lease = Lease(uuid.uuid4(), n, far, far)
        source._leases[lease.id] = lease
    await source._fair_share(time.monotonic())
    assert source.held == keeps
    assert len(client.released) == source.stats.given_back == (sum(slots) - keeps) // 2


async def test_prewarm_leases_the_first_block_before_any_call(provider: str) -> None:
    settings = Settings(limits={provider: LimitConfig(max_in_flight=8)}, limiter_backend="prefect")
    limiter = account_limiter(provider, settings)
    source = lease_source(provider)
    assert source is not None
    source.prewarm_s = 30.0
    await source.prewarm()
    assert source.held == 0  # it returned without waiting for the server
    api = f"tam-api-{provider}"

    async def warm() -> bool:
        return await active_slots(api) == source.block == 2

    await wait_until(warm, 20, "the prewarmed block")
    assert source.stats.acquired == 1 and limiter.stats.started == 0
    async with limiter.slot():
        assert limiter.stats.in_flight == 1
    # The first call ran on the prewarmed block: no lease request of its own.
    assert source.stats.acquired == 1
    await source.close()
    assert await active_slots(api) == 0
