"""Buffers results and writes them in batches: ≤ 1 round trip per batch, never per row."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from tam.stores.base import StoreError

T = TypeVar("T")


class WriterFailed(StoreError):
    """The database stayed unreachable longer than the writer may hold results."""


class BatchWriter(Generic[T]):
    """Collects items and flushes them when `batch_size` is reached or `interval_s` passes.

    A failed flush keeps its items and is retried with backoff (the database may be
    restarting); after `max_outage_s` without a successful write the writer gives up and
    raises `WriterFailed`, so the job fails instead of silently dropping results.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[None]],
        *,
        batch_size: int = 100,
        interval_s: float = 1.0,
        max_outage_s: float = 120.0,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._flush_fn = flush
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_outage_s = max_outage_s
        self._log = logger or logging.getLogger(__name__)
        self._buffer: list[T] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._fatal: WriterFailed | None = None
        self.written = 0
        self.flushes = 0

    async def __aenter__(self) -> BatchWriter[T]:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close(flush=True)

    async def add(self, item: T) -> None:
        if self._fatal:
            raise self._fatal
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size and not self._lock.locked():
            await self.flush(force=False)

    async def flush(self, *, force: bool = True) -> None:
        """Write buffered items. Unforced, only whole batches go (rows that arrive during a
        write wait for the next full batch or the timer, so batches stay full)."""
        async with self._lock:
            while self._buffer:
                take = len(self._buffer)
                if not force:
                    take -= take % self.batch_size
                    if take == 0:
                        return
                batch = self._buffer[:take]
                try:
                    await self._flush_fn(batch)
                except StoreError as exc:
                    now = time.monotonic()
                    self._failing_since = self._failing_since or now
                    if now - self._failing_since > self.max_outage_s:
                        self._fatal = WriterFailed(
                            f"could not write {len(self._buffer)} results for "
                            f"{self.max_outage_s:.0f}s: {exc}"
                        )
                        raise self._fatal from exc
                    self._log.warning("Write failed, keeping %d results: %s", len(batch), exc)
                    return
                del self._buffer[:take]
                self.written += take
                self.flushes += 1
                self._failing_since = None

    async def close(self, *, flush: bool = True) -> None:
        if self._ticker is not None:
            # Under the lock: a timer flush is never cut off mid-write (it would have to
            # write its batch again).
            async with self._lock:
                self._ticker.cancel()
            self._ticker = None
        if not flush:
            return
        delay = 0.5
        while self._buffer:
            await self.flush()
            if self._buffer:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._buffer and not self._lock.locked():
                try:
                    await self.flush()
                except WriterFailed:
                    return
