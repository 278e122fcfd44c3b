"""When a chunk task run is retried: after an outage or a database hiccup, never after a
systemic error or a writer that already gave up (every chunk task uses this)."""

from __future__ import annotations

from typing import Any

from prefect.states import aget_state_exception

from tam.batch_writer import WriterFailed
from tam.errors import ProviderError, SystemicError
from tam.failures import root_cause
from tam.stores.base import StoreError


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
