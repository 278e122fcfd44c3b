"""Prefect tasks for sourcing and refine: chunks of provider queries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from tam.batch_writer import BatchWriter
from tam.clients.discolike import DiscolikeClient
from tam.limiters import AccountLimiter
from tam.models import IcpProfile, NewCompany
from tam.steps.refine import RefinePlan, refine
from tam.steps.sourcing import SourceQuery, SourcingContext, source_chunk
from tasks.retries import retry_transient

# Contexts of the runs live in this process; tasks get a key, not the objects, so Prefect
# never has to serialize a client or a database pool.
CONTEXTS: dict[str, SourcingContext] = {}


@dataclass
class RefineRun:
    """What one refine run's task needs."""

    project_id: UUID
    icp: IcpProfile
    plan: RefinePlan
    client: DiscolikeClient
    limiter: AccountLimiter
    writer: BatchWriter[NewCompany]
    max_attempts: int
    min_digital_footprint: int | None


REFINE_RUNS: dict[str, RefineRun] = {}


@task(
    name="source-chunk",
    task_run_name="source {label}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
)
async def source_chunk_task(
    run_key: str,
    queries: list[SourceQuery],
    label: str,  # noqa: ARG001 - shown in the task run name
) -> None:
    """Run the chunk's Discolike / Google Places queries under each account's limiter.

    Companies are queued for batched upserts as they arrive; on a retry, queries that
    already finished are skipped and companies already queued are not queued again.
    """
    await source_chunk(CONTEXTS[run_key], queries)


@task(
    name="refine-discover",
    task_run_name="discover look-alikes of {seeds} seeds",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
)
async def refine_discover_task(
    run_key: str,
    seeds: int,  # noqa: ARG001 - shown in the task run name
) -> dict[str, Any]:
    """One Discolike discover call for the seeds; new companies are queued for insert."""
    run = REFINE_RUNS[run_key]
    result = await refine(
        run.project_id,
        run.icp,
        run.plan,
        client=run.client,
        limiter=run.limiter,
        writer=run.writer,
        max_attempts=run.max_attempts,
        min_digital_footprint=run.min_digital_footprint,
    )
    return asdict(result)
