"""check_linkedin: who posted on LinkedIn lately, from Bright Data's posts dataset.

No Prefect here. Each batch of profiles is ONE collection (trigger → progress → snapshot),
retried as a whole when the snapshot fails; a batch whose snapshot keeps failing is
reported and its contacts stay unchecked, so a re-run picks them up. Only linkedin.com
person profiles are sent (as ``https://www.linkedin.com/in/<slug>``); a contact whose URL is
anything else is not bought: it is marked checked, inactive and counted `invalid_url`.

The run's tally lives in the context and grows only when a batch's updates are queued, so a
retried chunk task (which skips the batches already done) never under- or over-counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.brightdata import (
    BrightDataClient,
    ProfilePosts,
    canonical_profile_url,
    normalize_profile_url,
)
from tam.errors import ProviderError, SystemicError
from tam.job_reporter import JobReporter
from tam.limiters import AccountLimiter
from tam.models import Contact, ContactUpdate


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


@dataclass
class LinkedinContext:
    """Everything one check_linkedin run shares between its chunks."""

    client: BrightDataClient
    limiter: AccountLimiter
    writer: BatchWriter[ContactUpdate]
    reporter: JobReporter
    max_attempts: int
    checked_at: datetime
    active_since: datetime  # a post at or after this makes a contact active
    collect_since: datetime  # how far back posts are collected
    done: set[UUID] = field(default_factory=set)
    # Contacts whose snapshot kept failing: reported once, not bought again by a task retry.
    given_up: set[UUID] = field(default_factory=set)
    tally: LinkedinTally = field(default_factory=LinkedinTally)  # the whole run's


def windows(now: datetime, *, active_days: int, lookback_days: int) -> tuple[datetime, datetime]:
    """(active_since, collect_since) for a check made at `now`."""
    return now - timedelta(days=active_days), now - timedelta(days=max(lookback_days, active_days))


def updates_for(
    ctx: LinkedinContext, contacts: Sequence[Contact], posts: ProfilePosts, tally: LinkedinTally
) -> list[ContactUpdate]:
    """One update per contact: newest post date, active flag, checked-at."""
    newest = {normalize_profile_url(url): posts.last_post_date(url) for url in posts.posts}
    failed = {normalize_profile_url(url) for url in posts.errors}
    updates = []
    for contact in contacts:
        key = normalize_profile_url(contact.linkedin_url)
        last = newest.get(key)
        active = last is not None and last >= ctx.active_since
        tally.active += active
        tally.inactive += not active
        tally.unreachable += key in failed
        updates.append(
            ContactUpdate(
                contact_id=contact.id,
                linkedin_last_post_date=last,
                linkedin_active=active,
                linkedin_checked_at=ctx.checked_at,
            )
        )
    return updates


def skipped_update(ctx: LinkedinContext, contact: Contact, tally: LinkedinTally) -> ContactUpdate:
    """A contact whose URL is no profile: checked, inactive, never sent."""
    tally.invalid_url += 1
    tally.unreachable += 1
    tally.inactive += 1
    return ContactUpdate(
        contact_id=contact.id,
        linkedin_last_post_date=None,
        linkedin_active=False,
        linkedin_checked_at=ctx.checked_at,
    )


async def check_batch(ctx: LinkedinContext, contacts: Sequence[Contact]) -> LinkedinTally:
    """One collection for the batch's profiles; its updates are written in batches.

    Returns the batch's tally; the same counts are added to `ctx.tally` once the batch's
    updates are queued (the run's summary reads that one).
    """
    tally = LinkedinTally()
    contacts = [c for c in contacts if c.id not in ctx.done and c.id not in ctx.given_up]
    if not contacts:
        return tally
    skipped = [c for c in contacts if canonical_profile_url(c.linkedin_url) is None]
    if skipped:
        for contact in skipped:
            await ctx.writer.add(skipped_update(ctx, contact, tally))
        _settle(ctx, skipped, tally)
        contacts = [c for c in contacts if c.id not in ctx.done]
        if not contacts:
            return tally
    urls = [c.linkedin_url for c in contacts]
    try:
        posts = await call_with_retries(
            lambda: ctx.client.collect(urls, start_date=ctx.collect_since),
            limiter=ctx.limiter,
            max_attempts=ctx.max_attempts,
        )
    except SystemicError:
        raise
    except ProviderError as exc:
        # Retried `max_attempts` times already: report it, leave the contacts unchecked.
        failed = LinkedinTally(failed=len(contacts), failed_snapshots=1, errors=[str(exc)])
        ctx.given_up.update(c.id for c in contacts)
        ctx.tally.add(failed)
        tally.add(failed)
        ctx.reporter.advance(len(contacts))
        return tally
    bought = LinkedinTally(snapshots=1, records=posts.usage.credits, cost_usd=posts.usage.cost_usd)
    # Counted now, even if queuing the updates fails below: the snapshot was paid for.
    ctx.tally.add(bought)
    tally.add(bought)
    ctx.reporter.cost_usd += posts.usage.cost_usd
    checked = LinkedinTally()
    for update in updates_for(ctx, contacts, posts, checked):
        await ctx.writer.add(update)
    _settle(ctx, contacts, checked)
    tally.add(checked)
    return tally


def _settle(ctx: LinkedinContext, contacts: Sequence[Contact], counts: LinkedinTally) -> None:
    """The contacts' updates are queued: mark them done and count them for the run."""
    ctx.done.update(c.id for c in contacts)
    ctx.tally.add(counts)
    ctx.reporter.advance(len(contacts))


async def check_chunk(ctx: LinkedinContext, batches: Sequence[Sequence[Contact]]) -> LinkedinTally:
    """Several collections at once; the Bright Data limiter caps snapshots in flight."""
    async with asyncio.TaskGroup() as group:
        futures = [group.create_task(check_batch(ctx, batch)) for batch in batches]
    total = LinkedinTally()
    for future in futures:
        total.add(future.result())
    return total
