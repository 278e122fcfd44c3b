"""source-companies: candidate companies from Discolike look-alikes and Google Places."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.session import job_session
from tam.models import JobType
from tam.steps.sourcing import finish_sourcing, start_sourcing
from tasks.chunks import run_chunks
from tasks.sourcing import source_chunk_task


@flow(name="source-companies", **JOB_HOOKS)
async def source_companies(
    project_id: UUID,
    job_id: UUID | None = None,
    places_queries: list[str] | None = None,
) -> dict[str, Any]:
    """Source candidate companies for the project into `tam_companies` as `pending`.

    Discolike finds look-alikes of the ICP's seed domains and its industry text (country,
    employee range and `min_digital_footprint` as filters, at most
    `sourcingLimits.discolikeMaxRecords` records); Google Places runs each text query of
    the ICP's `placesQueries` (and of `places_queries`), page by page. Companies are
    deduplicated by normalized domain across both sources, the project and re-runs (places
    without a website by place id), written in batches, and the project moves to
    `qualifying`.
    """
    async with job_session(JobType.source_companies, project_id, job_id) as job:
        run = await start_sourcing(job, places_queries)
        tallies = await run_chunks(source_chunk_task, run, run.chunks)
        return await job.complete(await finish_sourcing(run, tallies))
