"""The find_contacts chunk tasks: Prospeo search over groups of companies, then the email
waterfall over chunks of contacts (tam.steps.contacts) under the chunk policy."""

from __future__ import annotations

from tam.steps.contacts import email_chunk, search_chunk
from tasks.chunks import chunk_task

search_people_task = chunk_task(
    search_chunk, name="search-people", run_name="search people {chunk}"
)
find_emails_task = chunk_task(email_chunk, name="find-emails", run_name="find emails {chunk}")
