"""The one chunk policy every chunk task runs under, and the one helper that runs chunks.

A chunk task is a step function of tam.steps wrapped with `chunk_task`: it takes the step's
run object (which holds the job's `JobRuntime`) and a `Chunk`, and returns the chunk's
typed tally. Both arguments go in `quote`d: Prefect visits every parameter of a task run
twice (dependency tracking, future resolution), which for a run object would walk the store
and clients; nothing of a run is ever a future, so it opts out and the task receives the
object itself (in-flow task runs never serialize their parameters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from tam.steps.chunks import Chunk
from tasks.retries import retry_transient

S = TypeVar("S")
R = TypeVar("R")

# A chunk that met an outage or a database hiccup its calls' own retries outlived is run
# again after 5 s, then 30 s (see tasks.retries for what counts, tam.runtime for the layers).
CHUNK_RETRIES = 2
CHUNK_RETRY_DELAYS_S: list[float] = [5, 30]


ChunkFn = Callable[[S, Chunk], Coroutine[Any, Any, R]]
ChunkTask = Task[[S, Chunk], Coroutine[Any, Any, R]]


def chunk_task(fn: ChunkFn[S, R], *, name: str, run_name: str) -> ChunkTask[S, R]:
    """`fn` as a Prefect task under the chunk policy; `run_name` may use `{chunk}`."""
    wrapped: ChunkTask[S, R] = task(
        name=name,
        task_run_name=run_name,
        cache_policy=NO_CACHE,
        retries=CHUNK_RETRIES,
        retry_delay_seconds=CHUNK_RETRY_DELAYS_S,
        retry_condition_fn=retry_transient,
    )(fn)
    return wrapped


async def run_chunks(chunk: ChunkTask[S, R], run: S, chunks: int) -> list[R]:
    """Run `chunks` task runs of `chunk` over `run` concurrently; their results in order.
    The first chunk that fails for good cancels the others and fails the flow."""
    async with asyncio.TaskGroup() as group:
        futures = [
            group.create_task(_call(chunk, run, Chunk(index, chunks))) for index in range(chunks)
        ]
    return [future.result() for future in futures]


async def _call(chunk: ChunkTask[S, R], run: S, which: Chunk) -> R:
    # NOTE: the quoted run is unwrapped by Prefect before the function sees it.
    call: Any = chunk
    result: R = await call(quote(run), which)
    return result


async def run_fed_chunks(
    chunk: ChunkTask[S, R], run: S, feed: asyncio.Queue[Chunk | None]
) -> list[R]:
    """A task run of `chunk` for each `Chunk` put on `feed` (as work is found), until a
    None; their results in the order they were fed."""
    async with asyncio.TaskGroup() as group:
        futures = []
        while (which := await feed.get()) is not None:
            futures.append(group.create_task(_call(chunk, run, which)))
    return [future.result() for future in futures]
