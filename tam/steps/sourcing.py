"""Sourcing: Discolike look-alikes and Google Places text search into pending companies.

No Prefect here. A run is planned as a list of queries (one Discolike search over every
seed group, one per Places text query); queries run concurrently under each account's
limiter, and the companies they find are deduplicated by normalized domain (by place id
for places without a website) against each other and the project before a batched upsert.
Each chunk pulls queries from the run's stream (tam.steps.chunks); a query leaves a chunk's
hands only once it has run to its end, so a retried chunk reruns exactly the queries its
failed attempt had not finished, and the run's dedup keeps their companies counted once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tam.batch_writer import BatchWriter
from tam.clients._retry import call_with_retries
from tam.clients.discolike import MAX_SEED_DOMAINS, DiscolikeClient
from tam.clients.discolike import to_new_company as discolike_company
from tam.clients.google_places import PAGE_TOKEN_RETRIES, GooglePlacesClient, PlacesPage
from tam.clients.google_places import to_new_company as places_company
from tam.domains import normalize_domain
from tam.errors import InvalidRequest, JobInputError
from tam.limiters import AccountLimiter
from tam.models import Company, IcpProfile, NewCompany, Project, ProjectStatus
from tam.runtime import JobRuntime
from tam.steps.chunks import Chunk, ChunkState, PageStream, chunk_count, work_chunk
from tam.stores.base import Store

PLACES_PAGE_SIZE = 20
MAX_PLACES_QUERIES = 50
MAX_PLACES_QUERY_CHARS = 500


class SourceQuery(BaseModel):
    """One unit of sourcing work (and of progress)."""

    kind: Literal["discolike", "google_places"]
    label: str
    # discolike
    seed_groups: list[list[str]] = []
    icp_text: str | None = None
    countries: list[str] = []
    employee_ranges: list[str] = []
    max_records: int = 0
    min_digital_footprint: int | None = None
    # google_places
    text: str | None = None
    region_code: str | None = None
    max_results: int = 0


def icp_text(icp: IcpProfile) -> str | None:
    """What Discolike matches by meaning: the target's industries and business model.

    NOTE: `whatYouSell` is the seller's product, not the buyer's profile; matching on it
    would find the seller's competitors.
    """
    parts = [", ".join(k for k in icp.industry_keywords if k.strip()), icp.business_model or ""]
    text = ". ".join(p.strip() for p in parts if p and p.strip())
    return text or None


def places_queries(project: Project, extra: Sequence[str] | None = None) -> list[str]:
    """Text queries for Google Places: the ICP's `placesQueries` plus the flow's own.

    Each query is a paid search (up to 3 pages), so the list is bounded: more than
    `MAX_PLACES_QUERIES`, a query longer than `MAX_PLACES_QUERY_CHARS` or one that is not
    text fails the job naming the field rather than spending on it.
    """
    raw = (project.icp_profile or {}).get("placesQueries") or []
    values = [*(raw if isinstance(raw, list) else [raw]), *(extra or [])]
    seen: dict[str, None] = {}
    for index, value in enumerate(values):
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise JobInputError(f"placesQueries.{index}: a query must be text")
        text = " ".join(str(value).split())
        if len(text) > MAX_PLACES_QUERY_CHARS:
            raise JobInputError(
                f"placesQueries.{index}: a query is at most {MAX_PLACES_QUERY_CHARS} characters"
            )
        if text:
            seen.setdefault(text, None)
    if len(seen) > MAX_PLACES_QUERIES:
        raise JobInputError(
            f"placesQueries: at most {MAX_PLACES_QUERIES} queries per run, got {len(seen)}"
        )
    return list(seen)


def places_max_results(project: Project, default: int) -> int:
    limits = (project.icp_profile or {}).get("sourcingLimits") or {}
    value = limits.get("placesMaxResults") if isinstance(limits, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, default)
    return default


def plan_queries(
    project: Project,
    icp: IcpProfile,
    *,
    extra_places: Sequence[str] | None,
    places_limit: int,
    min_digital_footprint: int | None,
) -> list[SourceQuery]:
    """The run's queries; empty when the ICP gives nothing to search by."""
    queries: list[SourceQuery] = []
    seeds = icp.seed_domains()
    text = icp_text(icp)
    if seeds or text:
        groups = [seeds[i : i + MAX_SEED_DOMAINS] for i in range(0, len(seeds), MAX_SEED_DOMAINS)]
        queries.append(
            SourceQuery(
                kind="discolike",
                label=f"discolike: {len(seeds)} seeds" + (" + ICP text" if text else ""),
                seed_groups=groups or [[]],
                icp_text=text,
                countries=icp.countries(),
                employee_ranges=icp.employee_size_ranges,
                max_records=icp.sourcing_limits.discolike_max_records,
                min_digital_footprint=min_digital_footprint,
            )
        )
    countries = icp.countries()
    region = countries[0] if len(countries) == 1 else None
    limit = places_max_results(project, places_limit)
    for query in places_queries(project, extra_places):
        queries.append(
            SourceQuery(
                kind="google_places",
                label=f"places: {query}",
                text=query,
                region_code=region,
                max_results=limit,
            )
        )
    return queries


@dataclass
class SourcingTally:
    """What one chunk counted; the run's is their sum (rows inserted: the run's writer)."""

    queries: int = 0
    discolike_results: int = 0
    places_results: int = 0
    places_without_domain: int = 0
    found: int = 0
    already_in_project: int = 0
    seeds_excluded: int = 0  # look-alikes that were one of the run's own seeds
    inserted: int = 0

    def add(self, other: SourcingTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class SourceSummary(BaseModel):
    """The source_companies job's result_summary."""

    model_config = ConfigDict(populate_by_name=True)

    companies_found: int = Field(0, alias="companiesFound")
    inserted: int = 0
    # Found, new to the project, yet not inserted: a concurrent run inserted them first.
    failed: int = 0
    already_in_project: int = Field(0, alias="alreadyInProject")
    discolike_results: int = Field(0, alias="discolikeResults")
    places_results: int = Field(0, alias="placesResults")
    places_without_domain: int = Field(0, alias="placesWithoutDomain")
    queries: int = 0
    total_companies: int = Field(0, alias="totalCompanies")
    cost_usd: float = Field(0.0, alias="costUsd")
    usage: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Companies the database refused (logged; the rest of their batch was written).
    store_errors: int | None = Field(None, alias="storeErrors")


@dataclass
class SourcingRun:
    """One sourcing run: what its chunks share, and each chunk's state."""

    runtime: JobRuntime
    queries: list[SourceQuery]
    chunks: int = 0
    discolike: DiscolikeClient | None = None
    places: GooglePlacesClient | None = None
    limiters: dict[str, AccountLimiter] = field(default_factory=dict)
    writer: BatchWriter[NewCompany] | None = None
    stream: PageStream[SourceQuery] | None = None
    existing_domains: set[str] = field(default_factory=set)
    existing_place_ids: set[str] = field(default_factory=set)
    written: SourcingTally = field(default_factory=SourcingTally)  # rows really inserted
    states: dict[int, ChunkState[SourceQuery, SourcingTally]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    @property
    def project_id(self) -> UUID:
        return self.runtime.project_id

    async def offer(
        self, company: NewCompany, tally: SourcingTally, place_id: str | None = None
    ) -> bool:
        """Queue a company unless this run or the project already has it; True when it is
        new to this run (found)."""
        assert self.writer is not None
        key = company.domain or (f"place:{place_id}" if place_id else None)
        if key is None or key in self._seen:
            return False
        self._seen.add(key)
        tally.found += 1
        if (company.domain and company.domain in self.existing_domains) or (
            not company.domain and place_id in self.existing_place_ids
        ):
            tally.already_in_project += 1
            return True
        await self.writer.add(company)
        return True


async def load_existing(
    store: Store, project_id: UUID, page_size: int
) -> tuple[set[str], set[str]]:
    """Domains in the project, and the place ids of its companies that have no domain."""
    domains: set[str] = set()
    place_ids: set[str] = set()
    async for page in store.iter_companies(project_id, page_size=page_size):
        for company in page:
            if company.domain:
                domains.add(company.domain)
            elif isinstance(company.raw_data.get("id"), str):
                place_ids.add(company.raw_data["id"])
    return domains, place_ids


def insert_counter(
    store: Store, tally: SourcingTally
) -> Callable[[Sequence[NewCompany]], Awaitable[None]]:
    """The writer's flush: one upsert per batch, counting the rows really inserted."""

    async def flush(batch: Sequence[NewCompany]) -> None:
        inserted: list[Company] = await store.upsert_companies(batch)
        tally.inserted += len(inserted)

    return flush


async def run_discolike(ctx: SourcingRun, query: SourceQuery, tally: SourcingTally) -> None:
    """Every seed group in turn, each asking only for what the record budget has left."""
    client = ctx.discolike
    assert client is not None
    budget = query.max_records
    # Every group's seeds: a later group's look-alikes may be an earlier group's seed.
    all_seeds = {normalize_domain(d) for group in query.seed_groups for d in group}
    for seeds in query.seed_groups:
        if budget <= 0:
            break
        discover = partial(
            client.discover_page,
            domains=seeds,
            country=query.countries,
            max_records=budget,
            min_digital_footprint=query.min_digital_footprint,
            icp_text=query.icp_text,
            employee_ranges=query.employee_ranges,
        )
        page = await call_with_retries(
            discover,
            limiter=ctx.limiters["discolike"],
            max_attempts=ctx.runtime.settings.max_attempts,
        )
        tally.discolike_results += len(page.companies)
        tally.seeds_excluded += page.seeds_dropped
        for item in page.companies:
            if budget <= 0:
                break
            company = discolike_company(ctx.project_id, item)
            if company.domain in all_seeds:
                tally.seeds_excluded += 1
                continue
            # NOTE: not the shared tally's delta: Places queries count there concurrently.
            budget -= await ctx.offer(company, tally)


async def run_places(ctx: SourcingRun, query: SourceQuery, tally: SourcingTally) -> None:
    """One text query, page by page; each page is its own limited, retried request."""
    client = ctx.places
    assert client is not None and query.text
    token: str | None = None
    taken = 0
    while taken < query.max_results:
        size = min(PLACES_PAGE_SIZE, query.max_results - taken)
        page = await _places_page(ctx, client, query, token, size)
        for place in page.places[: query.max_results - taken]:
            taken += 1
            tally.places_results += 1
            company = places_company(ctx.project_id, place)
            if company.domain is None:
                tally.places_without_domain += 1
            await ctx.offer(company, tally, place_id=place.id)
        if not page.next_page_token or not page.places:
            break
        token = page.next_page_token


async def _places_page(
    ctx: SourcingRun,
    client: GooglePlacesClient,
    query: SourceQuery,
    token: str | None,
    size: int,
) -> PlacesPage:
    # NOTE: a page token is valid only a moment after it is issued; wait outside the
    # limiter's slot, and read an early "invalid token" as "not yet", a few times.
    wait = client.page_token_wait_s if token else 0.0
    for attempt in range(PAGE_TOKEN_RETRIES + 1):
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await call_with_retries(
                lambda: client.search_text(
                    query.text or "",
                    page_token=token,
                    page_size=size,
                    region_code=query.region_code,
                ),
                limiter=ctx.limiters["google_places"],
                max_attempts=ctx.runtime.settings.max_attempts,
            )
        except InvalidRequest:
            if token is None or attempt == PAGE_TOKEN_RETRIES:
                raise
            wait = max(client.page_token_wait_s, 0.1) * 2 ** (attempt + 1)
    raise AssertionError("unreachable")


async def start_sourcing(
    runtime: JobRuntime, places_queries: list[str] | None = None
) -> SourcingRun:
    """Plan the queries; with any, read the project's domains and open the clients."""
    project, icp = await runtime.load_project()
    store, settings, reporter = runtime.store, runtime.settings, runtime.reporter
    queries = plan_queries(
        project,
        icp,
        extra_places=places_queries,
        places_limit=settings.places_max_results,
        min_digital_footprint=settings.discolike_min_digital_footprint,
    )
    run = SourcingRun(runtime, queries)
    if not queries:
        runtime.logger.info("The ICP has no seed domains, industry text or places queries")
        return run
    kinds = {q.kind for q in queries}
    run.discolike = runtime.client(DiscolikeClient) if "discolike" in kinds else None
    run.places = runtime.client(GooglePlacesClient) if "google_places" in kinds else None
    run.limiters = {kind: runtime.limiter(kind) for kind in kinds}
    reporter.set_total(len(queries))
    await reporter.step("loading the project's companies")
    run.existing_domains, run.existing_place_ids = await load_existing(
        store, runtime.project_id, settings.read_page_size
    )
    run.writer = runtime.writer(insert_counter(store, run.written))
    run.stream = PageStream.of(queries)
    run.chunks = chunk_count(len(queries), max_chunks=settings.max_task_runs)
    runtime.logger.info(
        "Sourcing with %d queries: %s", len(queries), ", ".join(q.label for q in queries)
    )
    await reporter.step(f"running {len(queries)} sourcing queries")
    return run


async def source_chunk(run: SourcingRun, chunk: Chunk) -> SourcingTally:
    """Run Discolike / Google Places queries under each account's limiter until none is
    left; companies are queued for batched upserts as they arrive.

    A retry of this chunk reruns only the queries its failed attempt had not finished;
    companies already queued are not queued again, and the tally counts both attempts.
    """
    assert run.stream is not None
    state = run.states.setdefault(chunk.index, ChunkState(SourcingTally()))
    tally = state.tally

    async def one(query: SourceQuery) -> None:
        if query.kind == "discolike":
            await run_discolike(run, query, tally)
        else:
            await run_places(run, query, tally)
        tally.queries += 1
        run.runtime.reporter.advance(1)

    # Every query at once, as before: each account's limiter sets the pace.
    window = asyncio.Semaphore(max(1, len(run.queries)))
    await work_chunk(run.stream, state, window, one)
    return dataclasses.replace(tally)


async def finish_sourcing(run: SourcingRun, tallies: Sequence[SourcingTally]) -> SourceSummary:
    """Write the queued companies, move the project to `qualifying`, sum the tallies."""
    runtime = run.runtime
    await runtime.flush_writers()
    tally = SourcingTally()
    for chunk_tally in tallies:
        tally.add(chunk_tally)
    tally.add(run.written)
    await runtime.store.set_project_status(runtime.project_id, ProjectStatus.qualifying)
    counts = await runtime.store.count_companies(runtime.project_id)
    return SourceSummary(
        companies_found=tally.found,
        inserted=tally.inserted,
        failed=max(0, tally.found - tally.already_in_project - tally.inserted),
        already_in_project=tally.already_in_project,
        discolike_results=tally.discolike_results,
        places_results=tally.places_results,
        places_without_domain=tally.places_without_domain,
        queries=tally.queries,
        total_companies=counts["total"],
        cost_usd=round(runtime.meter.total_usd, 6),
        usage=runtime.meter.summary(),
        store_errors=runtime.rejected if run.queries else None,
    )
