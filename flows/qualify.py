"""qualify-companies: Claude judges every pending company of a project against its ICP."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.session import job_session
from tam.models import JobType
from tam.steps.qualify import PROVIDER, finish_qualify, start_qualify
from tasks.chunks import run_chunks
from tasks.qualify import qualify_chunk_task


@flow(name="qualify-companies", **JOB_HOOKS)
async def qualify_companies(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Qualify the project's pending companies with Claude.

    Streams the pending companies page by page into a bounded number of chunk tasks that
    share one sliding window under the Anthropic account's limit, writes each verdict in
    batches as it arrives, and moves the project to `enriching`. Companies the model cannot
    judge stay `pending` with a reason starting "Needs review", so a re-run retries exactly
    those.
    """
    async with job_session(JobType.qualify, project_id, job_id, providers=[PROVIDER]) as job:
        run = await start_qualify(job)
        tallies = await run_chunks(qualify_chunk_task, run, run.chunks)
        return await job.complete(await finish_qualify(run, tallies))
