"""refine-discolike: more look-alikes of liked companies, excluding the disliked."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow

from tam.clients.factory import discolike_client, usage_summary
from tam.models import JobType
from tam.steps.refine import InsertCount, RefineResult, inserter, plan_refine, refine_summary
from orchestration.hooks import JOB_HOOKS
from orchestration.limits import account_limiter
from tasks.runtime import job_session
from tasks.sourcing import REFINE_RUNS, RefineRun, refine_discover_task


@flow(name="refine-discolike", **JOB_HOOKS)
async def refine_discolike(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Find more companies like the ones the user liked, none like the disliked.

    Seeds are the ICP's seed domains plus the domains of companies with feedback `liked`
    (at most 10). One Discolike discover call (country from the ICP's geography, at most
    `sourcingLimits.discolikeMaxRecords` records); results whose domain was disliked or is
    already in the project are dropped, the rest are inserted as `pending`. With no seed,
    the job completes at once with zeros and "No seed domains available".
    """
    async with job_session(JobType.refine_discolike, project_id, job_id) as session:
        _, icp = await session.load_project()
        store, settings, reporter = session.store, session.settings, session.reporter
        await reporter.step("loading liked and disliked companies")
        plan = await plan_refine(store, project_id, icp, page_size=settings.read_page_size)
        if not plan.seeds:
            return await session.complete(refine_summary(plan, RefineResult(), 0))
        reporter.set_total(1)
        client = discolike_client(settings)
        count = InsertCount()
        writer = session.writer(inserter(store, count))
        run_key = str(session.job_id)
        REFINE_RUNS[run_key] = RefineRun(
            project_id=project_id,
            icp=icp,
            plan=plan,
            client=client,
            limiter=account_limiter("discolike", settings),
            writer=writer,
            max_attempts=settings.max_attempts,
            min_digital_footprint=settings.discolike_min_digital_footprint,
        )
        session.logger.info(
            "Refining with %d seeds (%d liked); %d disliked domains excluded",
            len(plan.seeds),
            len(plan.liked),
            len(plan.disliked),
        )
        await reporter.step(f"discovering look-alikes of {len(plan.seeds)} seed domains")
        try:
            async with writer:
                raw = await refine_discover_task(run_key, seeds=len(plan.seeds))
        finally:
            REFINE_RUNS.pop(run_key, None)
            await client.close()
        reporter.advance(1)
        reporter.cost_usd = client.usage.cost_usd
        summary = refine_summary(plan, RefineResult(**raw), count.inserted)
        summary["costUsd"] = round(client.usage.cost_usd, 6)
        summary["usage"] = usage_summary([client.usage])
        # Companies the database refused (logged, and counted in `failed` too).
        summary["storeErrors"] = writer.rejected
        return await session.complete(summary)
