"""reap-stale-jobs: a job whose worker died (no heartbeat) ends `failed`, never `running`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger

from tam.job_reporter import ACTIVE, utcnow
from tam.models import JobStatus, JobUpdate
from tam.settings import get_settings
from tam.stores import open_store


@flow(name="reap-stale-jobs")
async def reap_stale_jobs(stale_after_s: float | None = None) -> dict[str, Any]:
    """Mark running jobs whose heartbeat stopped as failed.

    Flow hooks cannot run when a worker is killed outright (SIGKILL, OOM, a lost machine);
    the heartbeat stops and this flow, on a schedule, ends such jobs so the frontend stops
    waiting. A healthy long job writes a heartbeat every few seconds and is never touched.
    """
    logger = get_run_logger()
    settings = get_settings()
    threshold = stale_after_s if stale_after_s is not None else settings.stale_job_after_s
    cutoff = utcnow() - timedelta(seconds=threshold)
    store = open_store(settings.database_url)
    reaped: list[str] = []
    try:
        for job in await store.list_jobs(status=[JobStatus.running], heartbeat_before=cutoff):
            seen = job.heartbeat_at or job.started_at or job.created_at
            message = (
                f"Worker stopped responding (no heartbeat since {seen:%Y-%m-%d %H:%M:%S} UTC);"
                " marked failed by the reaper. Dispatch the job again to resume where it stopped."
                if seen
                else "Worker stopped responding; marked failed by the reaper."
            )
            changed = await store.update_job(
                job.id,
                JobUpdate(
                    status=JobStatus.failed,
                    result_summary={"error": message, "reaped": True},
                    completed_at=utcnow(),
                ),
                only_if_status=ACTIVE,
            )
            if changed:
                reaped.append(str(job.id))
                logger.warning("Reaped job %s (%s)", job.id, job.job_type)
    finally:
        await store.close()
    return {"reaped": len(reaped), "jobIds": reaped}
