"""A systemic provider error (bad key, out of credits) fails the job fast, naming the provider.

One case per provider and kind, each through the flow of the step that calls it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.check_linkedin import check_linkedin
from flows.find_contacts import find_contacts
from flows.qualify import qualify_companies
from flows.source_companies import source_companies
from tam.emulators import World, sample_companies
from tam.models import JobStatus, NewCompany, NewContact, Project
from tam.settings import get_settings
from tam.stores.base import Store

pytestmark = pytest.mark.prefect

WORLD = World(7)
ICP: dict[str, Any] = {
    "industryKeywords": ["saas", "software"],
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP", "Director", "Manager"],
    "contactsPerCompany": 3,
    "placesQueries": ["code in Austin"],
}
# provider → (job type, flow, env var of its key)
CASES = {
    "discolike": ("source_companies", source_companies, "DISCOLIKE_API_KEY"),
    "google_places": ("source_companies", source_companies, "GOOGLE_PLACES_API_KEY"),
    "anthropic": ("qualify", qualify_companies, "ANTHROPIC_API_KEY"),
    "prospeo": ("find_contacts", find_contacts, "PROSPEO_API_KEY"),
    "hunter": ("find_contacts", find_contacts, "HUNTER_API_KEY"),
    "neverbounce": ("find_contacts", find_contacts, "NEVERBOUNCE_API_KEY"),
    "brightdata": ("check_linkedin", check_linkedin, "BRIGHTDATA_API_TOKEN"),
}


@pytest.fixture(autouse=True)
def quick_polls(tam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAM_BRIGHTDATA_POLL_INTERVAL_S", "0.05")
    get_settings.cache_clear()


async def seed(store: Store, job_type: str) -> UUID:
    """A project in the state the step expects: 40 companies, qualified for contacts, with
    contacts for LinkedIn."""
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name=job_type, icp_profile=ICP))
    if job_type == "source_companies":
        return project_id
    status = "pending" if job_type == "qualify" else "qualified"
    rows = await store.upsert_companies(
        [
            NewCompany(project_id=project_id, qualification_status=status, **c)
            for c in sample_companies(40)
        ]
    )
    if job_type == "check_linkedin":
        await store.upsert_contacts(
            [
                NewContact(project_id=project_id, company_id=row.id, linkedin_url=p["linkedin_url"])
                for row in rows
                for p in WORLD.people(row.domain or "")
            ]
        )
    return project_id


@pytest.mark.parametrize("kind", ["bad_key", "out_of_credits"])
@pytest.mark.parametrize("provider", list(CASES))
async def test_systemic_error_fails_the_job_fast_naming_the_provider(
    prefect_server: Any, store: Store, emulator_control: Any, provider: str, kind: str
) -> None:
    job_type, step_flow, key_env = CASES[provider]
    if kind == "bad_key":
        emulator_control.configure(provider, valid_keys=["some-other-key"])
    else:
        emulator_control.configure(provider, out_of_credits=True)
    project_id = await seed(store, job_type)
    job = await store.create_job(project_id, job_type)

    state = await step_flow(project_id=project_id, job_id=job.id, return_state=True)

    assert state.is_failed()
    failed = await store.get_job(job.id)
    assert failed.status == JobStatus.failed and failed.completed_at is not None
    error = (failed.result_summary or {})["error"]
    assert provider in error
    if kind == "bad_key":
        assert "rejected the credentials" in error and key_env in error
    else:
        assert "out of credits" in error
    assert "emulator-key" not in error
    # Fast: the first wave of calls, not one per item.
    assert emulator_control.stats(provider, latencies=False)["calls"] <= 20


async def test_a_missing_key_fails_the_job_naming_the_variable(
    prefect_server: Any, store: Store, emulator_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUNTER_API_KEY")
    get_settings.cache_clear()
    project_id = await seed(store, "find_contacts")
    job = await store.create_job(project_id, "find_contacts")

    state = await find_contacts(project_id=project_id, job_id=job.id, return_state=True)

    assert state.is_failed()
    error = ((await store.get_job(job.id)).result_summary or {})["error"]
    assert "hunter" in error and "HUNTER_API_KEY is not set" in error
    assert emulator_control.stats("prospeo", latencies=False)["calls"] == 0
