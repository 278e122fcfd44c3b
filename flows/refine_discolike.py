"""refine-discolike: more look-alikes of liked companies, excluding the disliked."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.session import job_session
from tam.models import JobType
from tam.steps.refine import PROVIDER, finish_refine, start_refine
from tasks.chunks import run_chunks
from tasks.sourcing import refine_discover_task


@flow(name="refine-discolike", **JOB_HOOKS)
async def refine_discolike(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Find more companies like the ones the user liked, none like the disliked.

    Seeds are the ICP's seed domains plus the domains of companies with feedback `liked`
    (at most 10). One Discolike discover call (country from the ICP's geography, at most
    `sourcingLimits.discolikeMaxRecords` records); results whose domain was disliked or is
    already in the project are dropped, the rest are inserted as `pending`. With no seed,
    the job completes at once with zeros and "No seed domains available".
    """
    session = job_session(JobType.refine_discolike, project_id, job_id, providers=[PROVIDER])
    async with session as job:
        run = await start_refine(job)
        results = await run_chunks(refine_discover_task, run, run.chunks)
        return await job.complete(await finish_refine(run, results))
