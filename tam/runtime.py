"""One job run's objects, owned in one place and closed in one fixed order.

A `JobRuntime` is built per job run (by `orchestration.session.job_session` under Prefect,
or directly by tests): it owns the store, the job row's `JobReporter`, a `CostMeter`, the
run's journals, batch writers, provider clients and limiters. Steps (tam.steps) take it, or
an object of their own that holds it; nothing about a run lives in a module-level dict.

`close` ends a run in this order: writers flush (every answer that arrived is written),
journals close (removed only on a clean exit, so the next attempt replays them), clients
close, leased capacity goes back, the store closes.

## Retries on one paid call, and why they do not multiply

1. SDK retries: off (`max_retries=0` for the Anthropic SDK, no retrying transport for the
   others), so no layer retries below the one that can see the shared limiter.
2. `tam.clients._retry.call_with_retries`: THE retry layer of a call: jittered exponential
   backoff (`retry-after` honoured), at most `TAM_MAX_ATTEMPTS` attempts, only for retryable
   errors (outages, timeouts, 5xx, 429). Waits happen outside the limiter slot.
3. The limiter's 429 pause (`tam.limiters`): one 429 pauses every new start on the account
   until `retry-after` and halves the concurrency window; it delays calls, it never repeats
   one, so the account sees fewer requests during a storm, not more.
4. Chunk task retries (`tasks.chunks.CHUNK_POLICY`, 2 retries after 5 s and 30 s): only for
   an outage or database hiccup that outlived layer 2 (`tasks.retries`), never for a
   systemic error or a writer that gave up. A retried chunk redoes only the items its failed
   attempt left open; answers already received are never bought again.
5. Flow / job re-dispatch (the app, or Prefect's own retry of a crashed run): a new attempt
   on the same job row; it replays the journal (tam.journal) before deciding what is still
   pending, so only the calls that never got an answer are made again.

Each layer retries only what the layer below gave up on, and each higher layer skips what
a lower one already paid for, so the worst case is additive (attempts x 3 chunk runs for
an item that keeps failing), never a product over the items already answered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

from pydantic import BaseModel

from tam.batch_writer import BatchWriter, RejectHandler
from tam.errors import JobInputError
from tam.job_reporter import JobReporter
from tam.journal import ResultJournal
from tam.limiters import AccountLimiter, limiter_for
from tam.models import IcpProfile, JobType, Project, Usage
from tam.settings import Settings
from tam.steps.chunks import PageStream
from tam.stores import NotFoundInStore, Store

T = TypeVar("T")
W = TypeVar("W")
M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound="Client")

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger] | Any


class Client(Protocol):
    async def close(self) -> None: ...


LimiterFactory = Callable[[str, Settings], AccountLimiter]
Publisher = Callable[[dict[str, Any]], Awaitable[None]]


def local_limiter(provider: str, settings: Settings) -> AccountLimiter:
    """The process-local limiter of the provider account (no lease server)."""
    return limiter_for(provider, settings.limit_for(provider))


class CostMeter:
    """What one job run spent, per provider: the one way cost reaches the job row (the
    reporter reads `total_usd`) and the summary (`usage`, `cost_usd`).

    Clients that count their own usage are `track`ed (their live `Usage`); answers that
    carry their usage (a Claude judgement, a Bright Data snapshot) are `add`ed, unless the
    provider's client is tracked already (it counted that answer itself).
    """

    def __init__(self) -> None:
        self._added: dict[str, Usage] = {}
        self._tracked: list[Usage] = []

    def add(self, usage: Usage) -> None:
        if any(known.provider == usage.provider for known in self._tracked):
            return
        entry = self._added.setdefault(usage.provider, Usage.zero(usage.provider))
        entry.input_tokens += usage.input_tokens
        entry.output_tokens += usage.output_tokens
        entry.credits += usage.credits
        entry.cost_usd += usage.cost_usd

    def track(self, usage: Usage) -> None:
        if not any(usage is known for known in self._tracked):
            self._tracked.append(usage)

    def by_provider(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for usage in [*self._tracked, *self._added.values()]:
            entry = out.setdefault(usage.provider, Usage.zero(usage.provider))
            entry.input_tokens += usage.input_tokens
            entry.output_tokens += usage.output_tokens
            entry.credits += usage.credits
            entry.cost_usd += usage.cost_usd
        return out

    @property
    def total_usd(self) -> float:
        return sum(u.cost_usd for u in [*self._tracked, *self._added.values()])

    def summary(self) -> dict[str, dict[str, float]]:
        """{provider: {credits, costUsd}} for a job's result_summary."""
        return {
            provider: {"credits": usage.credits, "costUsd": round(usage.cost_usd, 6)}
            for provider, usage in self.by_provider().items()
        }


def _build_client(cls: type[C], settings: Settings) -> C:
    from_settings = getattr(cls, "from_settings", None)
    if from_settings is not None:
        return cast(C, from_settings(settings))
    # NOTE: until every client has `from_settings`, the factory builds the rest.
    from tam.clients import factory

    builders: dict[str, Callable[[Settings], Any]] = {
        "ClaudeQualifier": factory.claude_qualifier,
        "DiscolikeClient": factory.discolike_client,
        "GooglePlacesClient": factory.google_places_client,
        "ProspeoClient": factory.prospeo_client,
        "HunterClient": factory.hunter_client,
        "NeverBounceClient": factory.neverbounce_client,
        "BrightDataClient": factory.brightdata_client,
    }
    return cast(C, builders[cls.__name__](settings))


class JobRuntime:
    """Everything one job run owns (see the module docstring)."""

    def __init__(
        self,
        *,
        job_type: JobType,
        project_id: UUID,
        job_id: UUID,
        settings: Settings,
        store: Store,
        reporter: JobReporter,
        logger: Logger = None,
        flow_run_id: UUID | None = None,
        limiter: LimiterFactory = local_limiter,
        release_limits: Callable[[], Awaitable[None]] | None = None,
        publish: Sequence[Publisher] = (),
    ) -> None:
        self.job_type = job_type
        self.project_id = project_id
        self.job_id = job_id
        self.flow_run_id = flow_run_id
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self.logger = logger or logging.getLogger(f"tam.{job_type.value}")
        self.meter = CostMeter()
        reporter.cost_source = lambda: self.meter.total_usd
        self._limiter_factory = limiter
        self._release_limits = release_limits
        self._publish = list(publish)
        self._writers: list[BatchWriter[Any]] = []
        self._journals: list[ResultJournal[Any]] = []
        self._streams: list[PageStream[Any]] = []
        self._clients: dict[type[Any], Any] = {}
        self._limiters: dict[str, AccountLimiter] = {}
        self._closed = False

    # --- what a step asks for -------------------------------------------------------------
    async def load_project(self) -> tuple[Project, IcpProfile]:
        """The project and its validated ICP (a bad ICP fails the job naming the field)."""
        try:
            project = await self.store.get_project(self.project_id)
        except NotFoundInStore:
            raise JobInputError(f"project {self.project_id} does not exist") from None
        return project, project.icp()

    def client(self, cls: type[C]) -> C:
        """The run's client of this class, built once from settings; its usage is metered."""
        client = self._clients.get(cls)
        if client is None:
            client = _build_client(cls, self.settings)
            self._clients[cls] = client
            usage = getattr(client, "usage", None)
            if isinstance(usage, Usage):
                self.meter.track(usage)
        return cast(C, client)

    def limiter(self, provider: str) -> AccountLimiter:
        """The account's shared limiter (leased through Prefect when so configured)."""
        limiter = self._limiters.get(provider)
        if limiter is None:
            limiter = self._limiter_factory(provider, self.settings)
            self._limiters[provider] = limiter
        return limiter

    def writer(
        self,
        flush: Callable[[Sequence[W]], Awaitable[None]],
        *,
        on_rejected: RejectHandler[W] | None = None,
    ) -> BatchWriter[W]:
        """A started batch writer with the job's batch size, flush interval and outage
        budget; rows the database refuses go to `on_rejected` (see tam.batch_writer)."""
        writer = BatchWriter(
            flush,
            batch_size=self.settings.write_batch_size,
            interval_s=self.settings.write_flush_s,
            max_outage_s=self.settings.write_max_outage_s,
            logger=self.logger,
            on_rejected=on_rejected,
        )
        writer.start()
        self._writers.append(writer)
        return writer

    def journal(self, step: str, model: type[M]) -> ResultJournal[M]:
        """This job's journal of paid `step` results (see tam.journal)."""
        journal = ResultJournal(self.settings.data_dir / "journal", self.job_id, step, model)
        self._journals.append(journal)
        return journal

    def stream(
        self, pages: AsyncIterator[Sequence[T]], *, skip: Callable[[T], bool] | None = None
    ) -> PageStream[T]:
        """The run's pending work, read page by page at most two pages ahead."""
        stream = PageStream(pages, prefetch=2, skip=skip)
        self._streams.append(stream)
        return stream

    @property
    def rejected(self) -> int:
        """Rows the database refused across the run's writers (each was logged)."""
        return sum(writer.rejected for writer in self._writers)

    # --- the end --------------------------------------------------------------------------
    async def complete(self, summary: BaseModel | dict[str, Any]) -> dict[str, Any]:
        """Write the final summary (its JSON keys are those of docs/contracts.md,
        "result_summary keys"; a field left None is left out) and publish it."""
        if isinstance(summary, BaseModel):
            data = summary.model_dump(by_alias=True, exclude_none=True)
        else:
            data = summary
        # Observability for the "round trips grow with batches, not rows" budget.
        data = {**data, "dbRoundTrips": self.store.round_trips + 1}
        await self.reporter.complete(data)
        for publish in self._publish:
            with contextlib.suppress(Exception):
                await publish(data)
        self.logger.info("Job %s completed: %s", self.job_id, data)
        return data

    async def flush_writers(self) -> None:
        """Write what the writers hold; the first failure propagates after every writer
        has had its turn."""
        failure: BaseException | None = None
        for writer in self._writers:
            try:
                await writer.close(flush=True)
            except Exception as exc:  # noqa: BLE001 - the others still get their turn
                failure = failure or exc
        if failure is not None:
            raise failure

    async def close(self, *, clean: bool) -> None:
        """End the run in the fixed order; `clean` when the body returned normally."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                await self.flush_writers()
            except Exception:
                clean = False
                raise
            finally:
                for journal in self._journals:
                    # Kept after a failure: the next attempt replays it (writes are idempotent).
                    journal.close(remove=clean)
        finally:
            for stream in self._streams:
                await stream.aclose()
            await self._close_quietly(self._clients.values())
            if self._release_limits is not None:
                with contextlib.suppress(Exception):
                    # Leased capacity goes back the moment the job ends, not after the grace.
                    await self._release_limits()
            await self.store.close()

    async def _close_quietly(self, clients: Iterable[Client]) -> None:
        for client in list(clients):
            try:
                await client.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the run's outcome
                self.logger.warning("Could not close %s: %s", type(client).__name__, exc)
