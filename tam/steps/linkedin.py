"""check_linkedin: who posted on LinkedIn lately, from Bright Data's posts dataset.

No Prefect here. Each batch of profiles is ONE collection (trigger → progress → snapshot),
retried as a whole when the snapshot fails; a batch whose snapshot keeps failing is
reported and its contacts stay unchecked, so a re-run picks them up. Only linkedin.com
person profiles are sent (as ``https://www.linkedin.com/in/<slug>``); a contact whose URL is
anything else is not bought: it is marked checked, inactive and counted `invalid_url`.

The contacts to check stream page by page into batches; each chunk pulls batches from the
one stream (tam.steps.chunks). A batch knows when it is settled (its updates queued, or
given up), so a retried chunk that meets it again neither buys nor counts it twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.brightdata import (
    BrightDataClient,
    ProfilePosts,
    canonical_profile_url,
    normalize_profile_url,
)
from tam.errors import ProviderError, SystemicError, Unavailable
from tam.job_reporter import utcnow
from tam.limiters import AccountLimiter
from tam.models import Contact, ContactUpdate
from tam.runtime import JobRuntime
from tam.steps.chunks import (
    Chunk,
    ChunkState,
    PageStream,
    batched_pages,
    chunk_count,
    count_pages,
    work_chunk,
)

PROVIDER = "brightdata"
MAX_ERRORS_SHOWN = 5


@dataclass
class LinkedinTally:
    active: int = 0
    inactive: int = 0
    unreachable: int = 0  # profile gone or private: counted inactive too
    invalid_url: int = 0  # not a linkedin.com/in/ profile: never sent, unreachable and inactive
    failed: int = 0  # contacts whose snapshot kept failing (left unchecked)
    snapshots: int = 0
    failed_snapshots: int = 0
    records: float = 0.0
    cost_usd: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, other: LinkedinTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class LinkedinSummary(BaseModel):
    """The check_linkedin job's result_summary (docs/contracts.md, "result_summary keys":
    active, inactive, total)."""

    model_config = ConfigDict(populate_by_name=True)

    active: int = 0
    inactive: int = 0
    total: int = 0
    unreachable: int = 0
    # Contacts whose URL is not a linkedin.com/in/ profile: not sent to Bright Data.
    invalid_urls: int = Field(0, alias="invalidUrls")
    failed: int = 0
    snapshots: int = 0
    failed_snapshots: int = Field(0, alias="failedSnapshots")
    errors: list[str] = Field(default_factory=list)
    active_within_days: int = Field(0, alias="activeWithinDays")
    forced: bool = False
    cost_usd: float = Field(0.0, alias="costUsd")
    usage: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Checks the database refused to store (logged): those contacts stay unchecked.
    store_errors: int = Field(0, alias="storeErrors")


@dataclass
class ProfileBatch:
    """One collection's contacts; `settled` once its updates are queued or it was given up."""

    contacts: list[Contact]
    settled: bool = False


@dataclass
class LinkedinRun:
    """One check_linkedin run: what its chunks share, and each chunk's state."""

    runtime: JobRuntime
    checked_at: datetime
    active_since: datetime  # a post at or after this makes a contact active
    collect_since: datetime  # how far back posts are collected
    forced: bool = False
    total: int = 0
    chunks: int = 0
    client: BrightDataClient | None = None
    limiter: AccountLimiter | None = None
    writer: BatchWriter[ContactUpdate] | None = None
    batches: PageStream[ProfileBatch] | None = None
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    states: dict[int, ChunkState[ProfileBatch, LinkedinTally]] = field(default_factory=dict)


def windows(now: datetime, *, active_days: int, lookback_days: int) -> tuple[datetime, datetime]:
    """(active_since, collect_since) for a check made at `now`."""
    return now - timedelta(days=active_days), now - timedelta(days=max(lookback_days, active_days))


def updates_for(
    run: LinkedinRun, contacts: Sequence[Contact], posts: ProfilePosts, tally: LinkedinTally
) -> list[ContactUpdate]:
    """One update per contact: newest post date, active flag, checked-at."""
    newest = {normalize_profile_url(url): posts.last_post_date(url) for url in posts.posts}
    failed = {normalize_profile_url(url) for url in posts.errors}
    updates = []
    for contact in contacts:
        key = normalize_profile_url(contact.linkedin_url)
        last = newest.get(key)
        active = last is not None and last >= run.active_since
        tally.active += active
        tally.inactive += not active
        tally.unreachable += key in failed
        updates.append(
            ContactUpdate(
                contact_id=contact.id,
                linkedin_last_post_date=last,
                linkedin_active=active,
                linkedin_checked_at=run.checked_at,
            )
        )
    return updates


def skipped_update(run: LinkedinRun, contact: Contact, tally: LinkedinTally) -> ContactUpdate:
    """A contact whose URL is no profile: checked, inactive, never sent."""
    tally.invalid_url += 1
    tally.unreachable += 1
    tally.inactive += 1
    return ContactUpdate(
        contact_id=contact.id,
        linkedin_last_post_date=None,
        linkedin_active=False,
        linkedin_checked_at=run.checked_at,
    )


async def start_check(runtime: JobRuntime, *, force: bool = False) -> LinkedinRun:
    """Count the contacts due for a check and open the stream of their batches."""
    await runtime.load_project()
    store, settings, reporter = runtime.store, runtime.settings, runtime.reporter
    now = utcnow()
    active_since, collect_since = windows(
        now,
        active_days=settings.linkedin_active_days,
        lookback_days=settings.linkedin_lookback_days,
    )
    run = LinkedinRun(runtime, now, active_since, collect_since, forced=force)
    due_before = now if force else now - timedelta(hours=settings.linkedin_recheck_after_h)

    def due() -> Any:
        return store.iter_contacts_to_check(
            runtime.project_id, checked_before=due_before, page_size=settings.read_page_size
        )

    await reporter.step("counting contacts to check")
    run.total = await count_pages(due())
    if not run.total:
        return run
    reporter.set_total(run.total)
    size = settings.brightdata_profiles_per_snapshot
    snapshots = -(-run.total // size)
    run.client = runtime.client(BrightDataClient)
    run.limiter = runtime.limiter(PROVIDER)
    run.writer = runtime.writer(store.update_contacts)
    run.batches = runtime.stream(_profile_batches(due(), size))
    run.window = asyncio.Semaphore(max(8, 2 * settings.limit_for(PROVIDER).max_in_flight))
    run.chunks = chunk_count(snapshots, max_chunks=settings.max_task_runs)
    runtime.logger.info(
        "Checking %d profiles in %d snapshots (posts since %s)",
        run.total,
        snapshots,
        collect_since.date(),
    )
    await reporter.step(f"checking {run.total} profiles in {snapshots} snapshots")
    return run


async def _profile_batches(pages: Any, size: int) -> Any:
    async for batches in batched_pages(pages, size):
        yield [ProfileBatch(contacts) for contacts in batches]


async def check_batch(run: LinkedinRun, batch: ProfileBatch, tally: LinkedinTally) -> None:
    """One collection for the batch's profiles, counted in `tally`; its updates are
    written in batches. A settled batch (met again by a retried chunk) is left alone."""
    if batch.settled:
        return
    assert run.client is not None
    client, reporter = run.client, run.runtime.reporter
    contacts = batch.contacts
    skipped = [c for c in contacts if canonical_profile_url(c.linkedin_url) is None]
    contacts = [c for c in contacts if canonical_profile_url(c.linkedin_url) is not None]
    if not contacts:
        counts = LinkedinTally()
        await _queue(run, batch, [skipped_update(run, c, counts) for c in skipped])
        tally.add(counts)
        return
    urls = [c.linkedin_url for c in contacts]
    try:
        posts = await call_with_retries(
            lambda: client.collect(urls, start_date=run.collect_since),
            limiter=run.limiter,
            max_attempts=run.runtime.settings.max_attempts,
        )
    except SystemicError:
        raise
    except ProviderError as exc:
        # Retried `max_attempts` times already: report it, leave the contacts unchecked.
        counts = LinkedinTally(failed=len(contacts), failed_snapshots=1, errors=[str(exc)])
        await _queue(run, batch, [skipped_update(run, c, counts) for c in skipped])
        tally.add(counts)
        reporter.advance(len(contacts))
        return
    # Counted now, even if queuing the updates fails below: the snapshot was paid for.
    tally.add(
        LinkedinTally(snapshots=1, records=posts.usage.credits, cost_usd=posts.usage.cost_usd)
    )
    run.runtime.meter.add(posts.usage)
    checked = LinkedinTally()
    updates = [skipped_update(run, c, checked) for c in skipped]
    updates += updates_for(run, contacts, posts, checked)
    await _queue(run, batch, updates)
    tally.add(checked)


async def _queue(run: LinkedinRun, batch: ProfileBatch, updates: list[ContactUpdate]) -> None:
    """Queue the batch's updates and settle it (the caller counts it only then)."""
    assert run.writer is not None
    for update in updates:
        await run.writer.add(update)
    batch.settled = True
    run.runtime.reporter.advance(len(updates))


async def check_linkedin_chunk(run: LinkedinRun, chunk: Chunk) -> LinkedinTally:
    """One Bright Data snapshot per batch of profiles (trigger → progress → download),
    several at once under the account's limit, newest post per profile, results written
    in batches, until no batch is left.

    A snapshot that keeps failing after its retries is reported in the tally and its
    contacts stay unchecked; a retry of this chunk redoes only the batches its failed
    attempt did not settle, and the tally returned counts both attempts.
    """
    assert run.batches is not None
    state = run.states.setdefault(chunk.index, ChunkState(LinkedinTally()))
    await work_chunk(run.batches, state, run.window, lambda b: check_batch(run, b, state.tally))
    return dataclasses.replace(state.tally, errors=list(state.tally.errors))


async def finish_check(run: LinkedinRun, tallies: Sequence[LinkedinTally]) -> LinkedinSummary:
    """Write what is buffered and sum the chunks' tallies; every snapshot failing fails
    the job (Bright Data is down, not the profiles)."""
    runtime = run.runtime
    await runtime.flush_writers()
    tally = LinkedinTally()
    for chunk_tally in tallies:
        tally.add(chunk_tally)
    if tally.failed_snapshots and not tally.snapshots:
        raise Unavailable(
            f"every snapshot failed ({tally.failed_snapshots}); last: {tally.errors[-1]}",
            provider=PROVIDER,
        )
    if tally.failed:
        runtime.logger.warning(
            "%d contacts left unchecked: %d snapshots kept failing (%s)",
            tally.failed,
            tally.failed_snapshots,
            "; ".join(tally.errors[:MAX_ERRORS_SHOWN]),
        )
    usage = runtime.meter.by_provider().get(PROVIDER)
    cost = round(usage.cost_usd, 6) if usage else 0.0
    return LinkedinSummary(
        active=tally.active,
        inactive=tally.inactive,
        total=tally.active + tally.inactive,
        unreachable=tally.unreachable,
        invalid_urls=tally.invalid_url,
        failed=tally.failed,
        snapshots=tally.snapshots,
        failed_snapshots=tally.failed_snapshots,
        errors=tally.errors[:MAX_ERRORS_SHOWN],
        active_within_days=runtime.settings.linkedin_active_days,
        forced=run.forced,
        cost_usd=cost,
        usage={PROVIDER: {"credits": usage.credits if usage else 0.0, "costUsd": cost}},
        store_errors=runtime.rejected,
    )
