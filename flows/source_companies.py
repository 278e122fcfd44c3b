"""source-companies: candidate companies from Discolike look-alikes and Google Places."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow

from tam.clients.factory import discolike_client, google_places_client, usage_summary
from tam.models import JobType, ProjectStatus, Usage
from tam.steps.sourcing import (
    SourcingContext,
    SourcingTally,
    insert_counter,
    load_existing,
    plan_queries,
)
from orchestration.hooks import JOB_HOOKS
from orchestration.limits import account_limiter
from tasks.runtime import chunked, job_session, quoted
from tasks.sourcing import CONTEXTS, source_chunk_task


def source_summary(
    tally: SourcingTally, project_counts: dict[str, int], usage: list[Usage]
) -> dict[str, Any]:
    return {
        "companiesFound": tally.found,
        "inserted": tally.inserted,
        # Found, new to the project, yet not inserted: a concurrent run inserted them first.
        "failed": max(0, tally.found - tally.already_in_project - tally.inserted),
        "alreadyInProject": tally.already_in_project,
        "discolikeResults": tally.discolike_results,
        "placesResults": tally.places_results,
        "placesWithoutDomain": tally.places_without_domain,
        "queries": tally.queries,
        "totalCompanies": project_counts["total"],
        "costUsd": round(sum(u.cost_usd for u in usage), 6),
        "usage": usage_summary(usage),
    }


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
    async with job_session(JobType.source_companies, project_id, job_id) as session:
        project, icp = await session.load_project()
        store, settings, reporter = session.store, session.settings, session.reporter
        queries = plan_queries(
            project,
            icp,
            extra_places=places_queries,
            places_limit=settings.places_max_results,
            min_digital_footprint=settings.discolike_min_digital_footprint,
        )
        if not queries:
            session.logger.info("The ICP has no seed domains, industry text or places queries")
            await store.set_project_status(project_id, ProjectStatus.qualifying)
            return await session.complete(
                source_summary(SourcingTally(), await store.count_companies(project_id), [])
            )
        kinds = {q.kind for q in queries}
        discolike = discolike_client(settings) if "discolike" in kinds else None
        places = google_places_client(settings) if "google_places" in kinds else None
        reporter.set_total(len(queries))
        await reporter.step("loading the project's companies")
        domains, place_ids = await load_existing(store, project_id, settings.read_page_size)
        tally = SourcingTally()
        writer = session.writer(insert_counter(store, tally))
        ctx = SourcingContext(
            project_id=project_id,
            discolike=discolike,
            places=places,
            limiters={kind: account_limiter(kind, settings) for kind in kinds},
            writer=writer,
            reporter=reporter,
            max_attempts=settings.max_attempts,
            existing_domains=domains,
            existing_place_ids=place_ids,
            tally=tally,
        )
        session.logger.info(
            "Sourcing with %d queries: %s", len(queries), ", ".join(q.label for q in queries)
        )
        await reporter.step(f"running {len(queries)} sourcing queries")
        run_key = str(session.job_id)
        CONTEXTS[run_key] = ctx
        try:
            async with writer, asyncio.TaskGroup() as group:
                chunks = chunked(queries, settings.max_task_runs)
                for chunk in chunks:
                    label = chunk[0].label if len(chunk) == 1 else f"{len(chunk)} queries"
                    group.create_task(source_chunk_task(run_key, quoted(chunk), label=label))
        finally:
            CONTEXTS.pop(run_key, None)
            for client in (discolike, places):
                if client is not None:
                    await client.close()
        await store.set_project_status(project_id, ProjectStatus.qualifying)
        summary = source_summary(tally, await store.count_companies(project_id), ctx.usage())
        # Companies the database refused (logged; the rest of their batch was written).
        summary["storeErrors"] = writer.rejected
        return await session.complete(summary)
