"""BatchWriter: full batches under load, nothing lost across an outage, give-up after a limit;
a row the database refuses is isolated by bisection and never counts as an outage."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from tam.batch_writer import BatchWriter, WriterFailed
from tam.stores.base import RowRejected, StoreError


class Sink:
    def __init__(self, *, slow: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.down = False
        self.slow = slow

    async def __call__(self, items: Sequence[int]) -> None:
        await asyncio.sleep(self.slow)
        if self.down:
            raise StoreError("connection refused")
        self.batches.append(list(items))


async def test_batches_stay_full_while_a_write_is_slow() -> None:
    sink = Sink(slow=0.01)
    async with BatchWriter(sink, batch_size=10, interval_s=60) as writer:
        await asyncio.gather(*(writer.add(i) for i in range(95)))
    sizes = [len(b) for b in sink.batches]
    assert sum(sizes) == 95
    assert sorted(x for b in sink.batches for x in b) == list(range(95))
    assert all(size % 10 == 0 for size in sizes[:-1])  # only the closing flush is partial
    assert len(sizes) <= 10


async def test_outage_keeps_results_and_writes_them_when_back() -> None:
    sink = Sink()
    writer: BatchWriter[int] = BatchWriter(sink, batch_size=5, interval_s=60, max_outage_s=60)
    sink.down = True
    for i in range(12):
        await writer.add(i)
    assert writer.pending == 12 and sink.batches == []
    sink.down = False
    await writer.close()
    assert sorted(x for b in sink.batches for x in b) == list(range(12))


async def test_gives_up_after_max_outage() -> None:
    sink = Sink()
    writer: BatchWriter[int] = BatchWriter(sink, batch_size=1, interval_s=60, max_outage_s=0.05)
    sink.down = True
    await writer.add(1)
    await asyncio.sleep(0.1)
    with pytest.raises(WriterFailed):
        await writer.add(2)


class PickySink:
    """Refuses any batch holding a bad item, as a database refuses a whole statement."""

    def __init__(self, bad: set[int], *, down_after: int | None = None) -> None:
        self.bad, self.down_after = bad, down_after
        self.calls = 0
        self.stored: list[int] = []

    async def __call__(self, items: Sequence[int]) -> None:
        self.calls += 1
        if self.down_after is not None and self.calls > self.down_after:
            raise StoreError("connection refused")
        if self.bad & set(items):
            raise RowRejected("check violation", reason="violates check constraint", code="23514")
        self.stored += items


async def test_a_refused_row_is_isolated_in_log2_writes_and_is_no_outage() -> None:
    sink = PickySink({37})
    refused: list[tuple[int, str]] = []

    def on_rejected(item: int, exc: RowRejected) -> None:
        refused.append((item, exc.reason))

    # max_outage_s < 0: one write counted as an outage would fail the writer at once.
    writer = BatchWriter(
        sink, batch_size=100, interval_s=60, max_outage_s=-1, on_rejected=on_rejected
    )
    for i in range(100):
        await writer.add(i)
    await writer.close()
    assert sorted(sink.stored) == [i for i in range(100) if i != 37]
    assert refused == [(37, "violates check constraint")]
    assert writer.rejected == 1 and writer.written == 99 and writer.pending == 0
    assert sink.calls <= 1 + 2 * math.ceil(math.log2(100))  # 15, not 100


async def test_a_fallback_replaces_the_refused_item_once() -> None:
    sink = PickySink({5, 1005})  # the fallback for 5 (1005) is refused too
    offered: list[int] = []

    def instead(item: int, _exc: RowRejected) -> int:
        offered.append(item)
        return item + 1000 if item < 1000 else item + 1

    writer = BatchWriter(sink, batch_size=10, interval_s=60, max_outage_s=-1, on_rejected=instead)
    for i in (5, 6, 7):
        await writer.add(i)
    await writer.close()
    assert sorted(sink.stored) == [6, 7]
    assert offered == [5]  # a refused fallback is dropped (logged), never replaced again
    assert writer.rejected == 1 and writer.pending == 0


async def test_an_outage_while_bisecting_keeps_only_what_is_not_written() -> None:
    # Refused whole (1), left half written (2), then the database goes away.
    sink = PickySink({9}, down_after=2)
    writer: BatchWriter[int] = BatchWriter(sink, batch_size=16, interval_s=60, max_outage_s=60)
    for i in range(16):
        await writer.add(i)
    assert sorted(sink.stored) == list(range(8))
    assert writer.pending == 8  # the right half waits; nothing written is kept twice
    sink.down_after = None
    await writer.close()
    assert sorted(sink.stored) == [i for i in range(16) if i != 9]
    assert writer.rejected == 1
