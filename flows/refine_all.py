"""refine-all-projects: the scheduled refine of every project that opted in."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger

from flows.refine_discolike import refine_discolike
from tam.models import JobStatus, JobType
from tam.settings import get_settings
from tam.stores import open_store


@flow(name="refine-all-projects")
async def refine_all_projects() -> dict[str, Any]:
    """Run refine-discolike for every project with `auto_refine` on.

    Each project gets its own `refine_discolike` job row (so the frontend shows the
    scheduled refine like one a user started) and its own subflow run; a few run at once
    (`refine_all_concurrency`) under the shared Discolike limiter. A project that fails
    does not stop the others; the result lists every project's outcome.
    """
    logger = get_run_logger()
    settings = get_settings()
    store = open_store(settings=settings)
    results: list[dict[str, Any]] = []
    try:
        await store.init_schema()
        projects = [p async for page in store.iter_auto_refine_projects() for p in page]
        gate = asyncio.Semaphore(settings.refine_all_concurrency)

        async def one(project_id: UUID) -> None:
            async with gate:
                job = await store.create_job(project_id, JobType.refine_discolike.value)
                state = await refine_discolike(
                    project_id=project_id, job_id=job.id, return_state=True
                )
                row = await store.get_job(job.id)
            entry: dict[str, Any] = {
                "projectId": str(project_id),
                "jobId": str(job.id),
                "status": row.status.value,
            }
            summary = row.result_summary or {}
            if row.status == JobStatus.completed and state.is_completed():
                entry["inserted"] = summary.get("inserted", 0)
            else:
                entry["error"] = summary.get("error") or state.message
                logger.warning("Refine of project %s failed: %s", project_id, entry["error"])
            results.append(entry)

        async with asyncio.TaskGroup() as group:
            for project in projects:
                group.create_task(one(project.id))
    finally:
        await store.close()
    failed = [r for r in results if r["status"] != JobStatus.completed.value]
    summary = {
        "projects": len(results),
        "completed": len(results) - len(failed),
        "failed": len(failed),
        "inserted": sum(r.get("inserted", 0) for r in results),
        "results": sorted(results, key=lambda r: r["projectId"]),
    }
    logger.info("Refined %d projects: %s", len(results), {k: summary[k] for k in list(summary)[:4]})
    if results and not (len(results) - len(failed)):
        raise RuntimeError(f"every refine failed; first: {failed[0]['error']}")
    return summary
