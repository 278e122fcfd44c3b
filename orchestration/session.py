"""The Prefect side of one job run: the flow run's id and logger, the progress and summary
artifacts, the cancellation check, and the `JobRuntime` (tam.runtime) it opens and closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID, uuid4

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run as current_flow_run

from orchestration.limits import account_limiter, close_account_limiters, prewarm
from tam.errors import JobInputError
from tam.failures import describe_failure
from tam.job_reporter import JobReporter
from tam.models import Job, JobType
from tam.runtime import JobRuntime
from tam.settings import get_settings
from tam.stores import NotFoundInStore, Store, StoreError, open_store


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


async def create_markdown(key: str, markdown: str, description: str) -> None:
    with contextlib.suppress(Exception):
        await acreate_markdown_artifact(key=key, markdown=markdown, description=description)


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
) -> Job:
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
    job_type: JobType,
    project_id: UUID,
    job_id: UUID | None,
    *,
    providers: Sequence[str] = (),
) -> AsyncIterator[JobRuntime]:
    """Open the job's runtime, claim the job row (creating it for runs started outside the
    app), and guarantee the row ends final whatever happens inside.

    `providers` are the accounts the job calls first: their first lease is taken while the
    row is claimed and the project loaded, not after.
    """
    settings = get_settings()
    logger = get_run_logger()
    flow_run_id = _current_flow_run_id()
    warming = [asyncio.create_task(prewarm(provider, settings)) for provider in providers]
    # Runs started from the UI or CLI without a job row get one whose id is the run's.
    job_id = job_id or flow_run_id or uuid4()
    # NOTE: settings, not settings.database_url: with SUPABASE_URL + key and no
    # TAM_DATABASE_URL the flows must write where the webhook does (the Supabase REST store).
    store = open_store(settings=settings)
    runtime: JobRuntime | None = None
    clean = False
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

        async def publish(summary: dict[str, Any]) -> None:
            await publish_summary(job_type, project_id, summary)

        runtime = JobRuntime(
            job_type=job_type,
            project_id=project_id,
            job_id=job_id,
            flow_run_id=flow_run_id,
            settings=settings,
            store=store,
            reporter=reporter,
            logger=logger,
            limiter=account_limiter,
            release_limits=close_account_limiters,
            publish=[publish],
        )
        try:
            yield runtime
            clean = True
        except BaseException as exc:
            # What already arrived is written before the row says how the run ended.
            with contextlib.suppress(Exception):
                await asyncio.shield(runtime.flush_writers())
            message = describe_failure(exc, settings.secret_values())
            if isinstance(exc, asyncio.CancelledError) or await _run_was_cancelled(flow_run_id):
                await asyncio.shield(reporter.cancel("Cancelled by user"))
            else:
                logger.error("Job %s failed: %s", job_id, message)
                await asyncio.shield(reporter.fail(message))
            raise
    finally:
        for task in warming:
            task.cancel()
        await asyncio.gather(*warming, return_exceptions=True)
        if runtime is not None:
            await runtime.close(clean=clean)
        else:
            await close_account_limiters()
            await store.close()
