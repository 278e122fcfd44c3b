"""find_contacts: Prospeo person search at qualified companies, then the email waterfall.

No Prefect here. Search: the companies' websites go to Prospeo ≤ 500 per search; page 1
says how many pages there are and the rest are fetched concurrently under the Prospeo
limiter. People are kept in result order, at most `contactsPerCompany` per company counting
the contacts it already has. Emails: every contact without an email verdict goes through
`tam.steps.email_waterfall.find_email`; a contact that has one is never sent again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.hunter import HunterClient, HunterEmail
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import PersonHit, PersonSearchPage, ProspeoClient
from tam.domains import normalize_domain
from tam.job_reporter import JobReporter
from tam.journal import ResultJournal
from tam.limiters import AccountLimiter
from tam.models import Company, Contact, ContactUpdate, NewContact, QualificationStatus
from tam.runtime import JobRuntime
from tam.steps.chunks import Chunk
from tam.steps.email_waterfall import EmailLookup, find_email
from tam.stores.base import Store

T = TypeVar("T")


@dataclass
class ContactsPlan:
    """What a find_contacts run has to do, read from the store page by page."""

    targets: dict[UUID, Company] = field(default_factory=dict)  # qualified, with a domain
    slots: dict[UUID, int] = field(default_factory=dict)  # contacts each target may still get
    known_urls: set[str] = field(default_factory=set)  # every LinkedIn URL in the project
    needing_email: list[Contact] = field(default_factory=list)

    @property
    def to_search(self) -> list[Company]:
        return [c for c in self.targets.values() if self.slots.get(c.id, 0) > 0]


async def plan_contacts(
    store: Store, project_id: UUID, *, per_company: int, page_size: int
) -> ContactsPlan:
    plan = ContactsPlan()
    async for page in store.iter_companies(
        project_id, status=QualificationStatus.qualified, with_domain=True, page_size=page_size
    ):
        plan.targets.update((c.id, c) for c in page)
    have: Counter[UUID] = Counter()
    async for contacts in store.iter_contacts(project_id, page_size=page_size):
        for contact in contacts:
            plan.known_urls.add(contact.linkedin_url)
            if contact.company_id not in plan.targets:
                continue
            have[contact.company_id] += 1
            if contact.email is None and contact.email_status is None:
                plan.needing_email.append(contact)
    plan.slots = {cid: max(0, per_company - have[cid]) for cid in plan.targets}
    return plan


def search_groups(companies: Sequence[Company], size: int) -> list[list[Company]]:
    return [list(companies[i : i + size]) for i in range(0, len(companies), size)]


class SearchedGroup(BaseModel):
    """A journal record: these companies were searched and these people kept for them."""

    company_ids: list[UUID]
    contacts: list[NewContact] = Field(default_factory=list)


class HunterFind(BaseModel):
    """A journal record: Hunter's paid find for one waterfall lookup (see `WaterfallMemo`)."""

    key: str
    found: HunterEmail


Memo = dict[str, tuple[Any, dict[str, Any] | None]]


class WaterfallMemo(Memo):
    """The waterfall's per-lookup answers (see `find_email`), Hunter's finds journaled.

    A contact's outcome is journaled when its waterfall ends; a worker killed while
    NeverBounce checks an address Hunter found would otherwise buy that find again.
    """

    def __init__(self, journal: ResultJournal[HunterFind] | None = None) -> None:
        super().__init__()
        self._journal = journal

    def __setitem__(self, key: str, value: tuple[Any, dict[str, Any] | None]) -> None:
        super().__setitem__(key, value)
        if self._journal is not None and isinstance(value[0], HunterEmail):
            self._journal.append(HunterFind(key=key, found=value[0]))


@dataclass
class Resumed:
    """What a re-run of a killed job took from its journals instead of buying again."""

    searched: set[UUID] = field(default_factory=set)
    contacts: int = 0
    emails: int = 0
    hunter_finds: Memo = field(default_factory=dict)


async def replay_journals(
    store: Store,
    searches: ResultJournal[SearchedGroup],
    emails: ResultJournal[ContactUpdate],
    finds: ResultJournal[HunterFind] | None = None,
) -> Resumed:
    """Write what an earlier, killed attempt of this job paid for but may not have written.

    Searches first: an email update can only name a contact whose row exists. Both writes
    are idempotent (upsert on the unique key; an update of the same fields). Hunter's finds
    come back as waterfall answers, so a contact whose waterfall was cut short after them
    resumes at NeverBounce.
    """
    resumed = Resumed()
    if finds is not None:
        resumed.hunter_finds = {find.key: (find.found, None) for find in finds.replay()}
    groups = searches.replay()
    for group in groups:
        resumed.searched.update(group.company_ids)
    people = [contact for group in groups for contact in group.contacts]
    if people:
        resumed.contacts = len(await store.upsert_contacts(people))
    updates = emails.replay()
    if updates:
        await store.update_contacts(updates)
        resumed.emails = len(updates)
    return resumed


@dataclass
class ContactsTally:
    """What one chunk counted (contacts found: the run's writer); the run's is their sum."""

    companies_searched: int = 0
    search_pages: int = 0
    people_seen: int = 0
    contacts_found: int = 0
    emails_checked: int = 0
    emails_found: int = 0
    email_statuses: Counter[str] = field(default_factory=Counter)
    email_sources: Counter[str] = field(default_factory=Counter)

    def add(self, other: ContactsTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> ContactsTally:
        new = ContactsTally()
        new.add(self)
        return new


@dataclass
class ContactsContext:
    """Everything one find_contacts run shares between its chunks."""

    project_id: UUID
    prospeo: ProspeoClient
    hunter: HunterClient
    neverbounce: NeverBounceClient
    limiters: dict[str, AccountLimiter]
    runtime: JobRuntime
    seniorities: list[str]
    locations: list[str]
    plan: ContactsPlan
    contact_writer: BatchWriter[NewContact]
    update_writer: BatchWriter[ContactUpdate]
    # Contacts the writer really inserted (its flush counts them).
    written: ContactsTally = field(default_factory=ContactsTally)
    done: set[UUID] = field(default_factory=set)  # companies searched, contacts emailed
    # Paid answers are journaled the moment they arrive, before the batched write, so a
    # killed worker's re-run never buys them again (see tam.journal).
    search_journal: ResultJournal[SearchedGroup] | None = None
    email_journal: ResultJournal[ContactUpdate] | None = None
    # Each provider's answer per contact in this run, so a retried email task does not
    # buy Hunter again for a contact whose NeverBounce check failed (see find_email).
    waterfall_memo: Memo = field(default_factory=dict)

    # Each chunk's tally, by chunk ("search 1", "emails 3"), kept across its retries.
    tallies: dict[str, ContactsTally] = field(default_factory=dict)
    # The chunks' inputs, by index: search groups up front, contacts as they are found.
    search_chunks: list[list[list[Company]]] = field(default_factory=list)
    email_chunks: dict[int, list[Contact]] = field(default_factory=dict)

    @property
    def max_attempts(self) -> int:
        return self.runtime.settings.max_attempts

    @property
    def reporter(self) -> JobReporter:
        return self.runtime.reporter


def contact_inserter(
    store: Store, tally: ContactsTally, on_inserted: Callable[[list[Contact]], None]
) -> Callable[[Sequence[NewContact]], Awaitable[None]]:
    """The contact writer's flush: one upsert per batch; new rows go on to the waterfall."""

    async def flush(batch: Sequence[NewContact]) -> None:
        inserted = await store.upsert_contacts(batch)
        tally.contacts_found += len(inserted)
        if inserted:
            on_inserted(inserted)

    return flush


class ChunkFeeder(Generic[T]):
    """Hands items on in chunks of `size` as they arrive, the rest on `close`.

    Lets the waterfall start on the first contacts found while the search goes on, with
    a bounded number of chunks (and so of task runs).
    """

    def __init__(self, size: int, emit: Callable[[list[T]], None]) -> None:
        self.size = max(1, size)
        self._emit = emit
        self._buffer: list[T] = []

    def add(self, items: Sequence[T]) -> None:
        self._buffer.extend(items)
        while len(self._buffer) >= self.size:
            self._emit(self._buffer[: self.size])
            del self._buffer[: self.size]

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = []


# --- search -------------------------------------------------------------------------------
async def _search_page(
    ctx: ContactsContext, websites: list[str], page: int, tally: ContactsTally
) -> PersonSearchPage:
    result = await call_with_retries(
        lambda: ctx.prospeo.search_people(
            websites, seniorities=ctx.seniorities, locations=ctx.locations, page=page
        ),
        limiter=ctx.limiters["prospeo"],
        max_attempts=ctx.max_attempts,
    )
    tally.search_pages += 1
    return result


def _new_contact(ctx: ContactsContext, company: Company, hit: PersonHit) -> NewContact:
    person = hit.person
    return NewContact(
        project_id=ctx.project_id,
        company_id=company.id,
        first_name=person.first_name,
        last_name=person.last_name,
        title=person.current_job_title,
        linkedin_url=person.linkedin_url or "",
        source="prospeo",
        raw_data={"prospeo": person.model_dump(mode="json", exclude_none=True)},
    )


async def search_group(
    ctx: ContactsContext, group: Sequence[Company], tally: ContactsTally
) -> None:
    """People at one group of ≤ 500 companies: every page, then the per-company cap."""
    group = [c for c in group if c.id not in ctx.done]
    if not group:
        return
    websites = [c.domain for c in group if c.domain]
    first = await _search_page(ctx, websites, 1, tally)
    pages = {1: first}
    if first.pagination.total_page > 1:
        async with asyncio.TaskGroup() as tasks:
            later = {
                n: tasks.create_task(_search_page(ctx, websites, n, tally))
                for n in range(2, first.pagination.total_page + 1)
            }
        pages.update((n, task.result()) for n, task in later.items())

    by_domain = {c.domain: c for c in group if c.domain}
    slots = {c.id: ctx.plan.slots.get(c.id, 0) for c in group}
    kept: list[NewContact] = []
    for n in sorted(pages):  # result order decides who is kept under the cap
        for hit in pages[n].results:
            tally.people_seen += 1
            company = by_domain.get(_hit_domain(hit) or "")
            url = hit.person.linkedin_url
            if company is None or not url or url in ctx.plan.known_urls:
                continue
            if slots[company.id] <= 0:
                continue
            slots[company.id] -= 1
            ctx.plan.known_urls.add(url)
            kept.append(_new_contact(ctx, company, hit))
    if ctx.search_journal is not None:
        ctx.search_journal.append(SearchedGroup(company_ids=[c.id for c in group], contacts=kept))
    for contact in kept:
        await ctx.contact_writer.add(contact)
    for company in group:
        ctx.done.add(company.id)
        ctx.plan.slots[company.id] = slots[company.id]
    tally.companies_searched += len(group)
    # Each company weighs 1 + its open slots; slots nobody filled are done now.
    ctx.reporter.advance(len(group) + sum(slots.values()))


def _hit_domain(hit: PersonHit) -> str | None:
    if hit.company is None:
        return None
    return normalize_domain(hit.company.domain) or normalize_domain(hit.company.website)


async def search_chunk(ctx: ContactsContext, chunk: Chunk) -> ContactsTally:
    """Prospeo person search for each group of ≤ 500 companies of this chunk (every page,
    concurrently under the Prospeo limiter), keeping at most `contactsPerCompany` per
    company. New contacts are upserted in batches and handed to the email chunks as they
    land; a retry skips the companies already searched, and its tally counts both attempts.
    """
    tally = ctx.tallies.setdefault(f"search {chunk}", ContactsTally())
    async with asyncio.TaskGroup() as tasks:
        for group in ctx.search_chunks[chunk.index]:
            tasks.create_task(search_group(ctx, group, tally))
    return tally.copy()


# --- emails -------------------------------------------------------------------------------
async def find_email_for(ctx: ContactsContext, contact: Contact, tally: ContactsTally) -> None:
    company = ctx.plan.targets.get(contact.company_id)
    lookup = EmailLookup(
        first_name=contact.first_name,
        last_name=contact.last_name,
        linkedin_url=contact.linkedin_url or None,
        domain=company.domain if company else None,
    )
    outcome = await find_email(
        lookup,
        prospeo=ctx.prospeo,
        hunter=ctx.hunter,
        neverbounce=ctx.neverbounce,
        limiters=ctx.limiters,
        max_attempts=ctx.max_attempts,
        memo=ctx.waterfall_memo,
    )
    raw: dict[str, Any] = {
        **contact.raw_data,
        "email_waterfall": outcome.raw,
        "email_source": outcome.source,
    }
    update = ContactUpdate(
        contact_id=contact.id,
        email=outcome.email,
        email_status=outcome.email_status,
        raw_data=raw,
    )
    if ctx.email_journal is not None:
        ctx.email_journal.append(update)
    await ctx.update_writer.add(update)
    ctx.done.add(contact.id)
    tally.emails_checked += 1
    tally.email_statuses[outcome.email_status] += 1
    if outcome.email is not None:
        tally.emails_found += 1
        tally.email_sources[outcome.source or "unknown"] += 1
    ctx.reporter.advance(1)


async def email_chunk(ctx: ContactsContext, chunk: Chunk) -> ContactsTally:
    """The email waterfall (Prospeo enrich → Hunter → NeverBounce) for each contact of
    this chunk, concurrently under each provider's limiter. A retry skips the contacts
    already answered, so no email is bought twice; its tally counts both attempts."""
    tally = ctx.tallies.setdefault(f"emails {chunk}", ContactsTally())
    async with asyncio.TaskGroup() as tasks:
        for contact in ctx.email_chunks[chunk.index]:
            if contact.id not in ctx.done:
                tasks.create_task(find_email_for(ctx, contact, tally))
    del ctx.email_chunks[chunk.index]  # done: its contacts need not stay in memory
    return tally.copy()
