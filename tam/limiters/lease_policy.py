"""The decisions behind leased account budgets, made without a server: the GCLs an account
needs, the block size, how many slots to ask for, how long to wait after a refusal, the fair
share a holder keeps while others starve, which lease to give back, what capacity to publish,
and how many rate tokens to buy. `orchestration.leases` makes the Prefect calls they decide.

Each rule's reasons are written beside the client in `orchestration.leases` (its module
docstring is the whole policy); here they are plain functions, so they are tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from tam.settings import LimitConfig

MIN_LEASE_S = 60.0  # the server rejects shorter leases and renewals (422)
DEMAND_LIMIT = 10_000  # demand is a count of starving processes, never a real cap
MAX_POLL_S = 0.25  # a refused process never waits longer than this to ask again


def limit_specs(provider: str, config: LimitConfig) -> list[tuple[str, str, int, float]]:
    """(kind, GCL name, limit, slot decay per second) for one provider account."""
    specs = [
        ("concurrency", f"tam-api-{provider}", config.max_in_flight, 0.0),
        ("demand", f"tam-demand-{provider}", DEMAND_LIMIT, 0.0),
    ]
    if config.requests_per_interval is not None:
        rate = config.requests_per_interval
        specs.append(("rate", f"tam-rate-{provider}", rate, rate / config.interval_s))
    return specs


@dataclass
class Lease:
    id: UUID
    slots: int
    renew_at: float
    expires_at: float


@dataclass
class LeaseStats:
    acquired: int = 0
    refused: int = 0
    renewed: int = 0
    released: int = 0
    lost: int = 0
    given_back: int = 0
    tokens_bought: int = 0
    acquire_s: list[float] = field(default_factory=list)  # latency of granted lease requests


def block_size(max_in_flight: int, block: int | None = None) -> int:
    """Slots per lease: as given, else a quarter of the limit (at least one)."""
    return max(1, block or max_in_flight // 4)


def slots_to_ask(block: int, cap: int, held: int, waiting: int) -> int:
    """One block, never past the cap, and no more than the callers waiting need (a
    prewarm, with nobody waiting yet, asks for a whole block)."""
    return min(block, cap - held, waiting or block)


def refusal_poll_s(refusals: int) -> float:
    """The wait before asking again after `refusals` refusals in a row (before jitter): the
    server's Retry-After is sized for one task's slot, far longer than a block frees."""
    return min(MAX_POLL_S, 0.05 * 1.5 ** (refusals - 1))


def biggest(leases: Iterable[Lease]) -> Lease:
    return max(leases, key=lambda lease: lease.slots)


def fair_share(gcl_limit: int, block: int, starving: int) -> int:
    """What a holder keeps while `starving` other processes wait: an equal split, at least
    one block."""
    return max(block, gcl_limit // (1 + max(0, starving)))


def lease_to_give_back(
    leases: Iterable[Lease], *, held: int, block: int, gcl_limit: int, starving: int
) -> Lease | None:
    """The lease a holder above its fair share hands over, or None.

    Only a lease that leaves the holder at or above the share goes: within one lease of it,
    handing over would only swap who is above it (6/4 ↔ 4/6 with blocks of 2), idling its
    slots at every swap. A holder alone never gives anything back.
    """
    if starving <= 0 or held <= block:
        return None
    fair = fair_share(gcl_limit, block, starving)
    if held <= fair:
        return None
    fits = [lease for lease in leases if lease.slots <= held - fair]
    return biggest(fits) if fits else None


def spare_lease(leases: Iterable[Lease], *, held: int, in_flight: int, block: int) -> Lease | None:
    """A lease that fits in the slots nobody uses (busy, nobody waiting), or None while
    fewer than a block are unused."""
    spare = held - in_flight
    fits = [lease for lease in leases if lease.slots <= spare]
    if spare < block or not fits:
        return None
    return biggest(fits)


def published_capacity(
    *, held: int, draining: int, in_flight: int, tokens_left: int | None = None
) -> int:
    """Held slots minus a draining lease, and within the bought rate tokens (None: no rate
    limit). Out of tokens it is 0, not in_flight, or every release would admit an unpaid
    start."""
    cap = held - draining
    if tokens_left is None:
        return cap
    return min(cap, in_flight + tokens_left) if tokens_left > 0 else 0


def token_block(bucket: int) -> int:
    """Rate tokens are bought a third of the bucket at a time (each write drops the fraction
    of a slot decayed since the last one, so tiny purchases waste refill)."""
    return max(1, bucket // 3)


def tokens_low(tokens_left: int, waiting: int, bucket: int) -> bool:
    # Keep about one block in hand: hoarded tokens would starve other processes.
    return tokens_left < min(waiting, token_block(bucket))


def tokens_to_buy(bucket: int, waiting: int, tokens_left: int) -> int:
    """What the waiting callers need (at most a block), plus any debt, within the bucket."""
    return min(bucket, min(token_block(bucket), waiting) + max(0, -tokens_left))


def token_poll_s(decay_per_s: float) -> float:
    """After a refused purchase, poll at about a quarter token of refill: a purchase resets
    the server's decay clock and drops its fraction, so arriving late wastes the budget."""
    return min(MAX_POLL_S, max(0.02, 0.25 / max(decay_per_s, 1e-6)))
