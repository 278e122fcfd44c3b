"""BatchWriter: full batches under load, nothing lost across an outage, give-up after a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tam.batch_writer import BatchWriter, WriterFailed
from tam.stores.base import StoreError


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
