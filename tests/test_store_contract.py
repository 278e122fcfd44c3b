"""One contract for every SQL store backend: the same tests on a SQLite file and on Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from tam.models import (
    Company,
    ContactUpdate,
    JobStatus,
    JobUpdate,
    NewCompany,
    NewContact,
    Project,
    ProjectStatus,
    QualificationResult,
    QualificationStatus,
)
from tam.stores import NotFoundInStore, SqlStore, Store, StoreError, open_store, redact_url
from tam.stores.sql_engine import engine_spec
from tests.fixtures.postgres import PgServer, free_port

T = TypeVar("T")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A plain sqlite:/// URL into folders that do not exist yet.
        return f"sqlite:///{tmp_path / 'nested' / 'data' / 'tam.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.init_schema()
    yield s
    await s.close()


async def collect(pages: AsyncIterator[list[T]]) -> list[list[T]]:
    return [page async for page in pages]


def flat(pages: list[list[T]]) -> list[T]:
    return [item for page in pages for item in page]


async def new_project(store: Store, name: str = "Acme TAM") -> Project:
    return await store.create_project(
        Project(id=uuid4(), name=name, icp_profile={"whatYouSell": "CRM", "contactsPerCompany": 2})
    )


def company(project_id: UUID, n: int, **fields: Any) -> NewCompany:
    values: dict[str, Any] = {"name": f"Company {n}", "domain": f"company{n}.com", **fields}
    return NewCompany(project_id=project_id, **values)


# --- schema and projects --------------------------------------------------------------------
async def test_init_schema_is_idempotent_and_keeps_data(store: Store, store_url: str) -> None:
    assert isinstance(store, Store)
    project = await new_project(store)
    await store.upsert_companies([company(project.id, 1)])
    await store.init_schema()
    await store.init_schema()
    assert (await store.get_project(project.id)).name == "Acme TAM"
    assert (await store.count_companies(project.id))["total"] == 1
    if store_url.startswith("sqlite"):
        assert Path(store_url.removeprefix("sqlite:///")).is_file()


async def test_projects_create_get_status_and_not_found(store: Store) -> None:
    project = await new_project(store)
    stored = await store.get_project(project.id)
    assert stored.status == ProjectStatus.sourcing
    assert stored.icp().contacts_per_company == 2
    assert stored.created_at is not None and stored.created_at.tzinfo is not None

    # Creating the same id again keeps the stored row.
    again = await store.create_project(Project(id=project.id, name="Renamed"))
    assert again.name == "Acme TAM"

    await store.set_project_status(project.id, ProjectStatus.enriching)
    assert (await store.get_project(project.id)).status == ProjectStatus.enriching

    with pytest.raises(NotFoundInStore):
        await store.get_project(uuid4())
    with pytest.raises(NotFoundInStore):
        await store.set_project_status(uuid4(), ProjectStatus.complete)

    others = [await new_project(store, f"P{i}") for i in range(4)]
    pages = await collect(store.iter_projects(page_size=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    ids = [p.id for p in flat(pages)]
    assert sorted(ids) == sorted([project.id, *(p.id for p in others)])


# --- companies ------------------------------------------------------------------------------
async def test_upsert_companies_dedups_on_normalized_domain(store: Store) -> None:
    project = await new_project(store)
    first = await store.upsert_companies(
        [
            company(project.id, 1, domain="https://www.Acme.com/about", industry="Software"),
            company(project.id, 99, domain="acme.com", location="Berlin"),  # same company
            company(project.id, 2, domain="beta.io", feedback="disliked"),
            company(project.id, 3, domain=None, source="google_places"),
        ]
    )
    assert sorted(c.domain or "-" for c in first) == ["-", "acme.com", "beta.io"]
    acme = next(c for c in first if c.domain == "acme.com")
    assert (acme.name, acme.industry, acme.location) == ("Company 1", "Software", "Berlin")

    await store.save_qualifications(
        [
            QualificationResult(
                company_id=acme.id, status=QualificationStatus.qualified, reason="Fits"
            )
        ]
    )
    rerun = await store.upsert_companies(
        [
            company(project.id, 1, domain="acme.com", industry="Retail", description="CRM maker"),
            company(project.id, 2, domain="WWW.BETA.IO:443", feedback=None),
            company(project.id, 4, domain="gamma.dev"),
        ]
    )
    assert [c.domain for c in rerun] == ["gamma.dev"]
    assert await store.upsert_companies([company(project.id, 1, domain="acme.com")]) == []

    rows = {c.domain: c for c in flat(await collect(store.iter_companies(project.id)))}
    assert len(rows) == 4
    assert rows["acme.com"].id == acme.id
    assert rows["acme.com"].qualification_status == QualificationStatus.qualified
    assert rows["acme.com"].qualification_reason == "Fits"
    assert rows["acme.com"].industry == "Software"  # a filled field is never overwritten
    assert rows["acme.com"].description == "CRM maker"  # an empty one is filled in
    assert rows["beta.io"].feedback == "disliked"
    assert await store.existing_domains(project.id) == {"acme.com", "beta.io", "gamma.dev"}


async def test_upsert_scopes_domains_per_project(store: Store) -> None:
    one, two = await new_project(store, "one"), await new_project(store, "two")
    assert len(await store.upsert_companies([company(one.id, 1)])) == 1
    assert len(await store.upsert_companies([company(two.id, 1)])) == 1
    assert await store.existing_domains(two.id) == {"company1.com"}


async def test_iter_companies_pages_past_1000_rows_with_filters(store: Store) -> None:
    project = await new_project(store)
    items = [
        company(
            project.id,
            n,
            domain=None if n % 10 == 0 else f"company{n}.com",
            feedback="liked" if n % 7 == 0 else None,
        )
        for n in range(2300)
    ]
    inserted = await store.upsert_companies(items)
    assert len(inserted) == 2300
    by_name = {c.name: c.id for c in inserted}

    pages = await collect(store.iter_companies(project.id, page_size=1000))
    assert [len(page) for page in pages] == [1000, 1000, 300]
    ids = [c.id for c in flat(pages)]
    assert len(set(ids)) == 2300 and set(ids) == set(by_name.values())

    qualified = {by_name[f"Company {n}"] for n in range(0, 2300, 3)}
    await store.save_qualifications(
        [
            QualificationResult(company_id=i, status=QualificationStatus.qualified, reason="ok")
            for i in qualified
        ]
    )
    got = flat(
        await collect(
            store.iter_companies(project.id, status=QualificationStatus.qualified, page_size=250)
        )
    )
    assert sorted(c.id for c in got) == sorted(qualified)

    liked = flat(await collect(store.iter_companies(project.id, feedback="liked")))
    assert {c.name for c in liked} == {f"Company {n}" for n in range(0, 2300, 7)}

    with_domain = flat(await collect(store.iter_companies(project.id, with_domain=True)))
    assert len(with_domain) == 2070 and all(c.domain for c in with_domain)

    both = flat(
        await collect(
            store.iter_companies(project.id, status=QualificationStatus.qualified, with_domain=True)
        )
    )
    assert {c.name for c in both} == {f"Company {n}" for n in range(0, 2300, 3) if n % 10}

    # More ids than one query takes, plus one that is not in the project.
    wanted = [by_name[f"Company {n}"] for n in range(2300) if n % 2 == 0 or n % 5 == 0]
    picked = flat(
        await collect(store.iter_companies(project.id, ids=[*wanted, uuid4()], page_size=400))
    )
    assert len(wanted) == 1380
    assert len(picked) == 1380 and {c.id for c in picked} == set(wanted)
    assert len(await store.existing_domains(project.id)) == 2070


async def test_save_qualifications_and_count_companies(store: Store) -> None:
    project = await new_project(store)
    rows = await store.upsert_companies(
        [company(project.id, n, raw_data={"discolike": {"score": n}}) for n in range(6)]
    )
    ids = [c.id for c in sorted(rows, key=lambda c: c.name)]
    assert await store.count_companies(project.id) == {
        "pending": 6,
        "qualified": 0,
        "disqualified": 0,
        "needs_review": 0,
        "total": 6,
    }
    q, d, p = (
        QualificationStatus.qualified,
        QualificationStatus.disqualified,
        QualificationStatus.pending,
    )
    await store.save_qualifications(
        [
            QualificationResult(company_id=ids[0], status=q, reason="Fits", raw={"model": "m1"}),
            QualificationResult(company_id=ids[1], status=q, reason="Fits too"),
            QualificationResult(company_id=ids[2], status=d, reason="B2C"),
            QualificationResult(company_id=ids[3], status=p, reason="Needs review (API error)"),
            QualificationResult(company_id=ids[4], status=p, reason="Needs review: unclear"),
        ]
    )
    assert await store.count_companies(project.id) == {
        "pending": 3,
        "qualified": 2,
        "disqualified": 1,
        "needs_review": 2,
        "total": 6,
    }
    stored = {c.id: c for c in flat(await collect(store.iter_companies(project.id)))}
    assert stored[ids[0]].raw_data == {"discolike": {"score": 0}, "qualification": {"model": "m1"}}
    assert stored[ids[2]].qualification_reason == "B2C"
    assert stored[ids[5]].qualification_reason is None

    # A re-run retries the needs-review rows; its raw replaces the old qualification entry.
    await store.save_qualifications(
        [QualificationResult(company_id=ids[3], status=q, reason="Fits", raw={"model": "m2"})]
    )
    counts = await store.count_companies(project.id)
    assert (counts["qualified"], counts["needs_review"], counts["pending"]) == (3, 1, 2)
    again = flat(await collect(store.iter_companies(project.id, ids=[ids[3]])))[0]
    assert again.raw_data == {"discolike": {"score": 3}, "qualification": {"model": "m2"}}
    await store.save_qualifications([])


# --- contacts -------------------------------------------------------------------------------
async def test_contacts_upsert_dedup_keeps_email_and_partial_updates(store: Store) -> None:
    project = await new_project(store)
    acme, beta = await store.upsert_companies([company(project.id, 1), company(project.id, 2)])

    def person(c: Company, handle: str, **fields: Any) -> NewContact:
        return NewContact(
            project_id=project.id,
            company_id=c.id,
            linkedin_url=f"https://linkedin.com/in/{handle}",
            **fields,
        )

    first = await store.upsert_contacts(
        [
            person(acme, "ann", first_name="Ann", email="ann@acme.com", email_status="verified"),
            person(acme, "ann", title="CEO"),  # same person twice in one batch
            person(acme, "bob", first_name="Bob"),
            person(beta, "cid", first_name="Cid"),
        ]
    )
    assert sorted(c.first_name or "" for c in first) == ["Ann", "Bob", "Cid"]
    ann = next(c for c in first if c.first_name == "Ann")
    assert ann.title == "CEO"

    rerun = await store.upsert_contacts(
        [
            person(acme, "ann", email="other@acme.com", email_status="found"),
            person(acme, "bob", email="bob@acme.com", email_status="found"),
            person(beta, "dee", first_name="Dee"),
        ]
    )
    assert [c.first_name for c in rerun] == ["Dee"]
    everyone = {
        c.linkedin_url.rsplit("/", 1)[1]: c
        for c in flat(await collect(store.iter_contacts(project.id)))
    }
    assert len(everyone) == 4
    assert (everyone["ann"].id, everyone["ann"].email) == (ann.id, "ann@acme.com")
    assert everyone["ann"].email_status == "verified"
    assert (everyone["bob"].email, everyone["bob"].email_status) == ("bob@acme.com", "found")

    checked = datetime(2026, 11, 20, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    await store.update_contacts(
        [
            ContactUpdate(
                contact_id=ann.id,
                linkedin_active=True,
                linkedin_checked_at=checked,
                linkedin_last_post_date=checked - timedelta(days=3),
            ),
            ContactUpdate(
                contact_id=everyone["cid"].id,
                email_status="not_found",
                raw_data={"hunter": {"score": 0}},
            ),
            ContactUpdate(contact_id=everyone["dee"].id),  # nothing to set
        ]
    )
    after = {c.id: c for c in flat(await collect(store.iter_contacts(project.id)))}
    assert after[ann.id].linkedin_active is True
    checked_at = after[ann.id].linkedin_checked_at
    assert checked_at == checked and checked_at is not None and checked_at.tzinfo is not None
    assert (after[ann.id].email, after[ann.id].title) == ("ann@acme.com", "CEO")
    assert after[everyone["cid"].id].email_status == "not_found"
    assert after[everyone["cid"].id].first_name == "Cid"
    assert after[everyone["cid"].id].raw_data == {"hunter": {"score": 0}}

    only_beta = flat(await collect(store.iter_contacts(project.id, company_ids=[beta.id])))
    assert sorted(c.first_name or "" for c in only_beta) == ["Cid", "Dee"]
    await store.upsert_contacts(
        [person(beta, "x", first_name="NoUrl").model_copy(update={"linkedin_url": ""})]
    )
    linked = flat(await collect(store.iter_contacts(project.id, with_linkedin=True, page_size=2)))
    assert len(linked) == 4


async def test_contacts_to_check_skips_recently_checked_and_urlless(store: Store) -> None:
    project = await new_project(store)
    other = await new_project(store, "other")
    (acme,) = await store.upsert_companies([company(project.id, 1)])
    (elsewhere,) = await store.upsert_companies([company(other.id, 1)])
    now = datetime.now(UTC)
    rows = await store.upsert_contacts(
        [
            NewContact(
                project_id=project.id,
                company_id=acme.id,
                linkedin_url=f"https://linkedin.com/in/p{n}",
                first_name=f"P{n}",
            )
            for n in range(1205)
        ]
        + [
            NewContact(project_id=project.id, company_id=acme.id, linkedin_url="", first_name="X"),
            NewContact(
                project_id=other.id, company_id=elsewhere.id, linkedin_url="https://l.com/in/o"
            ),
        ]
    )
    by_name = {c.first_name: c for c in rows}
    recent = now - timedelta(hours=2)
    old = (now - timedelta(days=3)).astimezone(timezone(timedelta(hours=-7)))
    await store.update_contacts(
        [
            ContactUpdate(contact_id=by_name[f"P{n}"].id, linkedin_checked_at=recent)
            for n in range(0, 1205, 2)
        ]
        + [ContactUpdate(contact_id=by_name["P1"].id, linkedin_checked_at=old)]
    )

    every = flat(await collect(store.iter_contacts_to_check(project.id, page_size=500)))
    assert {c.first_name for c in every} == {f"P{n}" for n in range(1, 1205, 2)} - {"P1"}
    cutoff = (now - timedelta(days=1)).astimezone(timezone(timedelta(hours=5)))
    pages = await collect(
        store.iter_contacts_to_check(project.id, checked_before=cutoff, page_size=300)
    )
    assert [len(page) for page in pages] == [300, 300, 2]
    assert {c.first_name for c in flat(pages)} == {f"P{n}" for n in range(1, 1205, 2)}
    due_later = await collect(
        store.iter_contacts_to_check(project.id, checked_before=now + timedelta(minutes=1))
    )
    assert len(flat(due_later)) == 1205


async def test_auto_refine_opt_in(store: Store) -> None:
    projects = [await new_project(store, f"P{n}") for n in range(5)]
    assert flat(await collect(store.iter_auto_refine_projects())) == []
    for project in projects[:3]:
        await store.set_auto_refine(project.id, True)
    await store.set_auto_refine(projects[0].id, False)
    await store.set_auto_refine(projects[1].id, True)  # again: still once
    pages = await collect(store.iter_auto_refine_projects(page_size=1))
    assert [len(page) for page in pages] == [1, 1]
    assert {p.id for p in flat(pages)} == {projects[1].id, projects[2].id}
    with pytest.raises(NotFoundInStore):
        await store.set_auto_refine(uuid4(), True)


# --- jobs -----------------------------------------------------------------------------------
async def test_jobs_create_update_compare_and_set(store: Store) -> None:
    project = await new_project(store)
    job = await store.create_job(project.id, "qualify")
    assert (job.status, job.progress, job.attempt) == (JobStatus.pending, 0, 0)
    given = uuid4()
    assert (await store.create_job(project.id, "find_contacts", job_id=given)).id == given
    assert (await store.create_job(project.id, "find_contacts", job_id=given)).id == given
    with pytest.raises(NotFoundInStore):
        await store.get_job(uuid4())

    now = datetime.now(UTC)
    flow_run = uuid4()
    # Not running yet: a compare-and-set that expects 'running' changes nothing.
    assert not await store.update_job(
        job.id, JobUpdate(status=JobStatus.completed), only_if_status=[JobStatus.running]
    )
    assert await store.update_job(
        job.id,
        JobUpdate(
            status=JobStatus.running,
            started_at=now,
            heartbeat_at=now,
            flow_run_id=flow_run,
            current_step="Qualifying 10/150",
            done_count=10,
            total_count=150,
            cost_usd=0.25,
            attempt=1,
            progress=7,
        ),
        only_if_status=[JobStatus.pending],
    )
    running = await store.get_job(job.id)
    assert running.status == JobStatus.running and running.flow_run_id == flow_run
    assert (running.done_count, running.total_count, running.progress) == (10, 150, 7)
    assert running.heartbeat_at == now and running.cost_usd == pytest.approx(0.25)

    assert await store.update_job(
        job.id,
        JobUpdate(
            status=JobStatus.completed,
            progress=100,
            completed_at=now,
            result_summary={"qualified": 3, "disqualified": 1, "total": 4},
        ),
        only_if_status=[JobStatus.pending, JobStatus.running],
    )
    # A late failure hook must not overwrite the final state.
    assert not await store.update_job(
        job.id,
        JobUpdate(status=JobStatus.failed, result_summary={"error": "late"}),
        only_if_status=[JobStatus.pending, JobStatus.running],
    )
    done = await store.get_job(job.id)
    assert done.status == JobStatus.completed
    assert done.result_summary == {"qualified": 3, "disqualified": 1, "total": 4}
    assert done.current_step == "Qualifying 10/150"  # None in an update leaves a field alone

    await store.clear_job_result(job.id)
    cleared = await store.get_job(job.id)
    assert cleared.result_summary is None and cleared.completed_at is None
    # The same through update_job, in the statement that starts a new attempt.
    await store.update_job(
        job.id, JobUpdate(result_summary={"x": 1}, completed_at=datetime.now(UTC))
    )
    assert await store.update_job(job.id, JobUpdate(progress=0, clear_result=True))
    restarted = await store.get_job(job.id)
    assert restarted.result_summary is None and restarted.completed_at is None
    assert restarted.current_step == "Qualifying 10/150"
    assert await store.update_job(given, JobUpdate(status=JobStatus.cancelled))
    assert not await store.update_job(uuid4(), JobUpdate(status=JobStatus.failed))
    assert not await store.update_job(job.id, JobUpdate())


async def test_list_jobs_by_status_and_stale_heartbeat(store: Store) -> None:
    project = await new_project(store)
    now = datetime.now(UTC)
    old = now - timedelta(minutes=10)
    plus2, minus5 = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))
    jobs = {name: await store.create_job(project.id, "qualify") for name in "ABCDE"}
    updates = {
        "A": JobUpdate(status=JobStatus.running, heartbeat_at=old.astimezone(plus2)),
        "B": JobUpdate(status=JobStatus.running, heartbeat_at=now.astimezone(minus5)),
        "C": JobUpdate(status=JobStatus.running, started_at=old),
        "D": JobUpdate(status=JobStatus.running),
        "E": JobUpdate(status=JobStatus.completed, heartbeat_at=old),
    }
    for name, update in updates.items():
        assert await store.update_job(jobs[name].id, update)

    cutoff = (now - timedelta(minutes=5)).astimezone(minus5)
    stale = await store.list_jobs(status=[JobStatus.running], heartbeat_before=cutoff)
    assert {j.id for j in stale} == {jobs["A"].id, jobs["C"].id}
    running = await store.list_jobs(status=[JobStatus.running])
    assert {j.id for j in running} == {jobs[n].id for n in "ABCD"}
    assert len(await store.list_jobs()) == 5
    assert len(await store.list_jobs(limit=2)) == 2
    everything_stale = await store.list_jobs(heartbeat_before=now + timedelta(minutes=1))
    assert len(everything_stale) == 5


# --- costs and failures ---------------------------------------------------------------------
async def test_round_trips_grow_with_batches_not_rows(store: Store) -> None:
    project = await new_project(store)
    before = store.round_trips
    for batch in range(10):
        await store.upsert_companies([company(project.id, batch * 100 + n) for n in range(100)])
    writes = store.round_trips - before
    assert 10 <= writes <= 40

    before = store.round_trips
    await store.save_qualifications(
        [
            QualificationResult(company_id=c.id, status=QualificationStatus.qualified, reason="ok")
            for c in flat(await collect(store.iter_companies(project.id, page_size=500)))
        ]
    )
    # 3 pages to read 1,000 rows, then 2 statements and one commit for the 1,000 updates.
    assert store.round_trips - before <= 3 * 2 + 4

    contacts = await store.upsert_contacts(
        [
            NewContact(
                company_id=c.id,
                project_id=project.id,
                linkedin_url=f"https://www.linkedin.com/in/p{n}",
            )
            for n, c in enumerate(flat(await collect(store.iter_companies(project.id)))[:200])
        ]
    )
    before = store.round_trips
    # Updates setting different fields (found, not found, LinkedIn) still share one statement.
    await store.update_contacts(
        [
            ContactUpdate(contact_id=c.id, email=f"p{n}@x.com", email_status="verified")
            if n % 3 == 0
            else ContactUpdate(contact_id=c.id, email_status="not_found")
            if n % 3 == 1
            else ContactUpdate(contact_id=c.id, linkedin_active=True)
            for n, c in enumerate(contacts)
        ]
    )
    assert store.round_trips - before <= 2  # one statement and its commit


async def test_a_cancelled_write_leaves_the_database_writable(store: Store) -> None:
    """A caller cancelled mid-write (a flow cancelled from the UI, a task group failing)
    must not leave its connection holding locks: before the fix, the next write on SQLite
    waited out the 30 s busy timeout and failed with "database is locked"."""
    project = await new_project(store)
    await store.upsert_companies([company(project.id, n) for n in range(3000)])
    companies = flat(await collect(store.iter_companies(project.id, page_size=1000)))
    job = await store.create_job(project.id, "qualify")
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.05):
        write = asyncio.create_task(
            store.save_qualifications(
                [
                    QualificationResult(
                        company_id=c.id, status=QualificationStatus.qualified, reason="ok"
                    )
                    for c in companies
                ]
            )
        )
        await asyncio.sleep(delay)
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write
        # Not a timing assertion: a stuck lock shows as a 30 s wait, far beyond this bound.
        assert await asyncio.wait_for(store.update_job(job.id, JobUpdate(progress=1)), 10)
        await asyncio.wait_for(
            store.save_qualifications(
                [
                    QualificationResult(
                        company_id=companies[0].id,
                        status=QualificationStatus.disqualified,
                        reason="again",
                    )
                ]
            ),
            10,
        )


async def test_a_refused_statement_is_a_store_error(store: Store) -> None:
    # No such project: the foreign key refuses the row (SQLite too, with foreign_keys=ON).
    with pytest.raises(StoreError, match="constraint"):
        await store.upsert_companies([company(uuid4(), 1)])


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_unreachable_database_raises_store_error_without_password(
    kind: str, tmp_path: Path
) -> None:
    secret = "s3cr3t-Passw0rd"
    if kind == "postgres":
        url = f"postgresql://tam:{secret}@127.0.0.1:{free_port()}/tam?sslmode=disable"
    else:
        url = f"sqlite:///{tmp_path}"  # a folder, not a file
    store = open_store(url)
    with pytest.raises(StoreError) as caught:
        await store.init_schema()
    await store.close()
    assert type(caught.value) is StoreError
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert "unavailable" in str(caught.value)
    assert secret not in repr(store)


@pytest.mark.postgres
async def test_store_recovers_after_the_database_restarts(pg_server: PgServer, pg_url: str) -> None:
    store = open_store(pg_url)
    await store.init_schema()
    project = await new_project(store)
    try:
        # A restart while the store sits idle: its pooled connection is dead, unnoticed.
        pg_server.stop()
        pg_server.start()
        assert (await store.get_project(project.id)).id == project.id

        # While the server is down, calls fail with a StoreError, then work again.
        pg_server.stop()
        with pytest.raises(StoreError, match="unavailable"):
            await store.get_project(project.id)
        pg_server.start()
        assert len(await store.upsert_companies([company(project.id, 1)])) == 1
    finally:
        pg_server.start_if_stopped()
        await store.close()


async def test_sqlite_file_is_shared_by_several_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = open_store(url)
    await store.init_schema()
    project = await new_project(store)
    writer = textwrap.dedent(
        f"""
        import asyncio, sys
        from uuid import UUID
        from tam.models import NewCompany, QualificationResult, QualificationStatus
        from tam.stores import open_store

        async def main(worker):
            store = open_store({url!r})
            await store.init_schema()
            for batch in range(10):
                rows = [NewCompany(project_id=UUID({str(project.id)!r}), name=f"c{{n}}",
                                   domain=f"c{{n}}.com")
                        for n in range(batch * 40, batch * 40 + 60)]
                new = await store.upsert_companies(rows)
                await store.save_qualifications([QualificationResult(
                    company_id=c.id, status=QualificationStatus.qualified, reason=str(worker))
                    for c in new])
            await store.close()

        asyncio.run(main(int(sys.argv[1])))
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", writer, str(worker), stderr=subprocess.PIPE
        )
        for worker in range(4)
    ]
    results = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], [err for _, err in results]
    counts = await store.count_companies(project.id)
    assert counts["total"] == 420 and counts["qualified"] == 420
    await store.close()


# --- opening stores -------------------------------------------------------------------------
def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'a.db'}"), SqlStore)
    pg = open_store("postgres://u:pw@localhost:6543/postgres?sslmode=require")
    assert isinstance(pg, SqlStore) and pg.dialect == "postgresql"
    with pytest.raises(StoreError, match="SUPABASE_SERVICE_ROLE_KEY"):
        open_store("https://abcd.supabase.co")
    with pytest.raises(StoreError, match="unsupported"):
        open_store("mysql://u:hunter2@localhost/db")


def test_postgres_urls_are_ready_for_the_transaction_pooler() -> None:
    spec = engine_spec(
        "postgresql://postgres.ref:p%40ss@aws-0-eu.pooler.supabase.com:6543/postgres?sslmode=require"
    )
    assert spec.url.drivername == "postgresql+psycopg"
    assert spec.url.query["sslmode"] == "require"
    assert spec.connect_args["prepare_threshold"] is None
    assert spec.password == "p@ss"
    assert engine_spec("postgres://u:p@h/db").url.drivername == "postgresql+psycopg"
    prisma_style = engine_spec("postgresql://u:p@h:6543/db?pgbouncer=true&sslmode=require")
    assert dict(prisma_style.url.query) == {"sslmode": "require"}


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql://u:hunter2@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "hunter2" not in redact_url("weird+scheme://u:hunter2@host:1/x?y=1")
    assert redact_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
