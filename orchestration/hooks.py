"""Flow state hooks: whatever ends a flow run, its job row ends final too.

The flow body marks its own failures; these hooks catch what it cannot see (a crash, a
cancellation from the UI, a failure before the body ran). Writes are compare-and-set with
the hook's guard from tam.job_transitions: an active row whose flow_run_id is this run, so
they never overwrite a state the flow already wrote, nor a newer attempt's row.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tam.failures import redact
from tam.job_reporter import utcnow
from tam.job_transitions import Move, Writer, guard
from tam.models import JobStatus, JobUpdate
from tam.settings import get_settings
from tam.stores import open_store


def _run_id(flow_run: Any) -> UUID | None:
    try:
        return UUID(str(flow_run.id))
    except (TypeError, ValueError):
        return None


def _job_id(flow_run: Any) -> UUID | None:
    raw = (flow_run.parameters or {}).get("job_id") or flow_run.id
    try:
        return UUID(str(raw))
    except ValueError:
        return None


async def _mark(flow_run: Any, status: JobStatus, message: str) -> None:
    job_id = _job_id(flow_run)
    if job_id is None:
        return
    settings = get_settings()
    store = open_store(settings=settings)
    move = Move.cancel if status == JobStatus.cancelled else Move.fail
    try:
        await store.update_job(
            job_id,
            JobUpdate(
                status=status,
                result_summary={"error": redact(message, settings.secret_values())},
                completed_at=utcnow(),
            ),
            guard=guard(Writer.hook, move, flow_run_id=_run_id(flow_run)),
        )
    finally:
        await store.close()


async def mark_job_failed(_flow: Any, flow_run: Any, state: Any) -> None:
    await _mark(flow_run, JobStatus.failed, state.message or "Flow run failed")


async def mark_job_crashed(_flow: Any, flow_run: Any, state: Any) -> None:
    await _mark(flow_run, JobStatus.failed, f"Flow run crashed: {state.message or 'no detail'}")


async def mark_job_cancelled(_flow: Any, flow_run: Any, _state: Any) -> None:
    await _mark(flow_run, JobStatus.cancelled, "Cancelled by user")


JOB_HOOKS: dict[str, Any] = {
    "on_failure": [mark_job_failed],
    "on_crashed": [mark_job_crashed],
    "on_cancellation": [mark_job_cancelled],
}
