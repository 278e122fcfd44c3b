"""Provider-account budgets shared by every process: coarse leases on Prefect global
concurrency limits (GCL), scheduled locally by `AccountLimiter`. This is the Prefect client;
the decisions it acts on are plain functions in `tam.limiters.lease_policy`.

Why coarse leases: Prefect's per-call `concurrency()` asks the server for a slot per request
and, when refused, sleeps the server's Retry-After (29x slower than ideal, design §6). Here a
process leases *blocks* of slots on `tam-api-<provider>` (limit = max_in_flight) and its
limiter runs at most as many calls at once as it holds slots: no server round trip per call.

Policy, per provider account and process (one `PrefectLeaseCapacity` per limiter):

- Acquire: while callers wait below the cap, lease `block` slots (default a quarter of the
  limit; fewer if fewer callers wait or fewer are free). `prewarm()` leases the first block
  before anyone waits, so its round trip overlaps the flow's start-up work; unused, it is
  held for `prewarm_s`, then goes like any idle lease. A refusal (423) is retried after
  0.05-0.25 s with jitter; the server's Retry-After, sized for one task's slot, is ignored.
- Renew each lease at a third of its duration. The server accepts no lease under 60 s, so a
  crashed worker's slots return 60 s after its last renewal plus one repossessor pass
  (`PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS`, default 15). A lease the server lost
  (410) is dropped and capacity lowered: nothing is admitted until in-flight calls fit.
- Release: never slots in use (capacity drops first; the lease goes once in-flight calls
  fit in the rest). Idle (nothing waiting or running) for `grace_s`: everything goes; the
  grace bridges the gap between chunks. Busy with no waiter for `grace_s`: a lease that
  fits in the unused slots goes.
- Fair share: a process refused while callers wait registers demand with a 1-slot lease on
  `tam-demand-<provider>`. Every `fair_share_s` a saturated holder reads it: with W others
  starving it keeps at most max(block, limit // (1 + W)) slots, gives one lease back and
  stops acquiring for `yield_s` (longer than any poll) so a starving process gets it. It
  never drops below that share to do so (blocks of 2 under a limit of 10 settle at 6/4), and
  a holder alone never gives anything back.
- Requests per interval: `tam-rate-<provider>` in rate-limit mode (limit = requests per
  interval, decay = that / interval_s) sells start tokens, bought a third of the bucket at a
  time (each write drops the fraction of a slot decayed since the last one, so tiny
  purchases waste refill) and never more than the waiting callers need. The limiter has
  no start hook, so a gate task re-reads `stats.started` every `rate_tick_s` (never behind a
  slow server call) and sets capacity to 0 when tokens are spent, else in_flight + tokens
  left. Starts beyond the tokens within one tick (at most the calls that finished in it)
  become debt paid by the next purchase: exact over time, a tick's releases at worst
  instantly; each process keeps its own sliding window too, and 429 handling covers the rest.

A worker creates missing GCLs from its settings but never overrides existing ones: the server
is the shared source of truth, changed by `tam limits apply` (cli/limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
)
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from tam.limiters import AccountLimiter, LimiterStats
from tam.limiters import lease_policy as policy
from tam.limiters.lease_policy import MIN_LEASE_S, Lease, LeaseStats, limit_specs
from tam.settings import LimitConfig

__all__ = [
    "LeaseStats",
    "PrefectLeaseCapacity",
    "create_limit",
    "limit_specs",
    "read_limit",
]

log = logging.getLogger(__name__)

# Before a limiter is bound (a prewarm at flow start): nothing waits, nothing runs.
_UNBOUND = LimiterStats()


def _status(exc: BaseException) -> int | None:
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


class PrefectLeaseCapacity:
    """`CapacitySource` leasing one provider account's budget from a Prefect server."""

    def __init__(
        self,
        provider: str,
        config: LimitConfig,
        *,
        block: int | None = None,
        lease_duration: float = MIN_LEASE_S,
        grace_s: float = 0.75,
        fair_share_s: float = 1.0,
        yield_s: float = 0.5,
        rate_tick_s: float = 0.02,
        prewarm_s: float = 15.0,
    ) -> None:
        self.provider, self.config = provider, config
        self.block = policy.block_size(config.max_in_flight, block)
        self.lease_duration = max(lease_duration, MIN_LEASE_S)
        self.grace_s, self.fair_share_s, self.yield_s = grace_s, fair_share_s, yield_s
        self.rate_tick_s, self.prewarm_s = rate_tick_s, prewarm_s
        specs = {kind: (name, n, decay) for kind, name, n, decay in limit_specs(provider, config)}
        self._api, self._gcl_limit, _ = specs["concurrency"]
        self._demand_name = specs["demand"][0]
        self._rate: tuple[str, int, float] | None = specs.get("rate")
        self.stats = LeaseStats()
        self._limiter: AccountLimiter | None = None
        self._client: PrefectClient | None = None
        self._leases: dict[UUID, Lease] = {}
        self._demand: Lease | None = None  # our 1-slot "starving" registration
        self._draining: Lease | None = None  # to release once in-flight calls fit without it
        self._yield_after_drain = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = self._ensured = False
        self._refusals = 0
        self._next_try = self._next_fair = self._next_token_try = 0.0
        self._idle_since: float | None = None
        self._spare_since: float | None = None
        self._tokens = self._started0 = 0
        self._prewarm_until = 0.0

    @property
    def held(self) -> int:
        return sum(lease.slots for lease in self._leases.values())

    @property
    def _st(self) -> LimiterStats:
        return self._limiter.stats if self._limiter is not None else _UNBOUND

    @property
    def _cli(self) -> PrefectClient:
        assert self._client is not None
        return self._client

    # --- CapacitySource --------------------------------------------------------------------
    async def want(self, limiter: AccountLimiter, demand: int) -> None:
        del demand  # the manager reads the limiter's live stats instead
        first = self._limiter is None
        self._bind(limiter)
        self._prewarm_until = 0.0  # callers are here: the usual rules from now on
        if first and self.held:
            self._apply()  # a prewarmed block admits the first callers now, not a step later
        self._start()
        self._wake.set()

    async def prewarm(self, limiter: AccountLimiter | None = None) -> None:
        """Start leasing the first block now and return without waiting for it.

        Called at flow start, so the lease's round trip (and creating missing GCLs) overlaps
        the job's own start-up work instead of following it. The block is held for
        `prewarm_s` with nobody waiting, then released like any idle lease; the first
        caller's `want` takes it over.
        """
        if limiter is not None:
            self._bind(limiter)
        if self._running:
            return  # already leasing: the prewarm would change nothing
        self._prewarm_until = time.monotonic() + self.prewarm_s
        self._start()

    def _bind(self, limiter: AccountLimiter) -> None:
        if self._limiter is None:
            self._limiter, self._started0 = limiter, limiter.stats.started

    def _start(self) -> None:
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def idle(self, limiter: AccountLimiter) -> None:
        del limiter
        self._wake.set()  # the manager releases after the grace period

    async def close(self) -> None:
        """Hand every lease back now. A later `want` leases again, so a limiter bound to
        this source stays usable."""
        task, self._task = self._task, None
        self._prewarm_until = 0.0
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._limiter is not None:
            self._limiter.set_capacity(0)
            if self._limiter.stats.waiting:  # callers arrived meanwhile: serve them
                await self.want(self._limiter, 0)

    # --- the manager: one task per source, alive while the limiter is busy -----------------
    async def _run(self) -> None:
        async with get_client() as client:
            self._client = client
            gate = asyncio.create_task(self._gate()) if self._rate is not None else None
            try:
                while await self._step_safely():
                    await self._sleep()
            except BaseException:
                # Cancelled (close, loop shutdown): hand everything back now rather than
                # leave it to the repossessor a minute later.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release_all())
                raise
            finally:
                if gate is not None:
                    gate.cancel()
                if self._task is None or self._task is asyncio.current_task():
                    self._running = False

    async def _step_safely(self) -> bool:
        try:
            return await self._step()
        except Exception as exc:
            # Server hiccup (or a bug): retry. A dead manager would strand the callers,
            # who call `want` only once.
            log.warning("lease manager for %s: %r; retrying in 1 s", self.provider, exc)
            self._next_try = max(self._next_try, time.monotonic() + 1.0)
            await asyncio.sleep(1.0)
            return True

    async def _step(self) -> bool:
        if not self._ensured:
            await self._ensure_limits()
        now, st = time.monotonic(), self._st
        await self._renew_due(now)
        if st.waiting == 0 and st.in_flight == 0 and now < self._prewarm_until:
            self._idle_since = None
            if self.held == 0 and self._want_more() and now >= self._next_try:
                await self._acquire(now)
        elif st.waiting == 0 and st.in_flight == 0:
            self._idle_since = self._idle_since or now
            if now - self._idle_since >= self.grace_s:
                await self._release_all()
                if st.waiting == 0 and st.in_flight == 0:
                    self._running = False  # set before any await: a later want() restarts
                    return False
        else:
            self._idle_since = None
            if self._draining is not None:
                await self._finish_drain(now)
            if st.waiting:
                self._spare_since = None
                if self._want_more() and now >= self._next_try:
                    await self._acquire(now)
                # NOTE: any holder above one block checks, not only a saturated one: after
                # one hand-back a holder is no longer saturated yet may still be unfair.
                if self.held > self.block and now >= self._next_fair:
                    await self._fair_share(now)
                if self._rate is not None and now >= self._next_token_try:
                    await self._buy_tokens(now)
            else:
                await self._release_spare(now)
        if self._demand is not None and not (st.waiting and self.held < self._cap()):
            demand, self._demand = self._demand, None
            await self._release(demand)
        self._apply()
        return True

    async def _sleep(self) -> None:
        now, st = time.monotonic(), self._st
        delays = [lease.renew_at - now for lease in self._all_leases()]
        if not (st.waiting or st.in_flight) and now < self._prewarm_until:
            delays.append(self._prewarm_until - now)
            if self.held == 0:
                delays.append(self._next_try - now)
        elif st.waiting or st.in_flight:
            delays.append(0.25)  # local checks (spare, drain): no server call unless due
            if st.waiting and self._want_more():
                delays.append(self._next_try - now)
            if st.waiting and self._rate is not None and self._tokens_low():
                delays.append(self._next_token_try - now)
        else:
            delays.append(self.grace_s - (now - (self._idle_since or now)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(delays))):
                await self._wake.wait()
        self._wake.clear()

    # --- capacity ----------------------------------------------------------------------------
    def _cap(self) -> int:
        return min(self.config.max_in_flight, self._gcl_limit)

    def _want_more(self) -> bool:
        return self.held < self._cap() and self._draining is None

    def _tokens_left(self) -> int:
        return self._tokens - (self._st.started - self._started0)

    def _apply(self) -> None:
        """Publish capacity: held slots minus a draining lease, and within bought tokens."""
        if self._limiter is None:
            return  # a prewarm: the first `want` binds the limiter and publishes
        cap = policy.published_capacity(
            held=self.held,
            draining=self._draining.slots if self._draining else 0,
            in_flight=self._st.in_flight,
            tokens_left=self._tokens_left() if self._rate is not None else None,
        )
        self._limiter.set_capacity(cap)

    def _all_leases(self) -> list[Lease]:
        return [*self._leases.values(), *([self._demand] if self._demand else [])]

    # --- leases ------------------------------------------------------------------------------
    async def _lease(self, name: str, slots: int) -> Lease | None:
        """One lease of `slots` on `name`, or None when refused."""
        t0 = time.monotonic()
        try:
            response = await self._cli.increment_concurrency_slots_with_lease(
                names=[name], slots=slots, mode="concurrency", lease_duration=self.lease_duration
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 422:  # more than the limit: someone lowered it
                self._ensured = False
            if exc.response.status_code in (422, 423):
                return None
            raise
        body = response.json()
        duration = self.lease_duration
        lease = Lease(UUID(body["lease_id"]), slots, t0 + duration / 3, t0 + duration)
        if not body["limits"]:
            # The GCL is gone and the server granted an unlimited lease: recreate, retry.
            await self._release(lease)
            self._ensured = False
            return None
        if name == self._api:
            self._gcl_limit = int(body["limits"][0]["limit"])
            self.stats.acquire_s = [*self.stats.acquire_s[-99:], time.monotonic() - t0]
        return lease

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self._cli.release_concurrency_slots_with_lease(lease.id)

    async def _acquire(self, now: float) -> None:
        slots = policy.slots_to_ask(self.block, self._cap(), self.held, self._st.waiting)
        lease = await self._lease(self._api, slots)
        if lease is None and slots > 1:  # fall back to what is free, if anything
            gcl = await self._cli.read_global_concurrency_limit_by_name(self._api)
            if gcl.limit > gcl.active_slots:
                lease = await self._lease(self._api, min(slots, gcl.limit - gcl.active_slots))
        if lease is not None:
            self._leases[lease.id] = lease
            self._refusals = 0
            self.stats.acquired += 1
            # NOTE: a new lease is kept at least one fair-share period. With more holders
            # than the limit splits into evenly (10 in blocks of 2 over 4), the slots above
            # the shares otherwise went back at once and idled at every hand-over.
            self._next_fair = max(self._next_fair, now + self.fair_share_s)
            return
        self._refusals += 1
        self.stats.refused += 1
        poll = policy.refusal_poll_s(self._refusals)
        self._next_try = now + poll * random.uniform(0.8, 1.2)
        if self._demand is None and self._st.waiting:
            # NOTE: only callers waiting make this process starving; a prewarm does not.
            self._demand = await self._lease(self._demand_name, 1)

    async def _renew_due(self, now: float) -> None:
        for lease in self._all_leases():
            if now < lease.renew_at:
                continue
            t0 = time.monotonic()
            try:
                await self._cli.renew_concurrency_lease(lease.id, self.lease_duration)
            except (httpx.HTTPError, OSError) as exc:
                # Gone (410), or unreachable for too long to trust: stop using it.
                if _status(exc) in (404, 410) or now > lease.expires_at - 5.0:
                    self._lose(lease, exc)
                else:
                    lease.renew_at = now + 1.0
                continue
            lease.renew_at = t0 + self.lease_duration / 3
            lease.expires_at = t0 + self.lease_duration
            self.stats.renewed += 1

    def _lose(self, lease: Lease, exc: BaseException) -> None:
        if lease is self._demand:
            self._demand = None
            return
        self._leases.pop(lease.id, None)
        self._draining = None if self._draining is lease else self._draining
        self.stats.lost += 1
        in_flight = self._st.in_flight
        log.warning(
            "%s: lease of %d slots lost (%s); %d calls in flight, %d slots still held",
            *(self.provider, lease.slots, exc, in_flight, self.held),
        )
        self._apply()  # admit nothing until in-flight drains below what is still held

    async def _finish_drain(self, now: float) -> None:
        """Give the draining lease back once the calls in flight fit in the rest."""
        lease = self._draining
        assert lease is not None
        if self._st.in_flight > self.held - lease.slots:
            return
        self._leases.pop(lease.id, None)
        self._draining = None
        self._apply()  # capacity shrinks before the slots can go to anyone else
        await self._release(lease)
        self.stats.released += 1
        if self._yield_after_drain:
            self._yield_after_drain = False
            self._next_try = max(self._next_try, now + self.yield_s)

    async def _release_spare(self, now: float) -> None:
        spare = policy.spare_lease(
            self._leases.values(), held=self.held, in_flight=self._st.in_flight, block=self.block
        )
        if spare is None or self._draining is not None:
            self._spare_since = None
            return
        self._spare_since = self._spare_since or now
        if now - self._spare_since >= self.grace_s:
            self._draining, self._spare_since = spare, None
            await self._finish_drain(now)

    async def _release_all(self) -> None:
        leases = [*self._all_leases()]
        self._leases.clear()
        self._draining = self._demand = None
        if self._limiter is not None:
            self._apply()
            # Unspent tokens die with the burst; a debt stays, paid by the next purchase.
            self._tokens = min(self._tokens, self._limiter.stats.started - self._started0)
        await asyncio.gather(*(self._release(lease) for lease in leases))
        self.stats.released += len(leases)

    async def _fair_share(self, now: float) -> None:
        self._next_fair = now + self.fair_share_s
        if self.held <= self.block or self._draining is not None:
            return
        demand = await self._cli.read_global_concurrency_limit_by_name(self._demand_name)
        lease = policy.lease_to_give_back(
            self._leases.values(),
            held=self.held,
            block=self.block,
            gcl_limit=self._gcl_limit,
            starving=demand.active_slots - (1 if self._demand else 0),
        )
        if lease is None:
            return
        self._draining = lease
        self._yield_after_drain = True
        self.stats.given_back += 1
        await self._finish_drain(now)

    # --- rate tokens -------------------------------------------------------------------------
    async def _gate(self) -> None:
        """Re-gate capacity every tick. Starts show only in `stats.started`, and with any
        capacity left every release admits another start, so this must not wait behind a
        slow server call (a 503 retry takes ~2 s)."""
        while True:
            self._apply()
            if self._tokens_low():
                self._wake.set()  # let the manager buy
            await asyncio.sleep(self.rate_tick_s)

    def _tokens_low(self) -> bool:
        assert self._rate is not None
        return policy.tokens_low(self._tokens_left(), self._st.waiting, self._rate[1])

    async def _buy_tokens(self, now: float) -> None:
        assert self._rate is not None
        name, bucket, decay = self._rate
        if not self._tokens_low():
            return
        slots = policy.tokens_to_buy(bucket, self._st.waiting, self._tokens_left())
        try:
            response = await self._cli.increment_concurrency_slots(
                names=[name], slots=slots, mode="rate_limit"
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (422, 423):
                raise
            self._ensured = self._ensured and exc.response.status_code == 423
            poll = policy.token_poll_s(decay)
            self._next_token_try = now + poll * random.uniform(0.8, 1.2)
            return
        if not response.json():  # the rate GCL is gone: recreate before buying again
            self._ensured = False
            return
        self._tokens += slots
        self.stats.tokens_bought += slots

    async def _ensure_limits(self) -> None:
        """Create missing GCLs from settings; otherwise respect what the server says."""
        for kind, name, limit, decay in limit_specs(self.provider, self.config):
            gcl = await read_limit(self._cli, name)
            if gcl is None:
                with contextlib.suppress(ObjectAlreadyExists):
                    await create_limit(self._cli, name, limit, decay)
            elif kind == "concurrency":
                self._gcl_limit = gcl.limit
                if gcl.limit != limit:
                    log.info(
                        "%s: the server's limit is %d, settings say %d", name, gcl.limit, limit
                    )
            elif kind == "rate":
                self._rate = (name, gcl.limit, gcl.slot_decay_per_second)
        self._ensured = True


async def read_limit(client: PrefectClient, name: str) -> Any | None:
    try:
        return await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return None


async def create_limit(client: PrefectClient, name: str, limit: int, decay: float) -> None:
    spec = GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
    await client.create_global_concurrency_limit(spec)
