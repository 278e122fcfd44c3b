"""find-contacts end to end: Prospeo search and the email waterfall against the emulators.

Every expectation comes from the emulators' world (`World(7)`): who works where, with which
seniority and location, and which provider (if any) can find each person's email.
"""

from __future__ import annotations

import importlib
from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.find_contacts import find_contacts
from tam.emulators import World, sample_companies
from tam.emulators.prospeo import location_matches
from tam.models import Contact, JobStatus, NewCompany, Project, ProjectStatus
from tam.stores.base import Store

pytestmark = pytest.mark.prefect

WORLD = World(7)
ICP: dict[str, Any] = {
    "industryKeywords": ["saas"],
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP"],
    "contactsPerCompany": 2,
}
PROSPEO_SENIORITY = {"C-Suite": "C-Suite", "VP": "Vice President", "Founder": "Founder/Owner"}


async def seed(store: Store, n: int, icp: dict[str, Any] = ICP) -> tuple[UUID, list[str]]:
    """A project whose first `n` sample companies are qualified (plus one without domain
    and one disqualified, which must be left alone)."""
    project_id = uuid4()
    await store.create_project(
        Project(id=project_id, name="contacts", status=ProjectStatus.enriching, icp_profile=icp)
    )
    companies = sample_companies(n + 1)
    rows = [
        NewCompany(project_id=project_id, qualification_status="qualified", **c)
        for c in companies[:n]
    ]
    rows.append(
        NewCompany(project_id=project_id, qualification_status="disqualified", **companies[n])
    )
    rows.append(NewCompany(project_id=project_id, name="No site", qualification_status="qualified"))
    await store.upsert_companies(rows)
    return project_id, [c["domain"] for c in companies[:n]]


def matching_people(domain: str, icp: dict[str, Any] = ICP) -> list[dict[str, Any]]:
    """Who Prospeo's search finds at `domain` with the ICP's filters, in its order."""
    wanted = {PROSPEO_SENIORITY[s] for s in icp["seniorityPreference"]}
    return [
        p
        for p in WORLD.people(domain)
        if p["seniority"] in wanted and location_matches("United States #US", p["location"])
    ]


def expected_people(domain: str, icp: dict[str, Any] = ICP) -> list[dict[str, Any]]:
    """The people the flow should keep at `domain`: the first `contactsPerCompany`."""
    return matching_people(domain, icp)[: icp["contactsPerCompany"]]


async def contacts_of(store: Store, project_id: UUID) -> list[Contact]:
    return [c async for page in store.iter_contacts(project_id) for c in page]


async def test_search_cap_filters_and_waterfall_as_the_world_predicts(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, domains = await seed(store, 70)
    job = await store.create_job(project_id, "find_contacts")

    summary = await find_contacts(project_id=project_id, job_id=job.id)

    expected = {p["linkedin_url"]: p for d in domains for p in expected_people(d)}
    contacts = await contacts_of(store, project_id)
    assert {c.linkedin_url for c in contacts} == set(expected)
    assert len(contacts) == len(expected) > 70  # two for many companies, none duplicated

    # Pagination: more than one page of 25, every page fetched once, within the limit.
    prospeo = emulator_control.stats("prospeo", latencies=False)
    pages = -(-sum(len(matching_people(d)) for d in domains) // 25)
    assert pages > 2
    assert prospeo["calls_by_endpoint"]["search_person"] == pages
    assert summary["searchPages"] == pages
    assert prospeo["max_in_flight"] <= 5

    sources: dict[str, int] = {}
    for contact in contacts:
        person = expected[contact.linkedin_url]
        status, source = WORLD.expected_email(person["domain"], person)
        assert contact.email_status == status, contact.linkedin_url
        if status in ("verified", "catch_all"):
            assert contact.email == person["email"]
            sources[source or ""] = sources.get(source or "", 0) + 1
        else:
            assert contact.email is None
        assert contact.raw_data["email_source"] == source
        assert (contact.first_name, contact.title) == (person["first_name"], person["title"])
    assert sources.get("prospeo", 0) > 0 and sources.get("hunter", 0) > 0

    assert summary["contactsFound"] == len(expected)
    assert summary["emailsFound"] == sum(1 for c in contacts if c.email)
    assert summary["totalCompanies"] == 70
    assert summary["emailStatuses"]["verified"] > 0
    assert set(summary["usage"]) == {"prospeo", "hunter", "neverbounce"}
    assert summary["costUsd"] > 0
    finished = await store.get_job(job.id)
    assert finished.status == JobStatus.completed and finished.progress == 100
    assert finished.done_count == finished.total_count
    assert (await store.get_project(project_id)).status == ProjectStatus.complete


def paid_calls(control: Any) -> dict[str, Any]:
    """Calls of every email provider endpoint, in total and per item."""
    prospeo = control.stats("prospeo", latencies=False)
    return {
        "enrich": prospeo["calls_by_endpoint"].get("enrich_person", 0),
        "enriched": {k: v for k, v in prospeo["calls_by_item"].items() if "/in/" in k},
        "hunter": control.stats("hunter", latencies=False)["calls_by_item"],
        "neverbounce": control.stats("neverbounce", latencies=False)["calls_by_item"],
    }


async def test_rerun_adds_no_contact_and_buys_no_email_again(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, _ = await seed(store, 30)
    await find_contacts(project_id=project_id)
    first = {c.linkedin_url: c for c in await contacts_of(store, project_id)}
    assert sum(1 for c in first.values() if c.email) > 5
    before = paid_calls(emulator_control)

    summary = await find_contacts(project_id=project_id)

    again = {c.linkedin_url: c for c in await contacts_of(store, project_id)}
    assert again.keys() == first.keys()
    assert all((again[u].id, again[u].email) == (first[u].id, first[u].email) for u in first)
    assert summary["contactsFound"] == 0 and summary["emailsChecked"] == 0
    assert paid_calls(emulator_control) == before


async def test_contact_without_a_verdict_is_retried_by_a_rerun(
    prefect_server: Any, store: Store, emulator_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NOTE: `flows.find_contacts` the attribute is the flow; the module is in sys.modules.
    module = importlib.import_module("flows.find_contacts")
    # No task-level retry after the waterfall's own: keeps the failing run short.
    monkeypatch.setattr(module, "find_emails_task", module.find_emails_task.with_options(retries=0))
    project_id, _ = await seed(store, 10, {**ICP, "contactsPerCompany": 1})
    # Hunter down for the whole first run: contacts Prospeo cannot answer get no verdict.
    emulator_control.configure("hunter", error_rates={"503": 1.0}, retry_after_s=0)
    state = await find_contacts(project_id=project_id, return_state=True)
    assert state.is_failed()
    decided = {c.linkedin_url for c in await contacts_of(store, project_id) if c.email_status}
    emulator_control.configure("hunter", error_rates={})
    before = paid_calls(emulator_control)

    summary = await find_contacts(project_id=project_id)

    contacts = await contacts_of(store, project_id)
    assert contacts and all(c.email_status is not None for c in contacts)
    assert summary["emailsChecked"] == len(contacts) - len(decided) > 0
    after = paid_calls(emulator_control)
    for url in decided:  # a contact with a verdict is never sent again
        assert after["enriched"].get(url.lower()) == before["enriched"].get(url.lower())


async def test_no_match_anywhere_is_not_an_error(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    icp = {**ICP, "geography": "specific_countries", "specificCountries": ["JP"]}
    project_id, _ = await seed(store, 5, icp)
    job = await store.create_job(project_id, "find_contacts")
    summary = await find_contacts(project_id=project_id, job_id=job.id)
    assert (summary["contactsFound"], summary["emailsFound"], summary["totalCompanies"]) == (
        0,
        0,
        5,
    )
    assert (await store.get_job(job.id)).status == JobStatus.completed


async def test_nothing_qualified_completes_at_once_with_zeros(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, _ = await seed(store, 0)
    job = await store.create_job(project_id, "find_contacts")
    summary = await find_contacts(project_id=project_id, job_id=job.id)
    assert (summary["contactsFound"], summary["emailsFound"], summary["totalCompanies"]) == (
        0,
        0,
        0,
    )
    assert (await store.get_job(job.id)).status == JobStatus.completed
    assert emulator_control.stats("prospeo", latencies=False)["calls"] == 0


async def test_hunter_misses_as_404_and_claimed_people_as_451_do_not_fail_the_job(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    # Both mean "no email from Hunter": the waterfall goes on, the contact stays not_found.
    emulator_control.configure("hunter", miss_status=404, claimed_rate=0.3)
    project_id, domains = await seed(store, 30)
    job = await store.create_job(project_id, "find_contacts")

    summary = await find_contacts(project_id=project_id, job_id=job.id)

    hunter = emulator_control.stats("hunter", latencies=False)
    assert hunter.get("claimed", 0) > 0 and hunter.get("misses", 0) > 0
    assert hunter["status_counts"].get("404", 0) == hunter["misses"]
    assert hunter["status_counts"].get("451", 0) == hunter["claimed"]
    finished = await store.get_job(job.id)
    assert finished.status == JobStatus.completed, finished.result_summary
    expected = {p["linkedin_url"]: p for d in domains for p in expected_people(d)}
    contacts = await contacts_of(store, project_id)
    assert {c.linkedin_url for c in contacts} == set(expected)
    claimed_seen = 0
    for contact in contacts:
        person = expected[contact.linkedin_url]
        status, source = WORLD.expected_email(person["domain"], person)
        name = f"{person['first_name'].lower()} {person['last_name'].lower()}"
        claimed = WORLD.unit(person["domain"], "hunter_claimed", name) < 0.3
        if source == "hunter" and claimed:
            claimed_seen += 1
            assert (contact.email_status, contact.email) == ("not_found", None)
        else:
            assert contact.email_status == status, contact.linkedin_url
    assert claimed_seen > 0
    assert summary["contactsFound"] == len(expected)
