"""One measured run in its own process: clean peak RSS, its own event loop and limiter.

Usage (by bench.run): python -m bench.worker '<json spec>'; prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any
from uuid import UUID


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _count_task_runs(flow_run_id: UUID | None) -> tuple[int | None, int | None]:
    """(task runs, task retries) of the flow run: a retry costs its delay in wall time."""
    if flow_run_id is None:
        return None, None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )
        return len(runs), sum(max(run.run_count - 1, 0) for run in runs)


async def run_flow(spec: dict[str, Any]) -> dict[str, Any]:
    from flows import FLOWS
    from tam.settings import get_settings
    from tam.stores import open_store

    _wait_until(spec.get("start_at"))
    samples: list[tuple[float, int, int, int]] = []
    sampler = asyncio.create_task(_sample_limiters(samples)) if spec.get("sample") else None
    started = time.time()
    summary = await FLOWS[spec["step"]](
        project_id=UUID(spec["project_id"]), job_id=UUID(spec["job_id"])
    )
    ended = time.time()
    if sampler is not None:
        sampler.cancel()
    store = open_store(settings=get_settings())
    try:
        job = await store.get_job(UUID(spec["job_id"]))
    finally:
        await store.close()
    task_runs, task_retries = await _count_task_runs(job.flow_run_id)
    return {
        "started": started,
        "ended": ended,
        "wall_s": ended - started,
        "peak_rss_mb": peak_rss_mb(),
        "summary": summary,
        "status": job.status.value,
        "task_runs": task_runs,
        "task_retries": task_retries,
        "samples": samples,
    }


async def _sample_limiters(out: list[tuple[float, int, int, int]]) -> None:
    """(time, capacity, in flight, waiting) of this process's limiters every 50 ms."""
    from tam.limiters.window import _REGISTRY

    while True:
        for limiter in list(_REGISTRY.values()):
            stats = limiter.stats
            out.append((time.time(), stats.capacity, stats.in_flight, stats.waiting))
        await asyncio.sleep(0.05)


async def _pending(spec: dict[str, Any]) -> tuple[Any, list[Any]]:
    from tam.models import QualificationStatus
    from tam.settings import get_settings
    from tam.stores import open_store

    store = open_store(settings=get_settings())
    try:
        project = await store.get_project(UUID(spec["project_id"]))
        companies = [
            c
            async for page in store.iter_companies(project.id, status=QualificationStatus.pending)
            for c in page
        ]
        return project.icp(), companies
    finally:
        await store.close()


async def run_fixed_batches(spec: dict[str, Any]) -> dict[str, Any]:
    """The old implementation's strategy: Promise.all of `batch`, then wait for the slowest."""
    from tam.clients.factory import claude_qualifier
    from tam.settings import get_settings

    icp, companies = await _pending(spec)
    qualifier = claude_qualifier(get_settings())
    batch = spec.get("batch", 10)
    try:
        started = time.time()
        for i in range(0, len(companies), batch):
            await asyncio.gather(*(qualifier.judge(c, icp) for c in companies[i : i + batch]))
        ended = time.time()
    finally:
        await qualifier.close()
    return {"started": started, "ended": ended, "wall_s": ended - started, "items": len(companies)}


async def run_bare_client(spec: dict[str, Any]) -> dict[str, Any]:
    """The same SDK calls at the same concurrency with no orchestration at all: no Prefect,
    no limiter, no job row, no writes. The flow's excess over this is its overhead."""
    from tam.clients.factory import claude_qualifier
    from tam.settings import get_settings

    icp, companies = await _pending(spec)
    qualifier = claude_qualifier(get_settings())
    gate = asyncio.Semaphore(spec.get("concurrency", 10))

    async def one(company: Any) -> None:
        async with gate:
            await qualifier.judge(company, icp)

    try:
        started = time.time()
        await asyncio.gather(*(one(c) for c in companies))
        ended = time.time()
    finally:
        await qualifier.close()
    return {"started": started, "ended": ended, "wall_s": ended - started, "items": len(companies)}


def _wait_until(start_at: float | None) -> None:
    if start_at:
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)


def main() -> None:
    spec = json.loads(sys.argv[1])
    runner = {
        "flow": run_flow,
        "fixed_batches": run_fixed_batches,
        "bare_client": run_bare_client,
    }[spec["mode"]]
    result = asyncio.run(runner(spec))
    try:
        from local.prefect_server import drain_prefect_clients

        drain_prefect_clients()
    except Exception:  # noqa: BLE001,S110 - best effort
        pass
    sys.stdout.write("BENCH-RESULT " + json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
