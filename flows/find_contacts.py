"""find-contacts: decision makers at qualified companies, and their emails."""

from __future__ import annotations

import asyncio
import math
from typing import Any
from uuid import UUID

from prefect import flow

from orchestration.hooks import JOB_HOOKS
from orchestration.limits import account_limiter
from tam.clients.factory import hunter_client, neverbounce_client, prospeo_client, usage_summary
from tam.clients.prospeo import prospeo_locations, prospeo_seniorities
from tam.models import Contact, ContactUpdate, JobType, ProjectStatus, Usage
from tam.steps.contacts import (
    ChunkFeeder,
    ContactsContext,
    ContactsTally,
    HunterFind,
    Resumed,
    SearchedGroup,
    WaterfallMemo,
    contact_inserter,
    plan_contacts,
    replay_journals,
    search_groups,
)
from tasks.contacts import CONTEXTS, find_emails_task, search_people_task
from tasks.runtime import chunked, job_session, quoted

LIMITED = ("prospeo", "prospeo_enrich", "hunter", "neverbounce")


def contacts_summary(
    tally: ContactsTally, total_companies: int, usage: list[Usage], resumed: Resumed | None = None
) -> dict[str, Any]:
    resumed = resumed or Resumed()
    return {
        "contactsFound": tally.contacts_found,
        "emailsFound": tally.emails_found,
        "totalCompanies": total_companies,
        "companiesSearched": tally.companies_searched,
        "searchPages": tally.search_pages,
        "emailsChecked": tally.emails_checked,
        "emailStatuses": dict(tally.email_statuses),
        "emailsBySource": dict(tally.email_sources),
        "costUsd": round(sum(u.cost_usd for u in usage), 6),
        "usage": usage_summary(usage),
        # Taken from the journal of an earlier, killed attempt of this job (not bought again).
        "resumedContacts": resumed.contacts,
        "resumedEmails": resumed.emails,
    }


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
    async with job_session(JobType.find_contacts, project_id, job_id) as session:
        _, icp = await session.load_project()
        store, settings, reporter = session.store, session.settings, session.reporter
        search_journal = session.journal("find_contacts-search", SearchedGroup)
        email_journal = session.journal("find_contacts-emails", ContactUpdate)
        finds_journal = session.journal("find_contacts-hunter", HunterFind)
        journals = (search_journal, email_journal, finds_journal)
        # What an earlier, killed attempt of this job paid for but had not written yet.
        resumed = await replay_journals(store, search_journal, email_journal, finds_journal)
        if resumed.searched or resumed.emails:
            session.logger.info(
                "Resuming: %d companies already searched, %d emails already found",
                len(resumed.searched),
                resumed.emails,
            )
        await reporter.step("loading qualified companies and their contacts")
        plan = await plan_contacts(
            store,
            project_id,
            per_company=icp.contacts_per_company,
            page_size=settings.read_page_size,
        )
        for company_id in resumed.searched & plan.slots.keys():
            plan.slots[company_id] = 0  # searched by the killed attempt: its pages are paid
        to_search = plan.to_search
        if not to_search and not plan.needing_email:
            for journal in journals:
                journal.close(remove=True)
            await store.set_project_status(project_id, ProjectStatus.complete)
            return await session.complete(
                contacts_summary(ContactsTally(), len(plan.targets), [], resumed)
            )
        # A searched company weighs 1 + its open slots; each email lookup weighs 1.
        open_slots = sum(plan.slots[c.id] for c in to_search)
        reporter.set_total(len(to_search) + open_slots + len(plan.needing_email))
        prospeo, hunter, neverbounce = (
            prospeo_client(settings),
            hunter_client(settings),
            neverbounce_client(settings),
        )
        tally = ContactsTally()
        found: asyncio.Queue[list[Contact] | None] = asyncio.Queue()
        email_chunk = math.ceil((open_slots + len(plan.needing_email)) / settings.max_task_runs)
        feeder: ChunkFeeder[Contact] = ChunkFeeder(email_chunk, found.put_nowait)
        contact_writer = session.writer(contact_inserter(store, tally, feeder.add))
        update_writer = session.writer(store.update_contacts)
        ctx = ContactsContext(
            project_id=project_id,
            prospeo=prospeo,
            hunter=hunter,
            neverbounce=neverbounce,
            limiters={name: account_limiter(name, settings) for name in LIMITED},
            reporter=reporter,
            max_attempts=settings.max_attempts,
            seniorities=prospeo_seniorities(list(icp.seniority_preference)),
            locations=prospeo_locations(icp.countries()),
            plan=plan,
            contact_writer=contact_writer,
            update_writer=update_writer,
            tally=tally,
            search_journal=search_journal,
            email_journal=email_journal,
            waterfall_memo=WaterfallMemo(finds_journal),
        )
        ctx.waterfall_memo.update(resumed.hunter_finds)
        run_key = str(session.job_id)
        CONTEXTS[run_key] = ctx

        async def spawn_email_tasks(group: asyncio.TaskGroup) -> None:
            n = 0
            while (contacts := await found.get()) is not None:
                n += 1
                group.create_task(find_emails_task(run_key, quoted(contacts), label=str(n)))

        session.logger.info(
            "%d qualified companies: searching people at %d (%d open slots); %d earlier "
            "contacts still need an email",
            len(plan.targets),
            len(to_search),
            open_slots,
            len(plan.needing_email),
        )
        await reporter.step(f"searching people at {len(to_search)} companies")
        written = False
        try:
            async with update_writer, asyncio.TaskGroup() as emails:
                emails.create_task(spawn_email_tasks(emails))
                feeder.add(plan.needing_email)
                try:
                    groups = search_groups(to_search, settings.prospeo_websites_per_search)
                    async with contact_writer, asyncio.TaskGroup() as searches:
                        chunks = chunked(groups, settings.max_task_runs)
                        for i, chunk in enumerate(chunks):
                            label = f"{i + 1}/{len(chunks)}"
                            searches.create_task(
                                search_people_task(run_key, quoted(chunk), label=label)
                            )
                finally:
                    feeder.close()
                    found.put_nowait(None)
                await reporter.step("finding emails")
            written = True
        finally:
            # Kept after a failure: the next attempt replays it (writes are idempotent).
            for journal in journals:
                journal.close(remove=written)
            CONTEXTS.pop(run_key, None)
            for client in (prospeo, hunter, neverbounce):
                await client.close()
        await store.set_project_status(project_id, ProjectStatus.complete)
        summary = contacts_summary(tally, len(plan.targets), ctx.usage(), resumed)
        # Contacts or emails the database refused (logged; the rest of each batch was written).
        summary["storeErrors"] = contact_writer.rejected + update_writer.rejected
        return await session.complete(summary)
