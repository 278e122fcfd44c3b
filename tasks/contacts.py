"""Prefect tasks for find_contacts: Prospeo search over groups of companies, then the email
waterfall over chunks of contacts."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tam.models import Company, Contact
from tam.steps.contacts import ContactsContext, email_chunk, search_chunk
from tasks.retries import retry_transient

# Contexts of the runs live in this process; tasks get a key, not the objects, so Prefect
# never has to serialize a client or a database pool.
CONTEXTS: dict[str, ContactsContext] = {}


@task(
    name="search-people",
    task_run_name="search people {label}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
)
async def search_people_task(
    run_key: str,
    groups: list[list[Company]],
    label: str,  # noqa: ARG001 - shown in the task run name
) -> None:
    """Prospeo person search for each group of ≤ 500 companies (every page, concurrently
    under the Prospeo limiter), keeping at most `contactsPerCompany` per company.

    New contacts are upserted in batches and handed to the email tasks as they land; on a
    retry, companies already searched are skipped.
    """
    await search_chunk(CONTEXTS[run_key], groups)


@task(
    name="find-emails",
    task_run_name="find emails {label}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
)
async def find_emails_task(
    run_key: str,
    contacts: list[Contact],
    label: str,  # noqa: ARG001 - shown in the task run name
) -> None:
    """The email waterfall (Prospeo enrich → Hunter → NeverBounce) for each contact,
    concurrently under each provider's limiter. On a retry, contacts already answered are
    skipped, so no email is bought twice."""
    await email_chunk(CONTEXTS[run_key], contacts)
