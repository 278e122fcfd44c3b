"""find_contacts as a run: plan, search chunks feeding email chunks, summary.

No Prefect here. `start_contacts` replays the journals of a killed attempt and plans the
search; the search chunks' new contacts (and earlier contacts without an email verdict)
are cut into email chunks as they land (`ContactsRun.email_feed`), so the waterfall starts
while the search goes on; `finish_contacts` sums what every chunk returned.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from tam.clients.hunter import HunterClient
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import ProspeoClient, prospeo_locations, prospeo_seniorities
from tam.models import Contact, ContactUpdate, ProjectStatus
from tam.runtime import JobRuntime
from tam.steps.chunks import Chunk, chunk_count
from tam.steps.contacts import (
    ChunkFeeder,
    ContactsContext,
    ContactsPlan,
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

LIMITED = ("prospeo", "prospeo_enrich", "hunter", "neverbounce")


class ContactsSummary(BaseModel):
    """The find_contacts job's result_summary (docs/contracts.md, "result_summary keys":
    contactsFound, emailsFound, totalCompanies), then extras."""

    model_config = ConfigDict(populate_by_name=True)

    contacts_found: int = Field(0, alias="contactsFound")
    emails_found: int = Field(0, alias="emailsFound")
    total_companies: int = Field(0, alias="totalCompanies")
    companies_searched: int = Field(0, alias="companiesSearched")
    search_pages: int = Field(0, alias="searchPages")
    emails_checked: int = Field(0, alias="emailsChecked")
    email_statuses: dict[str, int] = Field(default_factory=dict, alias="emailStatuses")
    emails_by_source: dict[str, int] = Field(default_factory=dict, alias="emailsBySource")
    cost_usd: float = Field(0.0, alias="costUsd")
    usage: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Taken from the journal of an earlier, killed attempt of this job (not bought again).
    resumed_contacts: int = Field(0, alias="resumedContacts")
    resumed_emails: int = Field(0, alias="resumedEmails")
    # Contacts or emails the database refused (logged; the rest of each batch was written).
    store_errors: int | None = Field(None, alias="storeErrors")


@dataclass
class ContactsRun:
    """One find_contacts run: its plan, the shared context, and the email chunks' feed."""

    runtime: JobRuntime
    plan: ContactsPlan
    resumed: Resumed
    ctx: ContactsContext | None = None
    search_chunks: int = 0
    email_feed: asyncio.Queue[Chunk | None] = field(default_factory=asyncio.Queue)
    feeder: ChunkFeeder[Contact] | None = None


async def start_contacts(runtime: JobRuntime) -> ContactsRun:
    """Replay the journals, plan the search, and open clients, writers and the feed."""
    _, icp = await runtime.load_project()
    store, settings, reporter = runtime.store, runtime.settings, runtime.reporter
    search_journal = runtime.journal("find_contacts-search", SearchedGroup)
    email_journal = runtime.journal("find_contacts-emails", ContactUpdate)
    finds_journal = runtime.journal("find_contacts-hunter", HunterFind)
    # What an earlier, killed attempt of this job paid for but had not written yet.
    resumed = await replay_journals(store, search_journal, email_journal, finds_journal)
    if resumed.searched or resumed.emails:
        runtime.logger.info(
            "Resuming: %d companies already searched, %d emails already found",
            len(resumed.searched),
            resumed.emails,
        )
    await reporter.step("loading qualified companies and their contacts")
    plan = await plan_contacts(
        store, runtime.project_id, per_company=icp.contacts_per_company,
        page_size=settings.read_page_size,
    )  # fmt: skip
    for company_id in resumed.searched & plan.slots.keys():
        plan.slots[company_id] = 0  # searched by the killed attempt: its pages are paid
    run = ContactsRun(runtime, plan, resumed)
    to_search = plan.to_search
    if not to_search and not plan.needing_email:
        return run
    # A searched company weighs 1 + its open slots; each email lookup weighs 1.
    open_slots = sum(plan.slots[c.id] for c in to_search)
    reporter.set_total(len(to_search) + open_slots + len(plan.needing_email))
    email_size = math.ceil((open_slots + len(plan.needing_email)) / settings.max_task_runs)
    emitted = 0

    def emit(contacts: list[Contact]) -> None:
        nonlocal emitted
        assert run.ctx is not None
        run.ctx.email_chunks[emitted] = contacts
        run.email_feed.put_nowait(Chunk(emitted, 0))
        emitted += 1

    run.feeder = feeder = ChunkFeeder(email_size, emit)
    written = ContactsTally()
    run.ctx = ctx = ContactsContext(
        project_id=runtime.project_id,
        prospeo=runtime.client(ProspeoClient),
        hunter=runtime.client(HunterClient),
        neverbounce=runtime.client(NeverBounceClient),
        limiters={name: runtime.limiter(name) for name in LIMITED},
        runtime=runtime,
        seniorities=prospeo_seniorities(list(icp.seniority_preference)),
        locations=prospeo_locations(icp.countries()),
        plan=plan,
        contact_writer=runtime.writer(contact_inserter(store, written, feeder.add)),
        update_writer=runtime.writer(store.update_contacts),
        written=written,
        search_journal=search_journal,
        email_journal=email_journal,
        waterfall_memo=WaterfallMemo(finds_journal),
    )
    ctx.waterfall_memo.update(resumed.hunter_finds)
    groups = search_groups(to_search, settings.prospeo_websites_per_search)
    n = chunk_count(len(groups), max_chunks=settings.max_task_runs)
    size = math.ceil(len(groups) / n) if n else 0
    ctx.search_chunks = [groups[i : i + size] for i in range(0, len(groups), size)] if n else []
    run.search_chunks = len(ctx.search_chunks)
    runtime.logger.info(
        "%d qualified companies: searching people at %d (%d open slots); %d earlier "
        "contacts still need an email",
        len(plan.targets),
        len(to_search),
        open_slots,
        len(plan.needing_email),
    )
    feeder.add(plan.needing_email)
    await reporter.step(f"searching people at {len(to_search)} companies")
    return run


async def end_search(run: ContactsRun) -> None:
    """The search is over: write its contacts (feeding the last email chunks), then close
    the feed so the email side ends once its chunks do."""
    try:
        if run.ctx is not None:
            await run.ctx.contact_writer.close()
    finally:
        if run.feeder is not None:
            run.feeder.close()
        run.email_feed.put_nowait(None)
    await run.runtime.reporter.step("finding emails")


async def finish_contacts(run: ContactsRun, tallies: Sequence[ContactsTally]) -> ContactsSummary:
    """Write what is buffered, move the project to `complete`, sum the chunks' tallies."""
    runtime = run.runtime
    await runtime.flush_writers()
    tally = ContactsTally()
    for chunk_tally in tallies:
        tally.add(chunk_tally)
    if run.ctx is not None:
        tally.add(run.ctx.written)
    await runtime.store.set_project_status(runtime.project_id, ProjectStatus.complete)
    return ContactsSummary(
        contacts_found=tally.contacts_found,
        emails_found=tally.emails_found,
        total_companies=len(run.plan.targets),
        companies_searched=tally.companies_searched,
        search_pages=tally.search_pages,
        emails_checked=tally.emails_checked,
        email_statuses=dict(tally.email_statuses),
        emails_by_source=dict(tally.email_sources),
        cost_usd=round(runtime.meter.total_usd, 6),
        usage=runtime.meter.summary(),
        resumed_contacts=run.resumed.contacts,
        resumed_emails=run.resumed.emails,
        store_errors=runtime.rejected if run.ctx is not None else None,
    )
