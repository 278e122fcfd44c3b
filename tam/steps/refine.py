"""refine_discolike: more look-alikes of what the user liked, none of what they disliked.

No Prefect here. Seeds are the ICP's seed domains, then the domains of liked companies
(at most 10 in all, Discolike's limit per query); one discover call (`discover_chunk`, the
run's one chunk); results whose domain was disliked or already exists in the project are
dropped; the rest are inserted pending. A retried chunk makes the call again and queues
its companies again (the insert is an upsert), so the result it returns is complete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.discolike import MAX_SEED_DOMAINS, DiscolikeClient, to_new_company
from tam.domains import normalize_domain
from tam.limiters import AccountLimiter
from tam.models import IcpProfile, NewCompany
from tam.runtime import JobRuntime
from tam.steps.chunks import Chunk
from tam.stores.base import Store

PROVIDER = "discolike"

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


class RefineSummary(BaseModel):
    """The refine_discolike job's result_summary: the seven keys of docs/contracts.md,
    "result_summary keys", then extras.
    `failed`: candidates not inserted (another run inserted the same domain first)."""

    model_config = ConfigDict(populate_by_name=True)

    companies_found: int = Field(0, alias="companiesFound")
    inserted: int = 0
    failed: int = 0
    seed_domains_used: int = Field(0, alias="seedDomainsUsed")
    liked_count: int = Field(0, alias="likedCount")
    disliked_excluded: int = Field(0, alias="dislikedExcluded")
    total_results: int = Field(0, alias="totalResults")
    existing_excluded: int = Field(0, alias="existingExcluded")
    seeds_excluded: int = Field(0, alias="seedsExcluded")
    seed_domains: list[str] = Field(default_factory=list, alias="seedDomains")
    message: str | None = None  # only when there was no seed
    # Only once the discover call ran (a run without seeds spends nothing, writes nothing).
    cost_usd: float | None = Field(None, alias="costUsd")
    usage: dict[str, dict[str, float]] | None = None
    # Companies the database refused (logged, and counted in `failed` too).
    store_errors: int | None = Field(None, alias="storeErrors")


def refine_summary(plan: RefinePlan | None, result: RefineResult, inserted: int) -> RefineSummary:
    return RefineSummary(
        companies_found=result.companies_found,
        inserted=inserted,
        failed=max(0, result.companies_found - inserted),
        seed_domains_used=len(plan.seeds) if plan else 0,
        liked_count=len(plan.liked) if plan else 0,
        disliked_excluded=result.disliked_excluded,
        total_results=result.total_results,
        existing_excluded=result.existing_excluded,
        seeds_excluded=result.seeds_excluded,
        seed_domains=plan.seeds if plan else [],
        message=NO_SEEDS_MESSAGE if plan is None or not plan.seeds else None,
    )


@dataclass
class RefineRun:
    """One refine run: its plan, and what its one discover chunk needs."""

    runtime: JobRuntime
    icp: IcpProfile
    plan: RefinePlan
    chunks: int = 0
    count: InsertCount = field(default_factory=InsertCount)
    client: DiscolikeClient | None = None
    limiter: AccountLimiter | None = None
    writer: BatchWriter[NewCompany] | None = None


async def start_refine(runtime: JobRuntime) -> RefineRun:
    """Read the liked and disliked companies; with a seed, get the client and the writer."""
    _, icp = await runtime.load_project()
    store, settings, reporter = runtime.store, runtime.settings, runtime.reporter
    await reporter.step("loading liked and disliked companies")
    plan = await plan_refine(store, runtime.project_id, icp, page_size=settings.read_page_size)
    run = RefineRun(runtime, icp, plan)
    if not plan.seeds:
        return run
    reporter.set_total(1)
    run.chunks = 1
    run.client = runtime.client(DiscolikeClient)
    run.limiter = runtime.limiter(PROVIDER)
    run.writer = runtime.writer(inserter(store, run.count))
    runtime.logger.info(
        "Refining with %d seeds (%d liked); %d disliked domains excluded",
        len(plan.seeds),
        len(plan.liked),
        len(plan.disliked),
    )
    await reporter.step(f"discovering look-alikes of {len(plan.seeds)} seed domains")
    return run


async def discover_chunk(run: RefineRun, chunk: Chunk) -> RefineResult:  # noqa: ARG001
    """One Discolike discover call for the seeds; new companies are queued for insert."""
    assert run.client is not None and run.writer is not None and run.limiter is not None
    result = await refine(
        run.runtime.project_id,
        run.icp,
        run.plan,
        client=run.client,
        limiter=run.limiter,
        writer=run.writer,
        max_attempts=run.runtime.settings.max_attempts,
        min_digital_footprint=run.runtime.settings.discolike_min_digital_footprint,
    )
    run.runtime.reporter.advance(1)
    return result


async def finish_refine(run: RefineRun, results: Sequence[RefineResult]) -> RefineSummary:
    """Write the queued companies and build the summary from the discover result."""
    runtime = run.runtime
    await runtime.flush_writers()
    summary = refine_summary(
        run.plan, results[0] if results else RefineResult(), run.count.inserted
    )
    if run.chunks:
        summary.cost_usd = round(runtime.meter.total_usd, 6)
        summary.usage = runtime.meter.summary()
        summary.store_errors = runtime.rejected
    return summary
