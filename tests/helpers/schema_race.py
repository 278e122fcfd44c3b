"""Processes that call init_schema on one database at the same moment (tests/test_bad_data.py).

A module of its own so the fork server imports only the store, not the whole test module.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from tam.stores.sql import SqlStore


def _child(url: str, barrier: Any, results: Any) -> None:
    async def run() -> str:
        store = SqlStore(url)
        try:
            barrier.wait(timeout=120)
            await store.init_schema()
            return "ok"
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            return f"{type(exc).__name__}: {exc}"
        finally:
            await store.close()

    results.put(asyncio.run(run()))


def init_schema_at_once(url: str, processes: int) -> list[str]:
    """`processes` processes (not threads: the race is between servers) released together
    by a barrier; each answers "ok" or its error."""
    ctx = multiprocessing.get_context("forkserver")
    # NOTE: forked from a server that imported the store once: a spawn per child would
    # import it `processes` times.
    ctx.set_forkserver_preload([__name__])
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=_child, args=(url, barrier, results)) for _ in range(processes)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=180) for _ in children]
    for child in children:
        child.join(timeout=30)
    return outcomes
