"""check-linkedin: which contacts posted on LinkedIn lately (Bright Data posts dataset)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

from prefect import flow

from tam.clients.factory import brightdata_client
from tam.errors import Unavailable
from tam.job_reporter import utcnow
from tam.models import JobType
from tam.steps.linkedin import LinkedinContext, LinkedinTally, windows
from orchestration.hooks import JOB_HOOKS
from orchestration.limits import account_limiter
from tasks.linkedin import CONTEXTS, check_linkedin_task
from tasks.runtime import chunked, job_session, quoted

MAX_ERRORS_SHOWN = 5


def linkedin_summary(tally: LinkedinTally, *, active_days: int, forced: bool) -> dict[str, Any]:
    return {
        "active": tally.active,
        "inactive": tally.inactive,
        "total": tally.active + tally.inactive,
        "unreachable": tally.unreachable,
        # Contacts whose URL is not a linkedin.com/in/ profile: not sent to Bright Data.
        "invalidUrls": tally.invalid_url,
        "failed": tally.failed,
        "snapshots": tally.snapshots,
        "failedSnapshots": tally.failed_snapshots,
        "errors": tally.errors[:MAX_ERRORS_SHOWN],
        "activeWithinDays": active_days,
        "forced": forced,
        "costUsd": round(tally.cost_usd, 6),
        "usage": {"brightdata": {"credits": tally.records, "costUsd": round(tally.cost_usd, 6)}},
    }


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
    unchecked. Contacts checked within
    `linkedin_recheck_after_h` are skipped unless `force` is set.
    """
    async with job_session(JobType.check_linkedin, project_id, job_id) as session:
        await session.load_project()
        store, settings, reporter = session.store, session.settings, session.reporter
        now = utcnow()
        due_before = now if force else now - timedelta(hours=settings.linkedin_recheck_after_h)
        await reporter.step("loading contacts to check")
        contacts = [
            contact
            async for page in store.iter_contacts_to_check(
                project_id, checked_before=due_before, page_size=settings.read_page_size
            )
            for contact in page
        ]
        summarize = partial(
            linkedin_summary, active_days=settings.linkedin_active_days, forced=force
        )
        if not contacts:
            return await session.complete(summarize(LinkedinTally()))
        reporter.set_total(len(contacts))
        client = brightdata_client(settings)
        writer = session.writer(store.update_contacts)
        active_since, collect_since = windows(
            now,
            active_days=settings.linkedin_active_days,
            lookback_days=settings.linkedin_lookback_days,
        )
        ctx = LinkedinContext(
            client=client,
            limiter=account_limiter("brightdata", settings),
            writer=writer,
            reporter=reporter,
            max_attempts=settings.max_attempts,
            checked_at=now,
            active_since=active_since,
            collect_since=collect_since,
        )
        size = settings.brightdata_profiles_per_snapshot
        batches = [contacts[i : i + size] for i in range(0, len(contacts), size)]
        session.logger.info(
            "Checking %d profiles in %d snapshots (posts since %s)",
            len(contacts),
            len(batches),
            collect_since.date(),
        )
        await reporter.step(f"checking {len(contacts)} profiles in {len(batches)} snapshots")
        run_key = str(session.job_id)
        CONTEXTS[run_key] = ctx
        try:
            async with writer, asyncio.TaskGroup() as group:
                chunks = chunked(batches, settings.max_task_runs)
                for i, chunk in enumerate(chunks):
                    label = f"{i + 1}/{len(chunks)}"
                    group.create_task(check_linkedin_task(run_key, quoted(chunk), label=label))
        finally:
            CONTEXTS.pop(run_key, None)
            await client.close()
        # The context's tally, not the tasks' results: a retried chunk's result would miss
        # the batches its failed attempt had already written.
        tally = ctx.tally
        if tally.failed_snapshots and not tally.snapshots:
            raise Unavailable(
                f"every snapshot failed ({tally.failed_snapshots}); last: {tally.errors[-1]}",
                provider="brightdata",
            )
        if tally.failed:
            session.logger.warning(
                "%d contacts left unchecked: %d snapshots kept failing (%s)",
                tally.failed,
                tally.failed_snapshots,
                "; ".join(tally.errors[:MAX_ERRORS_SHOWN]),
            )
        # Checks the database refused to store (logged): those contacts stay unchecked.
        return await session.complete({**summarize(tally), "storeErrors": writer.rejected})
