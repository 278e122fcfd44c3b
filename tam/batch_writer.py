"""Buffers results and writes them in batches: ≤ 1 round trip per batch, never per row.

A batch the database refuses for its data (`RowRejected`: a NUL the sanitizer missed, a
constraint) is bisected until the refused rows are alone; every other row is written and
the refused ones go to the step's `on_rejected`. One bad row of n costs at most
1 + 2·⌈log2 n⌉ writes, and never counts as an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tam.stores.base import RowRejected, StoreError

T = TypeVar("T")

# What a step does with a row the database refused: return an item to write instead (a
# qualify verdict becomes "Needs review (could not be stored: ...)"), or None to drop it
# (the step logs and counts it).
RejectHandler = Callable[[T, RowRejected], "T | None"]


class WriterFailed(StoreError):
    """The database stayed unreachable longer than the writer may hold results."""


@dataclass
class _Entry(Generic[T]):
    item: T
    fallback: bool = False  # offered by on_rejected: never replaced a second time


class BatchWriter(Generic[T]):
    """Collects items and flushes them when `batch_size` is reached or `interval_s` passes.

    A failed flush keeps its items and is retried with backoff (the database may be
    restarting); after `max_outage_s` without a successful write the writer gives up and
    raises `WriterFailed`, so the job fails instead of silently dropping results.
    A refused row (`RowRejected`) is not an outage: see the module docstring.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[None]],
        *,
        batch_size: int = 100,
        interval_s: float = 1.0,
        max_outage_s: float = 120.0,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        on_rejected: RejectHandler[T] | None = None,
    ) -> None:
        self._flush_fn = flush
        self._on_rejected = on_rejected
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_outage_s = max_outage_s
        self._log = logger or logging.getLogger(__name__)
        self._buffer: list[_Entry[T]] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._fatal: WriterFailed | None = None
        # Items of the batch being written that are settled (written or refused): always a
        # prefix of it, because halves are written left to right.
        self._settled = 0
        self.written = 0
        self.flushes = 0
        self.rejected = 0  # items the database refused (each went to on_rejected)

    def start(self) -> None:
        """Start the flush timer (needs a running event loop)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def __aenter__(self) -> BatchWriter[T]:
        self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close(flush=True)

    async def add(self, item: T) -> None:
        if self._fatal:
            raise self._fatal
        self._buffer.append(_Entry(item))
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
                self._settled = 0
                try:
                    await self._write(batch)
                except StoreError as exc:
                    # An outage (RowRejected never gets here): keep what is not written yet.
                    del self._buffer[: self._settled]
                    now = time.monotonic()
                    self._failing_since = self._failing_since or now
                    if now - self._failing_since > self.max_outage_s:
                        self._fatal = WriterFailed(
                            f"could not write {len(self._buffer)} results for "
                            f"{self.max_outage_s:.0f}s: {exc}"
                        )
                        raise self._fatal from exc
                    self._log.warning(
                        "Write failed, keeping %d results: %s", len(batch) - self._settled, exc
                    )
                    return
                del self._buffer[:take]
                self._failing_since = None

    async def _write(self, entries: list[_Entry[T]]) -> None:
        """Write `entries` in one flush; when the database refuses their data, write each
        half the same way, until the refused rows are alone. Outages propagate."""
        try:
            await self._flush_fn([entry.item for entry in entries])
        except RowRejected as exc:
            if len(entries) > 1:
                middle = len(entries) // 2
                await self._write(entries[:middle])
                await self._write(entries[middle:])
                return
            self._reject(entries[0], exc)
        else:
            self.written += len(entries)
            self.flushes += 1
        self._settled += len(entries)

    def _reject(self, entry: _Entry[T], exc: RowRejected) -> None:
        if entry.fallback:
            self._log.error(
                "The database refused the fallback for %s too, dropping it: %s",
                _describe(entry.item),
                exc,
            )
            return
        self.rejected += 1
        self._log.warning(
            "The database refused one result (%s), the rest are written: %s",
            _describe(entry.item),
            exc,
        )
        if self._on_rejected is None:
            return
        instead = self._on_rejected(entry.item, exc)
        if instead is not None:
            self._buffer.append(_Entry(instead, fallback=True))

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


def _describe(item: object) -> str:
    """Which row it was, for the log: its key, never its whole content."""
    for name in ("domain", "linkedin_url", "company_id", "contact_id", "name"):
        value = getattr(item, name, None)
        if value:
            return f"{name} {value}"
    return type(item).__name__
