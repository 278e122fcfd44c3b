"""Who may move a tam_job_queue row, and from where: the one table (docs/contracts.md,
"Who moves the job row", says it in prose).

Every writer of the job row — the run itself (JobReporter), the flow hooks, the dispatch
webhook and the reaper — asks `guard(writer, move, ...)` for the condition the row must meet,
and hands it to `Store.update_job(..., guard=...)`, which applies it as a compare-and-set in
the same statement as the write. The check and the write therefore cannot be interleaved
with another writer's, whatever process or machine it runs on.

The Edge Function (TypeScript, deployments/edge-function/) keeps its own copy of its one
rule; `EDGE_FUNCTION_FROM` is that rule here, so a test can compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from uuid import UUID

from tam.models import Job, JobStatus

# A job waiting for a worker: `running` with this step text, `started_at` NULL, and
# `heartbeat_at` = when it was queued (so "how long" is now - heartbeat_at).
QUEUED_STEP = "queued"

# The Edge Function moves a job to `running` from these statuses only, never from completed.
EDGE_FUNCTION_FROM: tuple[JobStatus, ...] = (
    JobStatus.pending,
    JobStatus.failed,
    JobStatus.cancelled,
)

NOT_COMPLETED = frozenset(
    {JobStatus.pending, JobStatus.running, JobStatus.failed, JobStatus.cancelled}
)
ACTIVE = frozenset({JobStatus.pending, JobStatus.running})
RUNNING = frozenset({JobStatus.running})


class Writer(StrEnum):
    """Who writes the row."""

    edge_function = "edge_function"
    webhook = "webhook"
    run = "run"  # the flow run that owns flow_run_id (JobReporter)
    hook = "hook"  # the flow's crash / cancellation / failure hooks
    reaper = "reaper"


class Move(StrEnum):
    """What the writer does to the row."""

    dispatch = "dispatch"  # → running (the Edge Function, before it calls the webhook)
    new_attempt = "new_attempt"  # → running, queued for a worker, with a new flow run
    dispatch_failed = "dispatch_failed"  # → failed: the run could not be started
    restore_completed = "restore_completed"  # → completed: the row lost its run's result
    claim = "claim"  # → running: a worker starts the run
    progress = "progress"  # running → running: progress, heartbeat, step text
    complete = "complete"  # → completed
    fail = "fail"  # → failed
    cancel = "cancel"  # → cancelled


class TransitionNotAllowed(ValueError):
    """The table has no row for this (writer, move): that writer never makes that move."""


class _Unset(Enum):
    token = 0


_UNSET = _Unset.token


@dataclass(frozen=True)
class RowCondition:
    """One way a row may qualify for a write: every condition that is set holds."""

    statuses: frozenset[JobStatus]
    # With `check_run`, the row's flow_run_id must be `flow_run_id` (None: must be NULL).
    check_run: bool = False
    flow_run_id: UUID | None = None
    # True: started_at must be set (a run claimed the row); False: must be NULL.
    started: bool | None = None
    # result_summary.dispatch = true: the failure was the webhook's, not the run's.
    dispatch_failed: bool = False
    # The row's last sign of life (heartbeat, else started, else created) is older.
    stale_before: datetime | None = None

    def admits(self, job: Job) -> bool:
        """The same test the store applies in SQL, on a row already read."""
        if job.status not in self.statuses:
            return False
        if self.check_run and job.flow_run_id != self.flow_run_id:
            return False
        if self.started is not None and (job.started_at is not None) != self.started:
            return False
        if self.dispatch_failed and (job.result_summary or {}).get("dispatch") is not True:
            return False
        if self.stale_before is not None:
            seen = job.heartbeat_at or job.started_at or job.created_at
            if seen is None or seen >= self.stale_before:
                return False
        return True


@dataclass(frozen=True)
class JobGuard:
    """The compare-and-set of one write: the row must meet any one of `any_of`."""

    any_of: tuple[RowCondition, ...] = field(default_factory=tuple)

    def admits(self, job: Job) -> bool:
        return any(condition.admits(job) for condition in self.any_of)

    @classmethod
    def statuses(cls, statuses: Iterable[JobStatus | str]) -> JobGuard:
        """The plain guard `status in statuses` (Store.update_job's `only_if_status`)."""
        return cls((RowCondition(frozenset(JobStatus(s) for s in statuses)),))


def _owned_by(run_id: UUID | None, statuses: frozenset[JobStatus]) -> RowCondition:
    # NOTE: a run outside Prefect (no flow run id) has no id to compare; it claimed the row
    # without setting flow_run_id, so only the status is checked.
    if run_id is None:
        return RowCondition(statuses)
    return RowCondition(statuses, check_run=True, flow_run_id=run_id)


def _run_writes(run_id: UUID | None) -> JobGuard:
    """The owning run's progress and final writes: while its row is running, and over a
    dispatch-failure mark the webhook made while the run was alive."""
    return JobGuard(
        (
            _owned_by(run_id, RUNNING),
            RowCondition(
                frozenset({JobStatus.failed}),
                check_run=run_id is not None,
                flow_run_id=run_id,
                dispatch_failed=True,
            ),
        )
    )


def guard(
    writer: Writer,
    move: Move,
    *,
    flow_run_id: UUID | None | _Unset = _UNSET,
    stale_before: datetime | None = None,
) -> JobGuard:
    """The condition the row must meet for `writer` to make `move` (docs/contracts.md,
    "Who moves the job row").

    `flow_run_id` is the writer's own run (run, hook), or the run the webhook or the reaper
    saw on the row when it decided (None: the row had none). Raises TransitionNotAllowed for
    a move that writer never makes, and ValueError when a needed argument is missing.
    """
    seen = None if isinstance(flow_run_id, _Unset) else flow_run_id
    needs_run = (writer, move) not in {
        (Writer.edge_function, Move.dispatch),
        (Writer.run, Move.claim),
    }
    if needs_run and isinstance(flow_run_id, _Unset):
        raise ValueError(f"{writer.value} {move.value}: flow_run_id is required")

    match writer, move:
        case Writer.edge_function, Move.dispatch:
            return JobGuard((RowCondition(frozenset(EDGE_FUNCTION_FROM)),))
        case Writer.webhook, Move.new_attempt:
            # Only over the run the webhook saw: if a run claimed the row (or another
            # dispatch recorded its run) meanwhile, that one stands.
            return JobGuard((RowCondition(NOT_COMPLETED, check_run=True, flow_run_id=seen),))
        case Writer.webhook, Move.dispatch_failed:
            # Only when no live run exists: the row has no run, or the one the webhook
            # found final. A run claiming the row meanwhile changes nothing either: it
            # set flow_run_id, or (no run recorded yet) it may override the mark.
            return JobGuard((RowCondition(NOT_COMPLETED, check_run=True, flow_run_id=seen),))
        case Writer.webhook, Move.restore_completed:
            # An older Edge Function moved a completed job back; its run says Completed.
            return JobGuard((RowCondition(ACTIVE, check_run=True, flow_run_id=seen),))
        case Writer.webhook, Move.cancel:
            # No live run (never dispatched, gone, or ended Cancelled): end the row here.
            return JobGuard((RowCondition(ACTIVE, check_run=True, flow_run_id=seen),))
        case Writer.run, Move.claim:
            # A new attempt started anywhere (webhook, CLI, Prefect UI retry): never from
            # completed, so a duplicate run cannot redo finished work over its result.
            return JobGuard((RowCondition(NOT_COMPLETED),))
        case Writer.run, Move.progress | Move.complete | Move.fail | Move.cancel:
            return _run_writes(seen)
        case Writer.hook, Move.fail | Move.cancel:
            # NOTE: a hook of an older attempt must not end the attempt that replaced it.
            return JobGuard((_owned_by(seen, ACTIVE),))
        case Writer.reaper, Move.fail:
            if stale_before is None:
                raise ValueError("reaper fail: stale_before is required")
            return JobGuard(
                (
                    RowCondition(
                        RUNNING,
                        check_run=True,
                        flow_run_id=seen,
                        started=True,
                        stale_before=stale_before,
                    ),
                )
            )
    raise TransitionNotAllowed(f"{writer.value} never makes the move {move.value}")


# Every (writer, move) the table has, for tests and docs.
TABLE: tuple[tuple[Writer, Move], ...] = (
    (Writer.edge_function, Move.dispatch),
    (Writer.webhook, Move.new_attempt),
    (Writer.webhook, Move.dispatch_failed),
    (Writer.webhook, Move.restore_completed),
    (Writer.webhook, Move.cancel),
    (Writer.run, Move.claim),
    (Writer.run, Move.progress),
    (Writer.run, Move.complete),
    (Writer.run, Move.fail),
    (Writer.run, Move.cancel),
    (Writer.hook, Move.fail),
    (Writer.hook, Move.cancel),
    (Writer.reaper, Move.fail),
)
