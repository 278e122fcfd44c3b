"""Prefect task for qualify: one chunk of companies per task run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tam.models import Company
from tam.steps.qualify import QualifyContext, qualify_chunk
from tasks.retries import retry_transient

# Contexts of the runs live in this process; tasks get a key, not the objects, so Prefect
# never has to serialize a client or a database pool.
CONTEXTS: dict[str, QualifyContext] = {}


@task(
    name="qualify-chunk",
    task_run_name="qualify {label}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
)
async def qualify_chunk_task(
    run_key: str,
    companies: list[Company],
    label: str,  # noqa: ARG001 - shown in the task run name
) -> dict[str, Any]:
    """Ask Claude about each company of the chunk, concurrently under the account's limit.

    Verdicts are written in batches as they arrive. On a retry, companies that already got
    an answer in this run are skipped (see `qualify_chunk`), so no company is sent to
    Claude twice.
    """
    return asdict(await qualify_chunk(CONTEXTS[run_key], companies))
