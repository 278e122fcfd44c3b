"""Prefect task for check_linkedin: a few Bright Data collections per task run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tam.models import Contact
from tam.steps.linkedin import LinkedinContext, check_chunk
from tasks.retries import retry_transient

# Contexts of the runs live in this process; tasks get a key, not the objects, so Prefect
# never has to serialize a client or a database pool.
CONTEXTS: dict[str, LinkedinContext] = {}


@task(
    name="check-linkedin-posts",
    task_run_name="linkedin posts {label}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=retry_transient,
)
async def check_linkedin_task(
    run_key: str,
    batches: list[list[Contact]],
    label: str,  # noqa: ARG001 - shown in the task run name
) -> dict[str, Any]:
    """One Bright Data snapshot per batch of profiles (trigger → progress → download),
    newest post per profile, results written in batches.

    A snapshot that keeps failing after its retries is reported in the tally and its
    contacts stay unchecked; on a task retry, batches already written are skipped. Returns
    this attempt's counts (for the UI); the flow's summary reads the run's own tally.
    """
    return asdict(await check_chunk(CONTEXTS[run_key], batches))
