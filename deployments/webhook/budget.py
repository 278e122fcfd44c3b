"""Bounds on the webhook's own work: one time budget for a request's Prefect calls, and one
cancellation watcher per job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID

from deployments.webhook.dispatch import Dispatcher, PrefectUnavailable, RunInfo, RunSpec

T = TypeVar("T")


class BudgetedDispatcher:
    """One request's view of the dispatcher: all its Prefect calls share one deadline.

    The Edge Function gives up after 25 s and then reports a network error, not the
    reason; the webhook stops waiting for Prefect at the budget (its client's timeout
    and retries could take longer) and answers 502 itself. The clock starts when the
    request does, so database work before the Prefect calls counts too.
    """

    def __init__(self, inner: Dispatcher, budget_s: float) -> None:
        self.inner = inner
        self.budget_s = budget_s
        # NOTE: monotonic time, not the loop's: FastAPI builds sync dependencies in a thread.
        self._deadline = time.monotonic() + budget_s

    async def _within(self, call: Awaitable[T]) -> T:
        timeout = asyncio.timeout(max(self._deadline - time.monotonic(), 0.0))
        try:
            async with timeout:
                return await call
        except TimeoutError:
            if not timeout.expired():
                raise
            raise PrefectUnavailable(
                f"Prefect did not answer within the webhook's {self.budget_s:g} s dispatch "
                "budget (TAM_DISPATCH_BUDGET_S)"
            ) from None

    async def start_run(self, spec: RunSpec) -> RunInfo:
        return await self._within(self.inner.start_run(spec))

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        return await self._within(self.inner.read_run(flow_run_id))

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        return await self._within(self.inner.cancel_run(flow_run_id))

    async def check(self) -> None:
        await self._within(self.inner.check())

    def run_url(self, flow_run_id: UUID) -> str | None:
        return self.inner.run_url(flow_run_id)


class CancelWatchers:
    """The running cancellation watchers by job: a second cancel of a job whose watcher
    still runs gets that one, not another polling Prefect for the same run."""

    def __init__(self, background: set[asyncio.Task[None]]) -> None:
        # `background` is every task the app cancels when it stops.
        self._background = background
        self._by_job: dict[UUID, asyncio.Task[None]] = {}

    def start(
        self, job_id: UUID, watch: Callable[[], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None]:
        """The job's watcher; `watch()` is called (and so the coroutine made) only when
        the job has none running."""
        running = self._by_job.get(job_id)
        if running is not None and not running.done():
            return running
        task = asyncio.create_task(watch(), name=f"watch-cancellation-{job_id}")
        self._by_job[job_id] = task
        self._background.add(task)
        task.add_done_callback(lambda done: self._forget(job_id, done))
        return task

    def _forget(self, job_id: UUID, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if self._by_job.get(job_id) is task:
            del self._by_job[job_id]

    def get(self, job_id: UUID) -> asyncio.Task[None] | None:
        return self._by_job.get(job_id)

    def __len__(self) -> int:
        return len(self._by_job)
