"""reap-stale-jobs: a job whose worker died (no heartbeat) ends `failed`, never `running`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger

import orchestration.secrets  # noqa: F401 - installs the run-time Secret-block loader
from tam.job_reporter import utcnow
from tam.job_transitions import Move, Writer, guard
from tam.models import Job, JobStatus, JobUpdate
from tam.settings import get_settings
from tam.stores import Store, open_store

# Prefect state types of a run no worker has started yet: its job waits, it is not dead.
WAITING_STATES = frozenset({"SCHEDULED", "PENDING"})
# What the reaper needs from Prefect: the state type of a run, None when Prefect has no
# such run. Raises when Prefect cannot be read.
RunStateReader = Callable[[UUID], Awaitable[str | None]]


class _Unknown(Exception):
    """Prefect could not tell the run's state."""


async def prefect_run_state(flow_run_id: UUID) -> str | None:
    """The run's state type from the Prefect API; None when Prefect has no such run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            run = await client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None
    return run.state.type.value if run.state else "SCHEDULED"


async def _run_may_be_dead(job: Job, read_state: RunStateReader) -> bool:
    if job.flow_run_id is None:
        return True  # a run outside Prefect: its heartbeat is all there is
    try:
        state = await read_state(job.flow_run_id)
    except Exception as exc:  # noqa: BLE001 - any failure to read means "do not know"
        raise _Unknown(str(exc)) from exc
    return state not in WAITING_STATES


async def reap(
    store: Store,
    *,
    cutoff: datetime,
    read_state: RunStateReader = prefect_run_state,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | Any = None,
) -> list[str]:
    """Fail the running jobs a run claimed whose heartbeat is older than `cutoff` and whose
    Prefect run is not waiting for a worker; the ids of the jobs failed.

    A queued job (started_at NULL) is never touched: it waits for a worker. A claimed job
    whose run is Scheduled/Pending again (a retry waiting for a worker) is not dead either.
    When Prefect cannot be read, nothing is reaped: a dead job waits one more round, a live
    one is never failed on a guess.
    """
    log = logger or logging.getLogger(__name__)
    reaped: list[str] = []
    for job in await store.list_jobs(status=[JobStatus.running], heartbeat_before=cutoff):
        if job.started_at is None:
            continue
        try:
            if not await _run_may_be_dead(job, read_state):
                continue
        except _Unknown as exc:
            log.warning("Not reaping job %s: Prefect could not be read (%s)", job.id, exc)
            continue
        seen = job.heartbeat_at or job.started_at
        message = (
            f"Worker stopped responding (no heartbeat since {seen:%Y-%m-%d %H:%M:%S} UTC);"
            " marked failed by the reaper. Dispatch the job again to resume where it stopped."
        )
        changed = await store.update_job(
            job.id,
            JobUpdate(
                status=JobStatus.failed,
                result_summary={"error": message, "reaped": True},
                completed_at=utcnow(),
            ),
            # The same row as read: still stale, still that run's (a heartbeat or a new
            # attempt that landed meanwhile wins).
            guard=guard(Writer.reaper, Move.fail, flow_run_id=job.flow_run_id, stale_before=cutoff),
        )
        if changed:
            reaped.append(str(job.id))
            log.warning("Reaped job %s (%s)", job.id, job.job_type)
    return reaped


@flow(name="reap-stale-jobs")
async def reap_stale_jobs(stale_after_s: float | None = None) -> dict[str, Any]:
    """Mark running jobs whose heartbeat stopped as failed.

    Flow hooks cannot run when a worker is killed outright (SIGKILL, OOM, a lost machine);
    the heartbeat stops and this flow, on a schedule, ends such jobs so the frontend stops
    waiting. A healthy long job writes a heartbeat every few seconds and is never touched,
    nor is a job queued for a worker (see `reap`).
    """
    logger = get_run_logger()
    settings = get_settings()
    threshold = stale_after_s if stale_after_s is not None else settings.stale_job_after_s
    cutoff = utcnow() - timedelta(seconds=threshold)
    store = open_store(settings=settings)
    try:
        reaped = await reap(store, cutoff=cutoff, logger=logger)
    finally:
        await store.close()
    return {"reaped": len(reaped), "jobIds": reaped}
