"""Which limiter a task uses for a provider account."""

from __future__ import annotations

import asyncio

from orchestration.leases import PrefectLeaseCapacity
from tam.limiters import AccountLimiter, limiter_for
from tam.settings import Settings

# One lease source per (event loop, provider), like the limiters it feeds.
_SOURCES: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, PrefectLeaseCapacity]] = {}
_CLOSING: set[asyncio.Task[None]] = set()


def account_limiter(provider: str, settings: Settings) -> AccountLimiter:
    """The shared limiter for this provider account in this process.

    With `limiter_backend == "prefect"` its capacity is leased from the Prefect server, so
    the account's budget holds across every flow run and worker (see `orchestration.leases`).
    """
    config = settings.limit_for(provider)
    if settings.limiter_backend != "prefect":
        return limiter_for(provider, config)
    loop = asyncio.get_running_loop()
    key = (id(loop), provider)
    entry = _SOURCES.get(key)
    if entry is None or entry[0] is not loop or entry[1].config != config:
        if entry is not None and entry[0] is loop:
            # Settings changed: the old limiter is replaced, so hand its leases back.
            closing = loop.create_task(entry[1].close())
            _CLOSING.add(closing)  # the loop keeps only weak references to tasks
            closing.add_done_callback(_CLOSING.discard)
        entry = (loop, PrefectLeaseCapacity(provider, config))
        _SOURCES[key] = entry
    # A distinct name keeps a local limiter of the same account from being reused here.
    return limiter_for(f"{provider}@prefect", config, capacity=entry[1])


def lease_source(provider: str) -> PrefectLeaseCapacity | None:
    """The lease source behind this provider's limiter on the running loop (for stats)."""
    loop = asyncio.get_running_loop()
    entry = _SOURCES.get((id(loop), provider))
    return entry[1] if entry is not None and entry[0] is loop else None


async def close_account_limiters() -> None:
    """Hand back every lease held on the running loop (call when a flow run ends; idle
    limiters release on their own within a second, this only makes it immediate)."""
    loop = asyncio.get_running_loop()
    # Entries stay: the limiters keep their sources, which lease again on the next call.
    for owner, source in list(_SOURCES.values()):
        if owner is loop:
            await source.close()


async def prewarm(provider: str, settings: Settings) -> None:
    """Take the account's first lease now, so its round trip overlaps the job's start-up
    (claiming the row, loading the project) instead of delaying the first call."""
    if settings.limiter_backend != "prefect":
        return
    limiter = account_limiter(provider, settings)
    source = lease_source(provider)
    warm = getattr(source, "prewarm", None)
    if warm is not None:
        await warm()
        return
    # NOTE: without a lease-side prewarm, one acquire does the same; the slot goes back at
    # once and the lease stays for the limiter's idle grace, long enough for the first call.
    await limiter.acquire()
    limiter.release()
