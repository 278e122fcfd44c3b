"""The lease policy (tam.limiters.lease_policy), decided without a server: block sizes, how
many slots to ask for, the fair share a holder keeps (a 6/4 split of 10 in blocks of 2 must
not swap to 4/6 and back, idling 2 slots at every swap), spare leases, published capacity
and rate tokens."""

from __future__ import annotations

from uuid import uuid4

import pytest

from tam.limiters import lease_policy as policy
from tam.limiters.lease_policy import Lease
from tam.settings import LimitConfig


def leases(*slots: int) -> list[Lease]:
    return [Lease(uuid4(), n, 0.0, 0.0) for n in slots]


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
def test_a_holder_gives_back_only_what_keeps_it_at_its_fair_share(
    slots: list[int], starving: int, keeps: int, gives_back: int
) -> None:
    held = sum(slots)
    lease = policy.lease_to_give_back(
        leases(*slots), held=held, block=2, gcl_limit=10, starving=starving
    )
    assert (0 if lease is None else 1) == gives_back
    assert held - (lease.slots if lease else 0) == keeps


def test_the_biggest_lease_that_fits_goes() -> None:
    lease = policy.lease_to_give_back(leases(1, 3, 4), held=8, block=1, gcl_limit=10, starving=1)
    assert lease is not None and lease.slots == 3  # 4 would leave 4, under the share of 5


def test_fair_share_is_an_equal_split_of_at_least_one_block() -> None:
    assert policy.fair_share(10, 2, 1) == 5
    assert policy.fair_share(10, 2, 3) == 2
    assert policy.fair_share(10, 4, 9) == 4
    assert policy.fair_share(10, 2, -1) == 10


def test_block_size_defaults_to_a_quarter_of_the_limit() -> None:
    assert policy.block_size(10) == 2
    assert policy.block_size(3) == 1
    assert policy.block_size(10, 5) == 5


def test_slots_asked_are_a_block_within_the_cap_and_the_waiting() -> None:
    assert policy.slots_to_ask(block=4, cap=10, held=0, waiting=9) == 4
    assert policy.slots_to_ask(block=4, cap=10, held=8, waiting=9) == 2
    assert policy.slots_to_ask(block=4, cap=10, held=0, waiting=1) == 1
    # A prewarm (nobody waits yet) asks for a whole block.
    assert policy.slots_to_ask(block=4, cap=10, held=0, waiting=0) == 4


def test_refusals_poll_faster_than_the_servers_retry_after_and_back_off() -> None:
    polls = [policy.refusal_poll_s(n) for n in range(1, 10)]
    assert polls[0] == pytest.approx(0.05)
    assert polls == sorted(polls) and max(polls) == policy.MAX_POLL_S


def test_a_spare_lease_goes_only_when_a_block_is_unused() -> None:
    assert policy.spare_lease(leases(2, 2, 2), held=6, in_flight=5, block=2) is None
    spare = policy.spare_lease(leases(2, 2, 2), held=6, in_flight=3, block=2)
    assert spare is not None and spare.slots == 2
    assert policy.spare_lease(leases(4), held=4, in_flight=1, block=2) is None  # 4 > 3 unused


def test_published_capacity_leaves_out_a_draining_lease_and_spent_tokens() -> None:
    assert policy.published_capacity(held=6, draining=2, in_flight=3) == 4
    assert policy.published_capacity(held=6, draining=0, in_flight=3, tokens_left=1) == 4
    assert policy.published_capacity(held=6, draining=0, in_flight=3, tokens_left=0) == 0
    assert policy.published_capacity(held=6, draining=0, in_flight=0, tokens_left=9) == 6


def test_rate_tokens_are_bought_in_thirds_for_the_waiting_plus_debt() -> None:
    assert policy.token_block(30) == 10
    assert policy.tokens_low(tokens_left=2, waiting=5, bucket=30)
    assert not policy.tokens_low(tokens_left=10, waiting=50, bucket=30)
    assert policy.tokens_to_buy(bucket=30, waiting=3, tokens_left=0) == 3
    assert policy.tokens_to_buy(bucket=30, waiting=50, tokens_left=-4) == 14
    assert policy.tokens_to_buy(bucket=12, waiting=50, tokens_left=-40) == 12
    assert 0.02 <= policy.token_poll_s(100.0) <= policy.token_poll_s(0.5) == policy.MAX_POLL_S


def test_limit_specs_name_one_gcl_per_kind() -> None:
    plain = policy.limit_specs("acct", LimitConfig(max_in_flight=10))
    assert plain == [
        ("concurrency", "tam-api-acct", 10, 0.0),
        ("demand", "tam-demand-acct", policy.DEMAND_LIMIT, 0.0),
    ]
    rated = policy.limit_specs(
        "acct", LimitConfig(max_in_flight=10, requests_per_interval=60, interval_s=60.0)
    )
    assert rated[-1] == ("rate", "tam-rate-acct", 60, 1.0)
