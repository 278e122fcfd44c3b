"""build-tam: the whole pipeline as subflows, one job row per step plus the pipeline's own."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.build_tam import STEPS, build_tam, step_job_id
from tam.models import JobStatus, Project, ProjectStatus
from tam.settings import get_settings
from tam.stores.base import NotFoundInStore, Store

pytestmark = pytest.mark.prefect

ICP: dict[str, Any] = {
    "businessModel": "B2B SaaS",
    "industryKeywords": ["saas", "software", "fintech"],
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP"],
    "contactsPerCompany": 1,
    "sourcingLimits": {"discolikeMaxRecords": 30},
    "placesQueries": ["code in Austin"],
}
DOCUMENTED_KEYS = {
    "source_companies": {"companiesFound", "inserted", "totalCompanies"},
    "qualify": {"qualified", "disqualified", "total"},
    "find_contacts": {"contactsFound", "emailsFound", "totalCompanies"},
    "check_linkedin": {"active", "inactive", "total"},
}


@pytest.fixture(autouse=True)
def quick_polls(tam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAM_BRIGHTDATA_POLL_INTERVAL_S", "0.05")
    get_settings.cache_clear()


async def new_project(store: Store) -> UUID:
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="pipeline", icp_profile=ICP))
    return project_id


async def test_whole_pipeline_one_completed_job_row_per_step(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.2)
    project_id = await new_project(store)
    job = await store.create_job(project_id, "build_tam")

    summary = await build_tam(project_id=project_id, job_id=job.id)

    parent = await store.get_job(job.id)
    assert parent.status == JobStatus.completed and parent.progress == 100
    assert parent.result_summary == summary
    assert summary["steps"] == [step.value for step, _ in STEPS]
    for step, _ in STEPS:
        child = await store.get_job(step_job_id(job.id, step))
        assert str(child.id) == summary["jobIds"][step.value]
        assert (child.job_type, child.status) == (step.value, JobStatus.completed)
        assert child.flow_run_id is not None and child.flow_run_id != parent.flow_run_id
        assert DOCUMENTED_KEYS[step.value] <= set(child.result_summary or {})
        assert summary["results"][step.value] == child.result_summary

    results = summary["results"]
    assert results["source_companies"]["inserted"] > 30  # Discolike's 30 and the places
    assert results["qualify"]["qualified"] > 0
    assert results["find_contacts"]["contactsFound"] > 0
    assert results["find_contacts"]["emailsFound"] > 0
    assert results["check_linkedin"]["total"] == results["find_contacts"]["contactsFound"]
    assert summary["costUsd"] > 0
    assert (await store.get_project(project_id)).status == ProjectStatus.complete


async def test_failing_step_stops_the_pipeline_naming_step_and_provider(
    prefect_server: Any, store: Store, emulator_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROSPEO_API_KEY", "invalid-prospeo-key")
    get_settings.cache_clear()
    project_id = await new_project(store)
    job = await store.create_job(project_id, "build_tam")

    state = await build_tam(project_id=project_id, job_id=job.id, return_state=True)

    assert state.is_failed()
    parent = await store.get_job(job.id)
    assert parent.status == JobStatus.failed
    error = (parent.result_summary or {})["error"]
    assert "find_contacts" in error and "prospeo" in error and "PROSPEO_API_KEY" in error
    assert "invalid-prospeo-key" not in error
    statuses = {}
    for step, _ in STEPS:
        try:
            statuses[step.value] = (await store.get_job(step_job_id(job.id, step))).status
        except NotFoundInStore:
            statuses[step.value] = None
    assert statuses == {
        "source_companies": JobStatus.completed,
        "qualify": JobStatus.completed,
        "find_contacts": JobStatus.failed,
        "check_linkedin": None,  # never started
    }
    assert emulator_control.stats("brightdata", latencies=False)["calls"] == 0
