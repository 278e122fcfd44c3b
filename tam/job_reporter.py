"""Keeps one tam_job_queue row true from start to end: status, progress, heartbeat, summary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tam.job_transitions import Move, Writer, guard
from tam.models import Job, JobStatus, JobUpdate
from tam.stores.base import Store, StoreError

ProgressSink = Callable[[int, str | None], Awaitable[None]]

ACTIVE = (JobStatus.pending, JobStatus.running)


class ClaimRefused(StoreError):
    """The job row may not be claimed (it completed, or is gone): the run must not work."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobReporter:
    """Moves a job row through running → completed / failed / cancelled.

    Progress is written at most every `progress_interval_s` (the frontend polls every few
    seconds; more writes would only load the database) and always as 100 at the end.
    A heartbeat is written every `heartbeat_interval_s` even when nothing moves, so the
    reaper can tell a slow job from a dead one. Every write is a compare-and-set with the
    run's guard from tam.job_transitions: only while this run owns the row (its
    flow_run_id), so an older attempt or a late hook never overwrites the newer state.
    """

    def __init__(
        self,
        store: Store,
        job_id: UUID,
        *,
        progress_interval_s: float = 1.0,
        heartbeat_interval_s: float = 10.0,
        sink: ProgressSink | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.progress_interval_s = progress_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self._sink = sink
        self._log = logger or logging.getLogger(__name__)
        self.total = 0
        self.done = 0
        # What the run spent so far: the job runtime points this at its cost meter (the
        # one way cost reaches the row); a reporter on its own reports 0.
        self.cost_source: Callable[[], float] = lambda: 0.0
        self.step_text: str | None = None
        self._dirty = False
        self._last_write = 0.0
        self._pump_task: asyncio.Task[None] | None = None
        self._written_progress = -1
        self.flow_run_id: UUID | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, *, flow_run_id: UUID | None, step: str, job: Job | None = None) -> Job:
        """Claim the job: mark it running, started now (one UPDATE). `job` is the row as the
        caller just read it; without it the row is read here. Raises ClaimRefused when the
        row is completed: a duplicate run must not redo finished work over its result."""
        job = job or await self.store.get_job(self.job_id)
        now = utcnow()
        self.step_text = step
        self.flow_run_id = flow_run_id
        claimed = await self.store.update_job(
            self.job_id,
            JobUpdate(
                status=JobStatus.running,
                progress=0,
                started_at=now,
                heartbeat_at=now,
                current_step=step,
                flow_run_id=flow_run_id,
                attempt=job.attempt + 1,
                done_count=0,
                total_count=0,
                # A re-run after a failure must not keep the old error or completion time.
                clear_result=True,
            ),
            guard=guard(Writer.run, Move.claim),
        )
        if not claimed:
            raise ClaimRefused(f"job {self.job_id} is {job.status.value}: not started again")
        self._last_write = time.monotonic()
        self._pump_task = asyncio.create_task(self._pump())
        return job

    async def complete(self, summary: dict[str, Any]) -> bool:
        return await self._finish(JobStatus.completed, summary, progress=100)

    async def fail(self, message: str, **extra: Any) -> bool:
        return await self._finish(JobStatus.failed, {"error": message, **extra})

    async def cancel(self, message: str = "Cancelled") -> bool:
        return await self._finish(JobStatus.cancelled, {"error": message, "cancelled": True})

    # --- progress ------------------------------------------------------------------------
    def set_total(self, total: int) -> None:
        self.total = total
        self._dirty = True

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._dirty = True

    @property
    def cost_usd(self) -> float:
        return self.cost_source()

    async def step(self, text: str) -> None:
        """Show a new step. Written now unless a write went out within the progress
        interval (flows announce two or three steps in their first second; the pump writes
        the latest one at its next tick)."""
        self.step_text = text
        self._dirty = True
        await self._write_progress(force=False)

    @property
    def progress(self) -> int:
        if self.total <= 0:
            return 0
        # 100 is reserved for "completed": a job at 100 must also be final.
        return min(99, int(self.done * 100 / self.total))

    # --- internals -----------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            await asyncio.sleep(max(self.progress_interval_s, 0.05))
            due = time.monotonic() - self._last_write >= self.heartbeat_interval_s
            if self._dirty or due:
                await self._write_progress(force=False)

    async def _write_progress(self, *, force: bool) -> None:
        now_mono = time.monotonic()
        if not force and now_mono - self._last_write < self.progress_interval_s:
            return
        self._dirty = False
        self._last_write = now_mono
        progress = self.progress
        try:
            await self.store.update_job(
                self.job_id,
                JobUpdate(
                    # NOTE: status and the emptied result restate the claim, so a
                    # dispatch-failure mark made while this run was alive is undone.
                    status=JobStatus.running,
                    clear_result=True,
                    progress=progress,
                    done_count=self.done,
                    total_count=self.total,
                    current_step=self.step_text,
                    heartbeat_at=utcnow(),
                    cost_usd=round(self.cost_usd, 6),
                ),
                guard=guard(Writer.run, Move.progress, flow_run_id=self.flow_run_id),
            )
        except StoreError as exc:
            # The run goes on; the next tick writes again.
            self._dirty = True
            self._log.warning("Could not write job progress: %s", exc)
            return
        if self._sink is not None and progress != self._written_progress:
            self._written_progress = progress
            try:
                await self._sink(progress, self.step_text)
            except Exception as exc:  # noqa: BLE001 - an artifact must never fail the job
                self._log.warning("Could not update the progress artifact: %s", exc)

    async def _stop_pump(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
            self._pump_task = None

    async def _finish(
        self, status: JobStatus, summary: dict[str, Any], *, progress: int | None = None
    ) -> bool:
        await self._stop_pump()
        update = JobUpdate(
            status=status,
            result_summary=summary,
            completed_at=utcnow(),
            heartbeat_at=utcnow(),
            progress=progress,
            done_count=self.done,
            total_count=self.total,
            current_step="done" if status == JobStatus.completed else self.step_text,
            cost_usd=round(self.cost_usd, 6),
        )
        move = {
            JobStatus.completed: Move.complete,
            JobStatus.failed: Move.fail,
            JobStatus.cancelled: Move.cancel,
        }[status]
        cas = guard(Writer.run, move, flow_run_id=self.flow_run_id)
        delay = 0.5
        deadline = time.monotonic() + 120
        while True:
            try:
                changed = await self.store.update_job(self.job_id, update, guard=cas)
                break
            except StoreError as exc:
                if time.monotonic() > deadline:
                    raise
                self._log.warning("Could not write the final job state, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)
        if changed and self._sink is not None and progress is not None:
            with contextlib.suppress(Exception):
                await self._sink(progress, update.current_step)
        return changed
