"""refine-discolike end to end: seeds from the ICP and the liked, disliked and existing out."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.refine_discolike import refine_discolike
from tam.clients.discolike import DiscolikeClient
from tam.emulators import EMULATOR_KEY, sample_companies
from tam.models import Company, JobStatus, NewCompany, Project
from tam.stores.base import Store

pytestmark = pytest.mark.prefect

SEVEN_KEYS = {
    "companiesFound",
    "inserted",
    "failed",
    "seedDomainsUsed",
    "likedCount",
    "dislikedExcluded",
    "totalResults",
}
SAMPLE = sample_companies(40)


async def discover(emulators: Any, seeds: list[str], max_records: int) -> list[str]:
    client = DiscolikeClient(api_key=EMULATOR_KEY, base_url=emulators.base_url("discolike"))
    try:
        page = await client.discover_page(
            domains=seeds, country=["US"], max_records=max_records, min_digital_footprint=50
        )
    finally:
        await client.close()
    return [c.domain for c in page.companies]


async def new_project(store: Store, icp: dict[str, Any]) -> UUID:
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="refine", icp_profile=icp))
    return project_id


def company(project_id: UUID, domain: str, **fields: Any) -> NewCompany:
    return NewCompany(project_id=project_id, name=domain.split(".")[0], domain=domain, **fields)


async def companies_of(store: Store, project_id: UUID) -> dict[str, Company]:
    return {c.domain or "": c async for page in store.iter_companies(project_id) for c in page}


async def test_seven_keys_liked_seeds_disliked_and_existing_excluded(
    prefect_server: Any, store: Store, emulator_control: Any, emulators: Any
) -> None:
    icp_seeds = [SAMPLE[0]["domain"], f"https://www.{SAMPLE[1]['domain']}/"]
    liked = [SAMPLE[2]["domain"], SAMPLE[3]["domain"]]
    seeds = [SAMPLE[0]["domain"], SAMPLE[1]["domain"], *liked]
    results = await discover(emulators, seeds, 60)
    assert len(results) == 60
    disliked, existing = results[:3], results[10:14]
    project_id = await new_project(
        store,
        {
            "seedCompanyDomains": icp_seeds,
            "geography": "us_only",
            "sourcingLimits": {"discolikeMaxRecords": 60},
        },
    )
    await store.upsert_companies(
        [company(project_id, d, feedback="liked", qualification_status="qualified") for d in liked]
        + [company(project_id, d, feedback="disliked") for d in disliked]
        + [company(project_id, d) for d in existing]
    )
    emulator_control.reset("discolike")
    job = await store.create_job(project_id, "refine_discolike")

    summary = await refine_discolike(project_id=project_id, job_id=job.id)

    assert SEVEN_KEYS <= set(summary)
    assert summary["totalResults"] == 60
    assert summary["dislikedExcluded"] == 3
    assert summary["existingExcluded"] == 4
    assert summary["companiesFound"] == summary["inserted"] == 53
    assert summary["failed"] == 0
    assert summary["seedDomainsUsed"] == 4 and summary["likedCount"] == 2
    assert sorted(summary["seedDomains"]) == sorted(seeds)
    stats = emulator_control.stats("discolike", latencies=False)
    assert stats["calls_by_item"] == {",".join(sorted(seeds)): 1}

    rows = await companies_of(store, project_id)
    new = set(results) - set(disliked) - set(existing)
    assert set(rows) == new | set(liked) | set(disliked) | set(existing)
    assert all(
        rows[d].qualification_status == "pending" and rows[d].source == "discolike" for d in new
    )
    assert all(rows[d].feedback == "disliked" for d in disliked)
    finished = await store.get_job(job.id)
    assert finished.status == JobStatus.completed and finished.result_summary == summary

    again = await refine_discolike(project_id=project_id)
    assert (again["inserted"], again["companiesFound"], again["totalResults"]) == (0, 0, 60)


async def test_at_most_ten_seeds_icp_seeds_first(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    icp_seeds = [c["domain"] for c in SAMPLE[:8]]
    liked = [c["domain"] for c in SAMPLE[8:13]]
    project_id = await new_project(
        store, {"seedCompanyDomains": icp_seeds, "sourcingLimits": {"discolikeMaxRecords": 5}}
    )
    await store.upsert_companies([company(project_id, d, feedback="liked") for d in liked])

    summary = await refine_discolike(project_id=project_id)

    assert summary["seedDomainsUsed"] == 10 and summary["likedCount"] == 5
    (key,) = emulator_control.stats("discolike", latencies=False)["calls_by_item"]
    sent = key.split(",")
    assert len(sent) == 10 and set(icp_seeds) <= set(sent)
    assert summary["totalResults"] == 5 and summary["inserted"] == 5


async def test_no_seeds_completes_at_once_with_zeros_and_message(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id = await new_project(store, {"industryKeywords": ["saas"]})
    await store.upsert_companies([company(project_id, "disliked.com", feedback="disliked")])
    job = await store.create_job(project_id, "refine_discolike")

    summary = await refine_discolike(project_id=project_id, job_id=job.id)

    assert {key: summary[key] for key in SEVEN_KEYS} == dict.fromkeys(SEVEN_KEYS, 0)
    assert summary["message"] == "No seed domains available"
    assert (await store.get_job(job.id)).status == JobStatus.completed
    assert emulator_control.stats("discolike", latencies=False)["calls"] == 0


async def test_refine_all_runs_every_opted_in_project_on_its_own_job_row(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    from flows.refine_all import refine_all_projects

    seeds = {
        "seedCompanyDomains": [SAMPLE[0]["domain"]],
        "sourcingLimits": {"discolikeMaxRecords": 5},
    }
    good = await new_project(store, seeds)
    no_seeds = await new_project(store, {})
    broken = await new_project(store, {**seeds, "contactsPerCompany": 0})  # invalid ICP
    left_out = await new_project(store, seeds)
    for project_id in (good, no_seeds, broken):
        await store.set_auto_refine(project_id, True)

    summary = await refine_all_projects()

    # Other tests' projects share nothing with these (fresh database per test).
    assert (summary["projects"], summary["completed"], summary["failed"]) == (3, 2, 1)
    by_project = {r["projectId"]: r for r in summary["results"]}
    assert by_project[str(good)]["inserted"] == 5
    assert by_project[str(no_seeds)]["inserted"] == 0
    assert "contactsPerCompany" in by_project[str(broken)]["error"]
    assert str(left_out) not in by_project
    for project_id, status in ((good, "completed"), (no_seeds, "completed"), (broken, "failed")):
        job = await store.get_job(UUID(by_project[str(project_id)]["jobId"]))
        assert (job.project_id, job.job_type, job.status.value) == (
            project_id,
            "refine_discolike",
            status,
        )
    assert len(await companies_of(store, left_out)) == 0


@pytest.mark.parametrize("echo", ["auto", "always"])
async def test_seed_domains_are_never_inserted_however_the_api_spells_them(
    prefect_server: Any, store: Store, emulator_control: Any, echo: str
) -> None:
    # "auto": the real API echoes the seeds unless the query says include_search_domains=false;
    # "always": an API that ignores the flag. Echoed seeds come back as HTTPS://WWW.SEED.COM/.
    emulator_control.configure("discolike", echo_seeds=echo, seed_echo_style="url")
    icp_seeds = [SAMPLE[0]["domain"], f"https://www.{SAMPLE[1]['domain']}/"]
    seeds = {SAMPLE[0]["domain"], SAMPLE[1]["domain"]}
    project_id = await new_project(
        store, {"seedCompanyDomains": icp_seeds, "sourcingLimits": {"discolikeMaxRecords": 20}}
    )

    summary = await refine_discolike(project_id=project_id)

    stats = emulator_control.stats("discolike", latencies=False)
    assert stats.get("seeds_echoed", 0) == (2 if echo == "always" else 0)
    rows = await companies_of(store, project_id)
    assert not seeds & set(rows)
    assert summary["inserted"] == len(rows) == summary["companiesFound"]
    assert summary["seedsExcluded"] == (2 if echo == "always" else 0)

    again = await refine_discolike(project_id=project_id)
    assert not seeds & set(await companies_of(store, project_id))
    assert again["inserted"] == 0
