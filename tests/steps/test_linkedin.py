"""The check_linkedin step through a JobRuntime: emulated Bright Data, SQLite, no Prefect."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from tam.emulators import World, sample_companies
from tam.models import JobType, NewCompany, NewContact, Project
from tam.steps import linkedin as step
from tam.stores.base import Store

WORLD = World()


async def seed(store: Store, companies: int) -> tuple[UUID, int]:
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="linkedin", icp_profile={}))
    rows = await store.upsert_companies(
        [NewCompany(project_id=project_id, **c) for c in sample_companies(companies)]
    )
    contacts = [
        NewContact(
            project_id=project_id,
            company_id=row.id,
            first_name=p["first_name"],
            linkedin_url=p["linkedin_url"],
        )
        for row in rows
        for p in WORLD.people(row.domain or "")
    ]
    await store.upsert_contacts(contacts)
    return project_id, len(contacts)


async def test_batches_span_pages_and_every_profile_is_bought_once(
    store: Store, open_runtime: Any, run_all: Any, emulator_control: Any, monkeypatch: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.02)
    monkeypatch.setenv("TAM_BRIGHTDATA_PROFILES_PER_SNAPSHOT", "25")
    monkeypatch.setenv("TAM_READ_PAGE_SIZE", "7")  # batches of 25 cross page borders
    project_id, contacts = await seed(store, 10)
    assert contacts > 50
    job = await store.create_job(project_id, "check_linkedin")
    async with open_runtime(JobType.check_linkedin, project_id, job.id) as runtime:
        run = await step.start_check(runtime)
        assert run.total == contacts
        tallies = await run_all(step.check_linkedin_chunk, run, 3)
        summary = await runtime.complete(await step.finish_check(run, tallies))

    stats = emulator_control.stats("brightdata", latencies=False)
    assert stats["profiles_triggered"] == contacts
    assert summary["snapshots"] == stats["calls_by_endpoint"]["trigger"] == -(-contacts // 25)
    assert summary["active"] + summary["inactive"] == summary["total"] == contacts
    assert set(summary["usage"]) == {"brightdata"} and summary["costUsd"] >= 0
    assert (await store.get_job(job.id)).cost_usd == summary["costUsd"]
    checked = [c async for page in store.iter_contacts(project_id) for c in page]
    assert all(c.linkedin_checked_at is not None for c in checked)


async def test_nothing_due_builds_no_client(
    store: Store, open_runtime: Any, monkeypatch: Any
) -> None:
    monkeypatch.delenv("BRIGHTDATA_API_TOKEN", raising=False)
    project_id, _ = await seed(store, 0)
    job = await store.create_job(project_id, "check_linkedin")
    async with open_runtime(JobType.check_linkedin, project_id, job.id) as runtime:
        run = await step.start_check(runtime)
        summary = (await step.finish_check(run, [])).model_dump(by_alias=True)
    assert (run.chunks, run.client) == (0, None)
    assert (summary["active"], summary["inactive"], summary["total"]) == (0, 0, 0)
    assert summary["usage"] == {"brightdata": {"credits": 0.0, "costUsd": 0.0}}
