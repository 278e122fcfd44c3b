"""Steps run through a `JobRuntime` built here: no Prefect, the emulators and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import pytest

from tam.job_reporter import JobReporter
from tam.models import JobType
from tam.runtime import JobRuntime
from tam.settings import get_settings
from tam.steps.chunks import Chunk
from tam.stores import open_store

R = TypeVar("R")
S = TypeVar("S")

Opener = Callable[..., contextlib.AbstractAsyncContextManager[JobRuntime]]


@pytest.fixture
def open_runtime(tam_env: dict[str, str]) -> Opener:
    """`async with open_runtime(job_type, project_id, job_id) as runtime:` — the job row is
    claimed as a run would, and the runtime closed (clean unless the body raised)."""

    @contextlib.asynccontextmanager
    async def opener(
        job_type: JobType, project_id: UUID, job_id: UUID
    ) -> AsyncIterator[JobRuntime]:
        settings = get_settings()
        store = open_store(settings=settings)
        reporter = JobReporter(store, job_id, progress_interval_s=0.05)
        await reporter.start(flow_run_id=None, step="starting")
        runtime = JobRuntime(
            job_type=job_type,
            project_id=project_id,
            job_id=job_id,
            settings=settings,
            store=store,
            reporter=reporter,
        )
        clean = False
        try:
            yield runtime
            clean = True
        finally:
            await runtime.close(clean=clean)

    return opener


async def _run_all(fn: Callable[[S, Chunk], Awaitable[R]], run: S, chunks: int) -> list[R]:
    return list(await asyncio.gather(*(fn(run, Chunk(i, chunks)) for i in range(chunks))))


@pytest.fixture
def run_all() -> Callable[..., Awaitable[list[Any]]]:
    """What tasks.chunks.run_chunks does, without Prefect: every chunk of a run at once."""
    return _run_all
