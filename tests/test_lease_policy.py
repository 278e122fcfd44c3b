"""The fair-share rule of `PrefectLeaseCapacity`, decided without a server: a holder above
its share hands a lease over only if it stays at or above the share afterwards (a 6/4 split
of 10 in blocks of 2 must not swap to 4/6 and back, idling 2 slots at every swap)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest

from tam.limiters.window import AccountLimiter
from tam.settings import LimitConfig
from tasks.leases import PrefectLeaseCapacity, _Lease


class FakeClient:
    """The two calls a fair-share check makes: read the demand GCL, release a lease."""

    def __init__(self, starving: int) -> None:
        self.starving = starving
        self.released: list[UUID] = []

    async def read_global_concurrency_limit_by_name(self, name: str) -> Any:
        assert name.startswith("tam-demand-")
        return SimpleNamespace(active_slots=self.starving)

    async def release_concurrency_slots_with_lease(self, lease_id: UUID) -> None:
        self.released.append(lease_id)


def holder(slots: list[int], starving: int) -> tuple[PrefectLeaseCapacity, FakeClient]:
    config = LimitConfig(max_in_flight=10)
    source = PrefectLeaseCapacity("acct", config, block=2)
    client = FakeClient(starving)
    source._client = client  # type: ignore[assignment]
    source._limiter = AccountLimiter("acct", config, capacity=source)
    far = time.monotonic() + 3600
    for n in slots:
        lease = _Lease(uuid4(), n, far, far)
        source._leases[lease.id] = lease
    return source, client


@pytest.mark.parametrize(
    ("slots", "starving", "keeps", "gives_back"),
    [
        ([2, 2, 2], 1, 6, 0),  # 6 of 10 with one other starving: one block off its share of 5
        ([2, 2, 2, 2], 1, 6, 1),  # 8: a lease goes, 6 is still at or above 5
        ([2, 2, 2, 2, 2], 1, 8, 1),  # everything: one lease per check (then yield)
        ([2, 2, 2, 2], 0, 8, 0),  # alone: never gives anything back
        ([2, 2, 2], 2, 4, 1),  # two others starving: share 3, 6 → 4
        ([2, 2], 2, 4, 0),  # 4 with share 3: giving 2 would drop below it
    ],
)
async def test_a_holder_gives_back_only_what_keeps_it_at_its_fair_share(
    slots: list[int], starving: int, keeps: int, gives_back: int
) -> None:
    source, client = holder(slots, starving)
    await source._fair_share(time.monotonic())
    assert source.held == keeps
    assert len(client.released) == gives_back
    assert source.stats.given_back == gives_back
