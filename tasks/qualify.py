"""Prefect task for qualify: one chunk of companies per task run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import aget_state_exception

from tam.batch_writer import WriterFailed
from tam.errors import ProviderError, SystemicError
from tam.failures import root_cause
from tam.models import Company
from tam.steps.qualify import QualifyContext, qualify_chunk
from tam.stores.base import StoreError

# Contexts of the runs live in this process; tasks get a key, not the objects, so Prefect
# never has to serialize a client or a database pool.
CONTEXTS: dict[str, QualifyContext] = {}


async def retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a chunk after an outage or a database hiccup, never after a systemic error."""
    try:
        exc = await aget_state_exception(state)
    except Exception:  # noqa: BLE001 - a state without an exception is not worth a retry
        return False
    cause = root_cause(exc)
    # A writer that already waited out its outage budget stays failed: a retry would only
    # buy answers it cannot write.
    if isinstance(cause, SystemicError | WriterFailed):
        return False
    return isinstance(cause, ProviderError | StoreError)


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
