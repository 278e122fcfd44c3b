"""source-companies end to end: real Prefect server, Discolike and Places emulators."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.source_companies import source_companies
from tam.clients.discolike import DiscolikeClient
from tam.clients.google_places import website_domain
from tam.emulators import EMULATOR_KEY, World
from tam.emulators.google_places import places_for
from tam.models import Company, JobStatus, NewCompany, Project, ProjectStatus
from tam.stores.base import Store

pytestmark = pytest.mark.prefect

WORLD = World(7)
# Two Places queries whose local businesses include a few domains Discolike also returns.
OVERLAPPING_QUERIES = ["code in Austin", "vault"]


def icp(**extra: Any) -> dict[str, Any]:
    return {
        "businessModel": "B2B SaaS",
        "industryKeywords": ["saas", "software", "fintech"],
        "geography": "us_only",
        **extra,
    }


async def new_project(store: Store, profile: dict[str, Any]) -> UUID:
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="sourcing", icp_profile=profile))
    return project_id


async def companies_of(store: Store, project_id: UUID) -> list[Company]:
    return [c async for page in store.iter_companies(project_id) for c in page]


async def discolike_domains(emulators: Any, max_records: int) -> set[str]:
    """What the flow's Discolike query returns, asked directly."""
    client = DiscolikeClient(api_key=EMULATOR_KEY, base_url=emulators.base_url("discolike"))
    try:
        page = await client.discover_page(
            domains=[],
            country=["US"],
            max_records=max_records,
            min_digital_footprint=50,
            icp_text="saas, software, fintech. B2B SaaS",
        )
    finally:
        await client.close()
    return {c.domain for c in page.companies}


def places_domains(query: str) -> tuple[set[str], int]:
    """(domains, places without a domain) of a Places query, from the emulator's world."""
    domains = [website_domain(p.get("websiteUri")) for p in places_for(query, world=WORLD)]
    return {d for d in domains if d}, domains.count(None)


async def test_bare_array_dedup_and_limit(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    # Half the records come twice, as "www.UPPER.com" variants of the same company.
    emulator_control.configure("discolike", duplicate_rate=0.5)
    project_id = await new_project(store, icp(sourcingLimits={"discolikeMaxRecords": 40}))
    job = await store.create_job(project_id, "source_companies")

    summary = await source_companies(project_id=project_id, job_id=job.id)

    stats = emulator_control.stats("discolike", latencies=False)
    assert stats["calls_by_endpoint"] == {"discover": 1}
    assert stats["records_returned"] > 40  # the duplicates really came
    rows = await companies_of(store, project_id)
    assert len(rows) == 40  # sourcingLimits.discolikeMaxRecords
    domains = [c.domain or "" for c in rows]
    assert len(set(domains)) == 40
    assert all(d == d.lower() and not d.startswith("www.") for d in domains)
    assert all(c.source == "discolike" and c.qualification_status == "pending" for c in rows)
    assert all((c.digital_footprint_score or 0) >= 50 for c in rows)  # min_digital_footprint
    assert all(c.similarity_score is not None and c.description for c in rows)
    assert summary["companiesFound"] == summary["inserted"] == 40
    assert summary["totalCompanies"] == 40 and summary["failed"] == 0
    assert summary["usage"]["discolike"]["costUsd"] > 0 and summary["costUsd"] > 0
    finished = await store.get_job(job.id)
    assert finished.status == JobStatus.completed and finished.result_summary == summary
    assert (await store.get_project(project_id)).status == ProjectStatus.qualifying


async def test_dedup_across_sources_and_reruns_with_places_pagination(
    prefect_server: Any, store: Store, emulator_control: Any, emulators: Any
) -> None:
    profile = icp(
        sourcingLimits={"discolikeMaxRecords": 2000}, placesQueries=OVERLAPPING_QUERIES[:1]
    )
    project_id = await new_project(store, profile)
    # A company the user added by hand, under a www / upper-case variant of a Places domain.
    code_domains, code_no_domain = places_domains(OVERLAPPING_QUERIES[0])
    manual = sorted(code_domains)[0]
    await store.upsert_companies(
        [NewCompany(project_id=project_id, name="Manual", domain=f"https://WWW.{manual}/x")]
    )

    first = await source_companies(project_id=project_id, places_queries=OVERLAPPING_QUERIES[1:])

    disco = await discolike_domains(emulators, 2000)
    vault_domains, vault_no_domain = places_domains(OVERLAPPING_QUERIES[1])
    overlap = (code_domains | vault_domains) & disco
    assert overlap, "the queries must share domains with Discolike for this test to mean much"
    rows = await companies_of(store, project_id)
    with_domain = [c.domain for c in rows if c.domain]
    assert len(with_domain) == len(set(with_domain))
    assert set(with_domain) == disco | code_domains | vault_domains
    assert sum(1 for c in rows if c.domain is None) == code_no_domain + vault_no_domain
    assert next(c for c in rows if c.domain == manual).name == "Manual"
    assert first["placesWithoutDomain"] == code_no_domain + vault_no_domain
    assert first["alreadyInProject"] == 1
    assert first["inserted"] == len(rows) - 1

    # Places pages: 60 places a query, 20 a page, each query's own next-page tokens.
    places = emulator_control.stats("google_places", latencies=False)
    assert places["calls_by_item"] == {"code in austin": 3, "vault": 3}
    assert places["places_returned"] == 120
    assert first["placesResults"] == 120

    second = await source_companies(project_id=project_id, places_queries=OVERLAPPING_QUERIES[1:])
    assert await companies_of(store, project_id) != []
    assert len(await companies_of(store, project_id)) == len(rows)
    assert second["inserted"] == 0 and second["alreadyInProject"] == second["companiesFound"]
    assert second["totalCompanies"] == len(rows)


async def test_no_search_input_completes_at_once_with_zeros(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id = await new_project(store, {"whatYouSell": "CRM"})
    job = await store.create_job(project_id, "source_companies")
    summary = await source_companies(project_id=project_id, job_id=job.id)
    assert (summary["companiesFound"], summary["inserted"], summary["totalCompanies"]) == (0, 0, 0)
    assert (await store.get_job(job.id)).status == JobStatus.completed
    assert emulator_control.stats("discolike", latencies=False)["calls"] == 0
    assert emulator_control.stats("google_places", latencies=False)["calls"] == 0


@pytest.mark.parametrize("echo", ["auto", "always"])
async def test_seed_domains_are_never_inserted_even_across_seed_groups(
    prefect_server: Any, store: Store, emulator_control: Any, echo: str
) -> None:
    # Twelve seeds make two queries; "always" echoes each query's seeds whatever the flag
    # says, spelled HTTPS://WWW.SEED.COM/ — none of them may become a prospect.
    emulator_control.configure("discolike", echo_seeds=echo, seed_echo_style="url")
    seeds = [c["domain"] for c in WORLD.companies(12)]
    project_id = await new_project(
        store,
        icp(
            seedCompanyDomains=[f"https://www.{d}/" if i % 2 else d for i, d in enumerate(seeds)],
            sourcingLimits={"discolikeMaxRecords": 30},
        ),
    )

    summary = await source_companies(project_id=project_id)

    stats = emulator_control.stats("discolike", latencies=False)
    # Echoed seeds do not use up the record budget, so the second group is asked too.
    assert stats["calls_by_endpoint"] == {"discover": 2 if echo == "always" else 1}
    assert stats.get("seeds_echoed", 0) == (12 if echo == "always" else 0)
    domains = {c.domain for c in await companies_of(store, project_id)}
    assert domains and not set(seeds) & domains
    assert summary["inserted"] == len(domains)
