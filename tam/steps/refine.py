"""refine_discolike: more look-alikes of what the user liked, none of what they disliked.

No Prefect here. Seeds are the ICP's seed domains, then the domains of liked companies
(at most 10 in all, Discolike's limit per query); one discover call; results whose domain
was disliked or already exists in the project are dropped; the rest are inserted pending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.discolike import MAX_SEED_DOMAINS, DiscolikeClient, to_new_company
from tam.domains import normalize_domain
from tam.limiters import AccountLimiter
from tam.models import IcpProfile, NewCompany
from tam.stores.base import Store

NO_SEEDS_MESSAGE = "No seed domains available"


@dataclass
class RefinePlan:
    seeds: list[str]
    liked: list[str]
    disliked: set[str]
    existing: set[str]


@dataclass
class RefineResult:
    total_results: int = 0
    companies_found: int = 0
    disliked_excluded: int = 0
    existing_excluded: int = 0
    seeds_excluded: int = 0  # results that were a seed itself (never inserted)
    domains: list[str] = field(default_factory=list)


@dataclass
class InsertCount:
    """Rows really inserted, counted by the writer's flush (across task retries)."""

    inserted: int = 0


def pick_seeds(icp_seeds: Sequence[str], liked: Sequence[str]) -> list[str]:
    """ICP seeds first (the user typed them), then liked domains; no repeats; at most 10."""
    seen: dict[str, None] = {}
    for domain in [*icp_seeds, *liked]:
        if domain:
            seen.setdefault(domain, None)
    return list(seen)[:MAX_SEED_DOMAINS]


def inserter(store: Store, count: InsertCount) -> Callable[[Sequence[NewCompany]], Awaitable[None]]:
    """The writer's flush: one upsert per batch, counting the rows really inserted."""

    async def flush(batch: Sequence[NewCompany]) -> None:
        count.inserted += len(await store.upsert_companies(batch))

    return flush


async def plan_refine(
    store: Store, project_id: UUID, icp: IcpProfile, *, page_size: int
) -> RefinePlan:
    liked: list[str] = []
    disliked: set[str] = set()
    async for page in store.iter_companies(project_id, feedback="liked", page_size=page_size):
        liked.extend(c.domain for c in page if c.domain)
    async for page in store.iter_companies(project_id, feedback="disliked", page_size=page_size):
        disliked.update(c.domain for c in page if c.domain)
    return RefinePlan(
        seeds=pick_seeds(icp.seed_domains(), liked),
        liked=liked,
        disliked=disliked,
        existing=await store.existing_domains(project_id),
    )


async def refine(
    project_id: UUID,
    icp: IcpProfile,
    plan: RefinePlan,
    *,
    client: DiscolikeClient,
    limiter: AccountLimiter,
    writer: BatchWriter[NewCompany],
    max_attempts: int,
    min_digital_footprint: int | None,
) -> RefineResult:
    """Discover, filter and queue the new companies (the caller's writer inserts them)."""
    result = RefineResult()
    page = await call_with_retries(
        lambda: client.discover_page(
            domains=plan.seeds,
            country=icp.countries(),
            max_records=icp.sourcing_limits.discolike_max_records,
            min_digital_footprint=min_digital_footprint,
        ),
        limiter=limiter,
        max_attempts=max_attempts,
    )
    result.total_results = len(page.companies) + page.seeds_dropped
    result.seeds_excluded = page.seeds_dropped
    seeds = {normalize_domain(s) for s in plan.seeds}
    for item in page.companies:
        company = to_new_company(project_id, item)
        domain = company.domain
        if domain is None:
            continue
        if domain in seeds:
            result.seeds_excluded += 1
        elif domain in plan.disliked:
            result.disliked_excluded += 1
        elif domain in plan.existing:
            result.existing_excluded += 1
        else:
            result.companies_found += 1
            result.domains.append(domain)
            await writer.add(company)
    return result


def refine_summary(plan: RefinePlan | None, result: RefineResult, inserted: int) -> dict[str, Any]:
    """The seven keys the frontend reads, then extras. `failed`: candidates not inserted
    (another run inserted the same domain first)."""
    summary: dict[str, Any] = {
        "companiesFound": result.companies_found,
        "inserted": inserted,
        "failed": max(0, result.companies_found - inserted),
        "seedDomainsUsed": len(plan.seeds) if plan else 0,
        "likedCount": len(plan.liked) if plan else 0,
        "dislikedExcluded": result.disliked_excluded,
        "totalResults": result.total_results,
        "existingExcluded": result.existing_excluded,
        "seedsExcluded": result.seeds_excluded,
        "seedDomains": plan.seeds if plan else [],
    }
    if plan is None or not plan.seeds:
        summary["message"] = NO_SEEDS_MESSAGE
    return summary
