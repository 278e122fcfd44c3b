"""qualify-companies: Claude judges every pending company of a project against its ICP."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow

from tam.clients.factory import claude_qualifier
from tam.models import JobType, ProjectStatus, QualificationResult, QualificationStatus
from tam.steps.qualify import QualifyContext, QualifyTally, store_refused
from tasks.hooks import JOB_HOOKS
from tasks.limits import account_limiter
from tasks.qualify import CONTEXTS, qualify_chunk_task
from tasks.runtime import chunked, job_session, quoted


def qualify_summary(
    tally: QualifyTally, project_counts: dict[str, int], resumed: int = 0
) -> dict[str, Any]:
    return {
        "qualified": tally.qualified,
        "disqualified": tally.disqualified,
        "needsReview": tally.needs_review,
        # Verdicts the database refused; those companies stay pending ("Needs review").
        "storeErrors": tally.store_errors,
        "total": tally.qualified + tally.disqualified + tally.needs_review,
        "inputTokens": tally.input_tokens,
        "outputTokens": tally.output_tokens,
        "costUsd": round(tally.cost_usd, 6),
        "project": project_counts,
        # Verdicts taken from the journal of an earlier, killed attempt (not bought again).
        "resumedVerdicts": resumed,
    }


@flow(name="qualify-companies", **JOB_HOOKS)
async def qualify_companies(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Qualify the project's pending companies with Claude.

    Loads the pending companies page by page, splits them into a bounded number of chunk
    tasks that share one sliding window under the Anthropic account's limit, writes each
    verdict in batches as it arrives, and moves the project to `enriching`. Companies the
    model cannot judge stay `pending` with a reason starting "Needs review", so a re-run
    retries exactly those.
    """
    async with job_session(JobType.qualify, project_id, job_id) as session:
        _, icp = await session.load_project()
        store, settings, reporter = session.store, session.settings, session.reporter
        journal = session.journal("qualify", QualificationResult)
        # Answers an earlier, killed attempt of this job paid for but had not written yet.
        replayed = journal.replay()
        if replayed:
            session.logger.info("Replaying %d journaled verdicts", len(replayed))
            # Through a writer: a verdict the database refuses must not fail every re-run.
            async with session.writer(
                store.save_qualifications, on_rejected=store_refused(None)
            ) as replay:
                for result in replayed:
                    await replay.add(result)
        done = {result.company_id for result in replayed}
        await reporter.step("loading pending companies")
        pending = [
            company
            async for page in store.iter_companies(
                project_id, status=QualificationStatus.pending, page_size=settings.read_page_size
            )
            for company in page
            if company.id not in done
        ]
        if not pending:
            journal.close(remove=True)
            return await session.complete(
                qualify_summary(
                    QualifyTally(), await store.count_companies(project_id), len(replayed)
                )
            )
        reporter.set_total(len(pending))
        await reporter.step(f"qualifying {len(pending)} companies")
        qualifier = claude_qualifier(settings)
        tally = QualifyTally()
        writer = session.writer(store.save_qualifications, on_rejected=store_refused(tally))
        ctx = QualifyContext(
            icp=icp,
            qualifier=qualifier,
            limiter=account_limiter("anthropic", settings),
            writer=writer,
            reporter=reporter,
            max_attempts=settings.max_attempts,
            journal=journal,
            tally=tally,
        )
        run_key = str(session.job_id)
        CONTEXTS[run_key] = ctx
        written = False
        try:
            async with writer, asyncio.TaskGroup() as group:
                chunks = chunked(pending, settings.max_task_runs, settings.chunk_size)
                for i, chunk in enumerate(chunks):
                    label = f"{i + 1}/{len(chunks)}"
                    group.create_task(qualify_chunk_task(run_key, quoted(chunk), label=label))
            written = True
        finally:
            # Kept after a failure: the next attempt replays it (writes are idempotent).
            journal.close(remove=written)
            CONTEXTS.pop(run_key, None)
            await qualifier.close()
        # The context's tally, not the tasks' results: a retried chunk's result would miss
        # what its failed attempt answered.
        await store.set_project_status(project_id, ProjectStatus.enriching)
        return await session.complete(
            qualify_summary(tally, await store.count_companies(project_id), len(replayed))
        )
