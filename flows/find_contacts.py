"""find-contacts: decision makers at qualified companies, and their emails."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.session import job_session
from tam.models import JobType
from tam.steps.find_contacts import end_search, finish_contacts, start_contacts
from tasks.chunks import run_chunks, run_fed_chunks
from tasks.contacts import find_emails_task, search_people_task


@flow(name="find-contacts", **JOB_HOOKS)
async def find_contacts(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Find decision makers at the project's qualified companies, then their emails.

    Prospeo person search takes the companies' websites ≤ 500 per search, filtered by the
    ICP's seniorities and countries; pages after the first are fetched concurrently under
    the Prospeo limit. At most `contactsPerCompany` contacts per company (counting those
    it has). Each new contact, and each earlier one without an email verdict, goes through
    the waterfall: Prospeo enrich-person (verified only), else Hunter email-finder, then
    NeverBounce where Hunter did not verify. The waterfall starts while the search is still
    running. Contacts upsert on (project, linkedin_url), so a re-run adds no duplicate and
    never buys an email again. The project moves to `complete`.
    """
    session = job_session(JobType.find_contacts, project_id, job_id, providers=["prospeo"])
    async with session as job:
        run = await start_contacts(job)
        if (ctx := run.ctx) is None:  # nothing to search, no email to find
            return await job.complete(await finish_contacts(run, []))
        async with asyncio.TaskGroup() as group:
            emails = group.create_task(run_fed_chunks(find_emails_task, ctx, run.email_feed))
            try:
                searches = await run_chunks(search_people_task, ctx, run.search_chunks)
            finally:
                await end_search(run)
        return await job.complete(await finish_contacts(run, [*searches, *emails.result()]))
