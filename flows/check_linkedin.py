"""check-linkedin: which contacts posted on LinkedIn lately (Bright Data posts dataset)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.session import job_session
from tam.models import JobType
from tam.steps.linkedin import PROVIDER, finish_check, start_check
from tasks.chunks import run_chunks
from tasks.linkedin import check_linkedin_task


@flow(name="check-linkedin", **JOB_HOOKS)
async def check_linkedin(
    project_id: UUID, job_id: UUID | None = None, force: bool = False
) -> dict[str, Any]:
    """Mark which of the project's contacts posted on LinkedIn in the last 30 days.

    Profiles go to Bright Data's LinkedIn posts dataset in batches: one trigger per batch,
    then progress is polled until the snapshot is ready and downloaded. The newest post
    per profile sets `linkedin_last_post_date`; `linkedin_active` is a post within
    `linkedin_active_days` (30); every checked contact gets `linkedin_checked_at`, and
    profiles with no posts (or gone) are inactive. A URL that is not a linkedin.com/in/
    profile is never sent: the contact is counted `invalidUrls` (unreachable, inactive).
    A failed snapshot is retried; one that keeps failing is reported and its contacts stay
    unchecked. Contacts checked within `linkedin_recheck_after_h` are skipped unless
    `force` is set.
    """
    session = job_session(JobType.check_linkedin, project_id, job_id, providers=[PROVIDER])
    async with session as job:
        run = await start_check(job, force=force)
        tallies = await run_chunks(check_linkedin_task, run, run.chunks)
        return await job.complete(await finish_check(run, tallies))
