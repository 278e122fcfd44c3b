"""Bad data never blocks a write, and schema creation is safe from many processes at once.

- NUL and the other C0 controls (providers and scraped pages send them) are stripped at the
  model boundary, so Postgres and PostgREST take the batch that carries them whole;
- a row the database still refuses (a constraint) is isolated by the batch writer in
  log2 writes, the rest of its batch is stored and the job completes; a refused verdict
  leaves its company `pending` with "Needs review (could not be stored: ...)";
- `init_schema()` from N processes on one new database: every one succeeds.

SQLite accepts NUL, so the NUL cases run on Postgres and on PostgREST's semantics (the fake
answers 400 / 22P05 as PostgREST over Postgres does).
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
import respx

from tam.batch_writer import BatchWriter
from tam.models import (
    NEEDS_REVIEW_PREFIX,
    Company,
    ContactUpdate,
    JobStatus,
    JobUpdate,
    NewCompany,
    NewContact,
    Project,
    QualificationResult,
    QualificationStatus,
)
from tam.settings import Settings
from tam.steps.qualify import QualifyTally, store_refused
from tam.stores import SqlStore, Store, open_store
from tam.text import clean_json, clean_text
from tests.fixtures.postgres import PgServer
from tests.fixtures.postgrest import KEY, URL, FakePostgrest
from tests.helpers.schema_race import init_schema_at_once

NUL = "\x00"
BATCH = 100
# One refused row of a batch of n costs the first write, then two per halving.
MAX_WRITES = 1 + 2 * math.ceil(math.log2(BATCH))


# --- backends -------------------------------------------------------------------------------
@pytest.fixture
def postgrest() -> Iterator[FakePostgrest]:
    fake = FakePostgrest()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(side_effect=fake)
        yield fake
    fake.engine.dispose()


async def _open(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Store:
    if kind == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'tam.db'}")
    elif kind == "postgres":
        store = open_store(request.getfixturevalue("pg_url"))
    else:
        request.getfixturevalue("postgrest")
        settings = Settings(supabase_url=URL, supabase_service_role_key=KEY)  # type: ignore[arg-type]
        store = open_store(settings=settings)
    await store.init_schema()
    return store


POSTGRES = pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)
REST = pytest.param("supabase_rest", id="supabase_rest")


@pytest.fixture(params=[POSTGRES, REST])
async def nul_refusing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A backend that refuses NUL as production does."""
    store = await _open(request, request.param, tmp_path)
    yield store
    await store.close()


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), POSTGRES, REST])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store = await _open(request, request.param, tmp_path)
    yield store
    await store.close()


async def new_project(store: Store) -> Project:
    return await store.create_project(
        Project(id=uuid.uuid4(), name=f"Bad{NUL} data", icp_profile={"whatYouSell": f"CRM{NUL}"})
    )


async def companies_of(store: Store, project_id: UUID) -> list[Company]:
    return [c async for page in store.iter_companies(project_id) for c in page]


def plain_company(project_id: UUID, n: int) -> NewCompany:
    return NewCompany(project_id=project_id, name=f"Company {n}", domain=f"company{n}.com")


def dirty_company(project_id: UUID, n: int) -> NewCompany:
    return NewCompany(
        project_id=project_id,
        name=f"Acme{NUL} Corp\x07",
        domain=f"company{n}.com",
        description=f"Scraped{NUL} text\twith\r\nbreaks\x1b[0m",
        location=f"Austin{NUL}",
        raw_data={"about": f"x{NUL}y", f"key{NUL}": [f"deep{NUL}", {"n": "\ud800ok", "k": 1}]},
    )


def has_nul(value: Any) -> bool:
    return NUL in json.dumps(value, default=str, ensure_ascii=False)


# --- the sanitizer ----------------------------------------------------------------------------
def test_clean_text_strips_what_postgres_refuses_and_keeps_layout() -> None:
    assert clean_text(f"a{NUL}b\x01\x08\x0b\x0c\x0e\x1f\ud800c") == "abc"
    assert clean_text("tab\tnew\nline\rend") == "tab\tnew\nline\rend"
    assert clean_text("emoji 😀 and é stay") == "emoji 😀 and é stay"
    clean = "nothing to do"
    assert clean_text(clean) is clean
    doc = {"a": [1, "b", {"c": None}], "d": 2.5}
    assert clean_json(doc) is doc  # a clean document is not copied
    assert clean_json({f"k{NUL}": [f"v{NUL}", ({"w": "\x02x"},)]}) == {"k": ["v", ({"w": "x"},)]}


def test_every_model_that_goes_to_the_store_is_cleaned() -> None:
    project_id, company_id = uuid.uuid4(), uuid.uuid4()
    company = dirty_company(project_id, 1)
    assert company.name == "Acme Corp"
    assert company.description == "Scraped text\twith\r\nbreaks[0m"
    assert company.raw_data == {"about": "xy", "key": ["deep", {"n": "ok", "k": 1}]}
    models: list[Any] = [
        company,
        Company.model_validate({"id": company_id, "project_id": project_id, "name": f"a{NUL}"}),
        NewContact(
            project_id=project_id,
            company_id=company_id,
            first_name=f"Ann{NUL}",
            title=f"VP{NUL}",
            linkedin_url=f"https://linkedin.com/in/ann{NUL}",
            raw_data={"p": f"{NUL}"},
        ),
        ContactUpdate(contact_id=company_id, email=f"a{NUL}@b.com", raw_data={"x": [NUL]}),
        QualificationResult(
            company_id=company_id,
            status=QualificationStatus.qualified,
            reason=f"Fits{NUL}",
            raw={"why": NUL},
        ),
        Project(id=project_id, name=f"P{NUL}", icp_profile={"specialCriteria": NUL}),
        JobUpdate(current_step=f"step{NUL}", result_summary={"error": f"boom{NUL}"}),
    ]
    for model in models:
        assert not has_nul(model.model_dump(mode="json")), type(model).__name__


# --- NUL at the boundary: the whole batch is stored ------------------------------------------
async def test_a_batch_with_nul_in_one_company_is_stored_whole_and_clean(
    nul_refusing: Store,
) -> None:
    store = nul_refusing
    project = await new_project(store)
    batch = [plain_company(project.id, n) for n in range(BATCH)]
    batch[42] = dirty_company(project.id, 42)
    inserted = await store.upsert_companies(batch)
    assert len(inserted) == BATCH
    stored = {c.domain: c for c in await companies_of(store, project.id)}
    assert len(stored) == BATCH
    bad = stored["company42.com"]
    assert bad.name == "Acme Corp" and bad.location == "Austin"
    assert bad.description == "Scraped text\twith\r\nbreaks[0m"
    assert bad.raw_data == {"about": "xy", "key": ["deep", {"n": "ok", "k": 1}]}
    assert (await store.get_project(project.id)).name == "Bad data"


async def test_verdicts_and_contacts_with_nul_are_stored_clean(nul_refusing: Store) -> None:
    store = nul_refusing
    project = await new_project(store)
    companies = await store.upsert_companies([plain_company(project.id, n) for n in range(3)])
    await store.save_qualifications(
        [
            QualificationResult(
                company_id=c.id,
                status=QualificationStatus.qualified,
                reason=f"Matches{NUL} 'saas'",
                raw={"model": f"claude{NUL}", "echo": [f"{NUL}"]},
            )
            for c in companies
        ]
    )
    contacts = await store.upsert_contacts(
        [
            NewContact(
                project_id=project.id,
                company_id=c.id,
                first_name=f"Ann{NUL}",
                title=f"VP{NUL} Sales",
                linkedin_url=f"https://www.linkedin.com/in/ann-{i}",
                raw_data={"prospeo": {"headline": f"Hi{NUL}"}},
            )
            for i, c in enumerate(companies)
        ]
    )
    assert len(contacts) == 3
    await store.update_contacts(
        [
            ContactUpdate(contact_id=c.id, email_status="found", raw_data={"w": f"x{NUL}"})
            for c in contacts
        ]
    )
    stored = await companies_of(store, project.id)
    assert {c.qualification_reason for c in stored} == {"Matches 'saas'"}
    assert all(c.raw_data["qualification"] == {"model": "claude", "echo": [""]} for c in stored)
    people = [c async for page in store.iter_contacts(project.id) for c in page]
    assert {(p.first_name, p.title, p.email_status) for p in people} == {
        ("Ann", "VP Sales", "found")
    }
    assert all(p.raw_data == {"w": "x"} for p in people)


# --- a row the database refuses: isolated, the rest written -----------------------------------
class Bogus(StrEnum):
    # A status outside tam_companies_qualification_status_check: no sanitizer can fix it.
    maybe = "maybe"


async def test_a_refused_verdict_is_isolated_and_left_needs_review(backend: Store) -> None:
    store = backend
    project = await new_project(store)
    companies = await store.upsert_companies([plain_company(project.id, n) for n in range(BATCH)])
    results = [
        QualificationResult(company_id=c.id, status=QualificationStatus.qualified, reason="Fits")
        for c in companies
    ]
    poisoned = companies[63].id
    results[63] = QualificationResult.model_construct(
        company_id=poisoned, status=Bogus.maybe, reason="?", raw={}
    )
    writes: list[int] = []

    async def flush(batch: Sequence[QualificationResult]) -> None:
        writes.append(len(batch))
        await store.save_qualifications(batch)

    tally = QualifyTally(qualified=BATCH - 1)
    # max_outage_s < 0: a single write counted as an outage would fail the writer at once.
    writer = BatchWriter(
        flush, batch_size=BATCH, interval_s=60, max_outage_s=-1, on_rejected=store_refused(tally)
    )
    for result in results:
        await writer.add(result)
    await writer.close()

    by_id = {c.id: c for c in await companies_of(store, project.id)}
    bad = by_id.pop(poisoned)
    assert all(c.qualification_status == QualificationStatus.qualified for c in by_id.values())
    assert len(by_id) == BATCH - 1
    assert bad.qualification_status == QualificationStatus.pending
    reason = bad.qualification_reason or ""
    assert reason.startswith(f"{NEEDS_REVIEW_PREFIX} (could not be stored: "), reason
    assert "check" in reason.lower() and "maybe" not in reason  # the cause, not the row
    assert writer.rejected == 1 and writer.pending == 0
    # Bisection, then the one fallback write: not one write per row.
    assert len(writes) <= MAX_WRITES + 1, writes
    assert tally.store_errors == 1 and tally.qualified == BATCH - 1


async def test_a_company_that_cannot_be_inserted_is_counted_and_the_rest_stored(
    backend: Store,
) -> None:
    store = backend
    project = await new_project(store)
    batch = [plain_company(project.id, n) for n in range(BATCH)]
    # Its project is gone (deleted while the job ran): a foreign-key violation.
    batch[17] = NewCompany(project_id=uuid.uuid4(), name="Orphan", domain="orphan.com")
    refused: list[str] = []
    writes = 0

    async def flush(items: Sequence[NewCompany]) -> None:
        nonlocal writes
        writes += 1
        await store.upsert_companies(items)

    def on_rejected(company: NewCompany, exc: Exception) -> None:
        refused.append(f"{company.domain}: {exc}")

    writer = BatchWriter(
        flush, batch_size=BATCH, interval_s=60, max_outage_s=-1, on_rejected=on_rejected
    )
    for company in batch:
        await writer.add(company)
    await writer.close()
    assert len(await companies_of(store, project.id)) == BATCH - 1
    assert len(refused) == 1 and refused[0].startswith("orphan.com: ")
    assert writer.rejected == 1 and writes <= MAX_WRITES


# --- whole qualify jobs on Postgres ---------------------------------------------------------
@pytest.fixture
async def pg_store(
    tam_env: dict[str, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Store]:
    """The flows' database is Postgres; a write outage fails a job within a second (old
    code counted a refused batch as one, so it would fail, not hang)."""
    from tam.settings import get_settings

    monkeypatch.setenv("TAM_DATABASE_URL", pg_url)
    monkeypatch.setenv("TAM_WRITE_MAX_OUTAGE_S", "1")
    get_settings.cache_clear()
    store = open_store(pg_url)
    await store.init_schema()
    yield store
    await store.close()
    get_settings.cache_clear()


async def seed_qualify(store: Store, n: int, *, dirty: bool) -> tuple[UUID, UUID]:
    from tam.emulators.world import sample_companies
    from tests.helpers.seed import ICP

    project = await store.create_project(Project(id=uuid.uuid4(), name="pg", icp_profile=ICP))
    companies = []
    for i, fields in enumerate(sample_companies(n, 7)):
        if dirty and i % 10 == 0:  # scraped text as providers return it
            fields = {
                **fields,
                "description": f"{fields.get('description') or ''}{NUL}\x0c",
                "raw_data": {"html": f"<p>{NUL}</p>"},
            }
        companies.append(NewCompany(project_id=project.id, **fields))
    await store.upsert_companies(companies)
    job = await store.create_job(project.id, "qualify")
    return project.id, job.id


@pytest.mark.postgres
@pytest.mark.prefect
@pytest.mark.parametrize("dirty_data", [False, True], ids=["answers", "answers_and_data"])
async def test_qualify_on_postgres_completes_when_answers_and_data_carry_nul(
    prefect_server: Any, pg_store: Store, emulator_control: Any, dirty_data: bool
) -> None:
    from flows.qualify import qualify_companies

    # Every answer's reason ends in a NUL, as a model echoing scraped text would.
    emulator_control.configure("anthropic", reason_suffix=f"{NUL}\x01", needs_review_pct=0)
    project_id, job_id = await seed_qualify(pg_store, 30, dirty=dirty_data)
    summary = await qualify_companies(project_id=project_id, job_id=job_id)

    job = await pg_store.get_job(job_id)
    assert job.status == JobStatus.completed, job.result_summary
    companies = await companies_of(pg_store, project_id)
    assert len(companies) == 30
    assert all(c.qualification_status != QualificationStatus.pending for c in companies)
    assert summary["qualified"] + summary["disqualified"] == 30
    assert summary["storeErrors"] == 0
    for company in companies:
        assert not has_nul(company.model_dump(mode="json")), company.domain


@pytest.mark.postgres
@pytest.mark.prefect
async def test_qualify_on_postgres_a_refused_verdict_completes_the_job_as_needs_review(
    prefect_server: Any, pg_store: Store, pg_url: str, emulator_control: Any
) -> None:
    from flows.qualify import qualify_companies

    emulator_control.configure("anthropic", needs_review_pct=0)
    project_id, job_id = await seed_qualify(pg_store, 30, dirty=False)
    poisoned = (await companies_of(pg_store, project_id))[11]
    # A rule of this install's own that refuses a verdict for one company: the kind of
    # refusal no sanitizer can fix.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE tam_companies ADD CONSTRAINT tam_test_refuses_one_verdict "
            f"CHECK (domain IS DISTINCT FROM '{poisoned.domain}' "
            "OR qualification_status = 'pending')"
        )
    summary = await qualify_companies(project_id=project_id, job_id=job_id)

    job = await pg_store.get_job(job_id)
    assert job.status == JobStatus.completed, job.result_summary
    by_id = {c.id: c for c in await companies_of(pg_store, project_id)}
    bad = by_id.pop(poisoned.id)
    assert bad.qualification_status == QualificationStatus.pending
    reason = bad.qualification_reason or ""
    assert reason.startswith(f"{NEEDS_REVIEW_PREFIX} (could not be stored: "), reason
    # (the test cluster's password is "tam", so "tam" itself is redacted in messages)
    assert "test_refuses_one_verdict" in reason
    assert all(c.qualification_status != QualificationStatus.pending for c in by_id.values())
    assert summary["storeErrors"] == 1 and summary["needsReview"] == 1
    assert summary["qualified"] == sum(
        c.qualification_status == QualificationStatus.qualified for c in by_id.values()
    )
    assert summary["project"]["needs_review"] == 1


# --- init_schema from many processes at once (§7) --------------------------------------------
PROCESSES = 6
ROUNDS = 2


async def _usable(url: str) -> dict[str, int]:
    store = SqlStore(url)
    try:
        project = await new_project(store)
        return await store.count_companies(project.id)
    finally:
        await store.close()


def test_init_schema_from_many_processes_at_once_on_sqlite(tmp_path: Path) -> None:
    for n in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'new{n}.db'}"
        assert init_schema_at_once(url, PROCESSES) == ["ok"] * PROCESSES
        assert asyncio.run(_usable(url))["total"] == 0


@pytest.mark.postgres
def test_init_schema_from_many_processes_at_once_on_postgres(pg_server: PgServer) -> None:
    for _ in range(ROUNDS):
        name = f"tam_test_{uuid.uuid4().hex[:12]}"
        url = pg_server.create_database(name)
        try:
            assert init_schema_at_once(url, PROCESSES) == ["ok"] * PROCESSES
            assert asyncio.run(_usable(url))["total"] == 0
        finally:
            pg_server.drop_database(name)
