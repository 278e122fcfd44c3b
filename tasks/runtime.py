"""The Prefect side of one job run: store, job row, progress artifact, limiters, logger."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run as current_flow_run
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from orchestration.limits import close_account_limiters
from tam.batch_writer import BatchWriter, RejectHandler
from tam.errors import JobInputError
from tam.failures import describe_failure
from tam.job_reporter import JobReporter
from tam.journal import ResultJournal
from tam.models import IcpProfile, JobType, Project
from tam.settings import Settings, get_settings
from tam.stores import NotFoundInStore, Store, StoreError, open_store

T = TypeVar("T")
W = TypeVar("W")
M = TypeVar("M", bound=BaseModel)


@dataclass
class JobSession:
    """What a flow needs while it runs one job."""

    job_type: JobType
    project_id: UUID
    job_id: UUID
    flow_run_id: UUID | None
    settings: Settings
    store: Store
    reporter: JobReporter
    logger: Any

    async def load_project(self) -> tuple[Project, IcpProfile]:
        """The project and its validated ICP (a bad ICP fails the job naming the field)."""
        try:
            project = await self.store.get_project(self.project_id)
        except NotFoundInStore:
            raise JobInputError(f"project {self.project_id} does not exist") from None
        return project, project.icp()

    def writer(
        self,
        flush: Callable[[Sequence[W]], Awaitable[None]],
        *,
        on_rejected: RejectHandler[W] | None = None,
    ) -> BatchWriter[W]:
        """A batch writer with the job's batch size, flush interval and outage budget;
        rows the database refuses go to `on_rejected` (see tam.batch_writer)."""
        return BatchWriter(
            flush,
            batch_size=self.settings.write_batch_size,
            interval_s=self.settings.write_flush_s,
            max_outage_s=self.settings.write_max_outage_s,
            logger=self.logger,
            on_rejected=on_rejected,
        )

    def journal(self, step: str, model: type[M]) -> ResultJournal[M]:
        """This job's journal of paid `step` results (see tam.journal)."""
        return ResultJournal(self.settings.data_dir / "journal", self.job_id, step, model)

    async def complete(self, summary: dict[str, Any]) -> dict[str, Any]:
        # Observability for the "round trips grow with batches, not rows" budget.
        summary = {**summary, "dbRoundTrips": self.store.round_trips + 1}
        await self.reporter.complete(summary)
        await publish_summary(self.job_type, self.project_id, summary)
        self.logger.info("Job %s completed: %s", self.job_id, summary)
        return summary


def chunked(items: Sequence[T], max_chunks: int, min_size: int = 1) -> list[list[T]]:
    """Split into at most `max_chunks` near-equal chunks of at least `min_size` items.

    Bounds the task runs per flow run: each costs Prefect bookkeeping (a few ms of loop time
    at start, state updates, UI rows), which pays off only when a chunk has real work.
    """
    if not items:
        return []
    size = max(min_size, math.ceil(len(items) / max_chunks), 1)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def quoted(items: list[T]) -> list[T]:
    """A chunk passed to a task without Prefect walking it.

    Prefect visits every parameter of a task run twice (dependency tracking, future
    resolution): for 100 pydantic models that is ~0.1 s of event-loop time per task run,
    measured, stalling every call in flight. Chunks never contain futures, so opt out; the
    task receives the plain list.
    """
    return cast(list[T], quote(items))


def _current_flow_run_id() -> UUID | None:
    raw = current_flow_run.get_id()
    return UUID(str(raw)) if raw else None


async def publish_summary(job_type: JobType, project_id: UUID, summary: dict[str, Any]) -> None:
    """The summary as a table artifact (Prefect UI → Artifacts)."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    with contextlib.suppress(Exception):
        await acreate_table_artifact(
            key=f"{job_type.value.replace('_', '-')}-summary",
            table=[flat],
            description=f"{job_type.value} result for project {project_id}",
        )


async def _progress_sink(job_type: JobType, job_id: UUID) -> Any:
    try:
        artifact_id = await acreate_progress_artifact(
            progress=0.0, description=f"{job_type.value} job {job_id}"
        )
    except Exception:  # noqa: BLE001 - artifacts are a view, never a reason to fail
        return None

    async def sink(progress: int, _step: str | None) -> None:
        await aupdate_progress_artifact(artifact_id=artifact_id, progress=float(progress))

    return sink


async def _run_was_cancelled(flow_run_id: UUID | None) -> bool:
    if flow_run_id is None:
        return False
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
    except Exception:  # noqa: BLE001
        return False
    return bool(run.state and run.state.name in ("Cancelling", "Cancelled"))


async def _claim_job_row(
    store: Store, job_type: JobType, project_id: UUID, job_id: UUID, *, init: bool = True
) -> Any:
    """The job row, created for runs started outside the app (CLI, Prefect UI)."""
    try:
        return await store.get_job(job_id)
    except NotFoundInStore:
        return await store.create_job(project_id, job_type.value, job_id=job_id)
    except StoreError:
        if not init:
            raise
        # NOTE: a fresh embedded database has no tables yet; checking the schema on every
        # run would cost round trips, so only a failed first read pays for it.
        await store.init_schema()
        return await _claim_job_row(store, job_type, project_id, job_id, init=False)


@contextlib.asynccontextmanager
async def job_session(
    job_type: JobType, project_id: UUID, job_id: UUID | None
) -> AsyncIterator[JobSession]:
    """Open the store, claim the job row (creating it for runs started outside the app),
    and guarantee the row ends final whatever happens inside."""
    settings = get_settings()
    logger = get_run_logger()
    flow_run_id = _current_flow_run_id()
    # Runs started from the UI or CLI without a job row get one whose id is the run's.
    job_id = job_id or flow_run_id or uuid4()
    # NOTE: settings, not settings.database_url: with SUPABASE_URL + key and no
    # TAM_DATABASE_URL the flows must write where the webhook does (the Supabase REST store).
    store = open_store(settings=settings)
    try:
        job = await _claim_job_row(store, job_type, project_id, job_id)
        if job.project_id != project_id:
            raise JobInputError(f"job {job_id} belongs to another project")
        reporter = JobReporter(
            store,
            job_id,
            progress_interval_s=settings.progress_interval_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            sink=await _progress_sink(job_type, job_id),
            logger=logger,
        )
        await reporter.start(flow_run_id=flow_run_id, step="starting", job=job)
        session = JobSession(
            job_type, project_id, job_id, flow_run_id, settings, store, reporter, logger
        )
        try:
            yield session
        except BaseException as exc:
            message = describe_failure(exc, settings.secret_values())
            if isinstance(exc, asyncio.CancelledError) or await _run_was_cancelled(flow_run_id):
                await asyncio.shield(reporter.cancel("Cancelled by user"))
            else:
                logger.error("Job %s failed: %s", job_id, message)
                await asyncio.shield(reporter.fail(message))
            raise
    finally:
        # Leased API capacity goes back the moment the job ends, not after the idle grace.
        await close_account_limiters()
        await store.close()


async def create_markdown(key: str, markdown: str, description: str) -> None:
    with contextlib.suppress(Exception):
        await acreate_markdown_artifact(key=key, markdown=markdown, description=description)
