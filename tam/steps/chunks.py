"""Pending work as a stream, chunks that pull from it, and what a chunk keeps across retries.

A job never holds its whole input: a `PageStream` reads the store's keyset-paginated pages
at most `prefetch` pages ahead of the items in flight. A run has a fixed number of chunks
(each a Prefect task run under Prefect); every chunk pulls items from the one shared stream
while the run's window (a semaphore) has room, so the window slides across chunks and the
memory a run needs is the window and a few pages, whatever the job's size.

A chunk's `ChunkState` lives on the step's run object, keyed by the chunk's index: the
items it took and has not finished, and its tally. A retried chunk (the same index) first
redoes what its failed attempt left open, then pulls on; its tally still holds what the
failed attempt counted, so the tally a chunk returns is complete under retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tam.stores.base import StoreError

T = TypeVar("T")
R = TypeVar("R")


class StreamFailed(StoreError):
    """The next page of pending work could not be read; the stream cannot resume."""


@dataclass(frozen=True)
class Chunk:
    """Which of a run's chunks a task run is (its state's key, and its label)."""

    index: int
    of: int  # 0 while the run does not know yet (chunks formed as work arrives)

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.of}" if self.of else str(self.index + 1)


def chunk_count(total: int, *, max_chunks: int, min_size: int = 1) -> int:
    """How many chunks for `total` items: at most `max_chunks`, each worth ≥ `min_size`.

    Bounds the task runs per flow run: each costs Prefect bookkeeping (a few ms of loop time
    at start, state updates, UI rows), which pays off only when a chunk has real work.
    """
    if total <= 0:
        return 0
    return max(1, min(max_chunks, -(-total // max(min_size, 1))))


async def batched_pages(
    pages: AsyncIterator[Sequence[T]], size: int
) -> AsyncIterator[list[list[T]]]:
    """The items of `pages` regrouped in batches of `size` (the last may be short), handed
    on a page of batches at a time."""
    carry: list[T] = []
    async for page in pages:
        carry.extend(page)
        full = len(carry) - len(carry) % size
        if full:
            yield [carry[i : i + size] for i in range(0, full, size)]
            carry = carry[full:]
    if carry:
        yield [carry]


async def count_pages(pages: AsyncIterator[Sequence[object]]) -> int:
    """How many items `pages` has, a page at a time (for a read without a count query)."""
    return sum([len(page) async for page in pages])


class PageStream(Generic[T]):
    """Items of an async page iterator, read at most `prefetch` pages ahead.

    Safe to `take` from many chunks at once; `skip` drops items (e.g. answered by an
    earlier attempt) without handing them out.
    """

    def __init__(
        self,
        pages: AsyncIterator[Sequence[T]],
        *,
        prefetch: int = 2,
        skip: Callable[[T], bool] | None = None,
    ) -> None:
        self._pages = pages
        self._queue: asyncio.Queue[Sequence[T] | BaseException | None] = asyncio.Queue(
            maxsize=max(1, prefetch)
        )
        self._skip = skip
        self._page: deque[T] = deque()
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._failure: StreamFailed | None = None

    @classmethod
    def of(cls, items: Iterable[T], *, page_size: int = 100) -> PageStream[T]:
        """A stream over items already in memory (small plans: queries, batches)."""

        async def pages() -> AsyncIterator[Sequence[T]]:
            batch: list[T] = []
            for item in items:
                batch.append(item)
                if len(batch) >= page_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        return cls(pages())

    async def _read(self) -> None:
        try:
            async for page in self._pages:
                await self._queue.put(page)
        except Exception as exc:  # noqa: BLE001 - handed to the next taker
            await self._queue.put(exc)
            return
        await self._queue.put(None)

    async def take(self) -> T | None:
        """The next item, or None once the stream is exhausted."""
        while True:
            if self._page:
                item = self._page.popleft()
                if self._skip is not None and self._skip(item):
                    continue
                return item
            async with self._lock:
                if self._page:
                    continue
                if self._failure is not None:
                    raise self._failure
                if self._ended:
                    return None
                if self._reader is None:
                    self._reader = asyncio.get_running_loop().create_task(self._read())
                got = await self._queue.get()
                if got is None:
                    self._ended = True
                elif isinstance(got, BaseException):
                    self._failure = StreamFailed(f"could not read pending work: {got}")
                    self._failure.__cause__ = got
                else:
                    self._page.extend(got)

    async def aclose(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        aclose = getattr(self._pages, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


@dataclass
class ChunkState(Generic[T, R]):
    """One chunk's items in hand and its tally, kept across the chunk's retries."""

    tally: R
    open: dict[int, T] = field(default_factory=dict)
    _keys: itertools.count[int] = field(default_factory=itertools.count)


async def work_chunk(
    stream: PageStream[T],
    state: ChunkState[T, R],
    window: asyncio.Semaphore,
    work: Callable[[T], Awaitable[None]],
) -> None:
    """Run `work` for the items this chunk left open, then for items taken from `stream`
    until it ends; at most `window` items are in flight across the chunks sharing it.

    An item leaves `state.open` only when its work returned; the first error cancels the
    chunk's other items, which stay open for a retry.
    """

    async def one(key: int, item: T) -> None:
        try:
            await work(item)
            del state.open[key]
        finally:
            window.release()

    async with asyncio.TaskGroup() as group:
        for key, item in list(state.open.items()):
            await window.acquire()
            group.create_task(one(key, item))
        while True:
            await window.acquire()
            try:
                taken = await stream.take()
            except BaseException:
                window.release()
                raise
            if taken is None:
                window.release()
                break
            key = next(state._keys)
            state.open[key] = taken
            group.create_task(one(key, taken))
