"""The transition table (tam/job_transitions.py; docs/contracts.md, "Who moves the job row")
and the store's guard.

Every (writer, move) the table has, against a row in every status, owned by the writer's run
or another one: the pure `admits` and the compare-and-set each backend applies (SQLite,
Postgres, Supabase REST over FakePostgrest) must give the table's answer. Then the writers
themselves: the reporter, the hooks, the reaper, and the one way they open the store.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest
import respx

from tam.job_reporter import ClaimRefused, JobReporter
from tam.job_transitions import (
    EDGE_FUNCTION_FROM,
    TABLE,
    JobGuard,
    Move,
    TransitionNotAllowed,
    Writer,
    guard,
)
from tam.models import Job, JobStatus, JobUpdate, Project
from tam.settings import Settings, get_settings
from tam.stores import Store, open_store
from tests.fixtures.postgrest import KEY, URL, FakePostgrest

ROOT = Path(__file__).resolve().parents[1]
MINE, OTHER = UUID(int=1), UUID(int=2)
P, R, C, F, X = (
    JobStatus.pending,
    JobStatus.running,
    JobStatus.completed,
    JobStatus.failed,
    JobStatus.cancelled,
)
ALL = frozenset(JobStatus)
NOT_COMPLETED = ALL - {C}
NOW = datetime.now(UTC)
OLD = NOW - timedelta(hours=1)

# From which statuses each (writer, move) may write a row whose flow_run_id is the run the
# writer names (its own, or the one it saw), claimed (started_at set), heartbeat stale.
OWN_ROW: dict[tuple[Writer, Move], frozenset[JobStatus]] = {
    (Writer.edge_function, Move.dispatch): frozenset({P, F, X}),
    (Writer.webhook, Move.new_attempt): NOT_COMPLETED,
    (Writer.webhook, Move.dispatch_failed): NOT_COMPLETED,
    (Writer.webhook, Move.restore_completed): frozenset({P, R}),
    (Writer.webhook, Move.cancel): frozenset({P, R}),
    (Writer.run, Move.claim): NOT_COMPLETED,
    (Writer.run, Move.progress): frozenset({R}),
    (Writer.run, Move.complete): frozenset({R}),
    (Writer.run, Move.fail): frozenset({R}),
    (Writer.run, Move.cancel): frozenset({R}),
    (Writer.hook, Move.fail): frozenset({P, R}),
    (Writer.hook, Move.cancel): frozenset({P, R}),
    (Writer.reaper, Move.fail): frozenset({R}),
}
# ...and a row another run owns: only the moves that do not ask whose run it is.
OTHER_ROW: dict[tuple[Writer, Move], frozenset[JobStatus]] = {
    key: (allowed if key in {(Writer.edge_function, Move.dispatch), (Writer.run, Move.claim)}
          else frozenset())
    for key, allowed in OWN_ROW.items()
}  # fmt: skip


def make_guard(writer: Writer, move: Move, run: UUID | None = MINE) -> JobGuard:
    if (writer, move) in {(Writer.edge_function, Move.dispatch), (Writer.run, Move.claim)}:
        return guard(writer, move)
    if writer == Writer.reaper:
        return guard(writer, move, flow_run_id=run, stale_before=NOW - timedelta(minutes=5))
    return guard(writer, move, flow_run_id=run)


@dataclass(frozen=True)
class Case:
    writer: Writer
    move: Move
    status: JobStatus
    row_run: UUID | None
    allowed: bool
    started: bool = True
    heartbeat: datetime = OLD
    summary: dict[str, Any] | None = None
    guard_run: UUID | None = MINE

    @property
    def id(self) -> str:
        run = {MINE: "mine", OTHER: "other", None: "none"}[self.row_run]
        extra = ("" if self.started else "-queued") + ("-dispatchmark" if self.summary else "")
        return f"{self.writer}-{self.move}-from-{self.status}-{run}{extra}"


def cases() -> list[Case]:
    out = [
        Case(w, m, s, row_run, s in table[(w, m)])
        for row_run, table in ((MINE, OWN_ROW), (OTHER, OTHER_ROW))
        for (w, m) in TABLE
        for s in JobStatus
    ]
    mark = {"error": "Could not dispatch the job: down", "dispatch": True}
    out += [
        # The owning run wins over a dispatch-failure mark made while it was alive...
        *(
            Case(Writer.run, m, F, MINE, True, summary=mark)
            for m in (Move.progress, Move.complete, Move.fail, Move.cancel)
        ),  # fmt: skip
        # ...not another run, and not a failure that was not the webhook's.
        Case(Writer.run, Move.complete, F, OTHER, False, summary=mark),
        Case(Writer.run, Move.complete, F, MINE, False, summary={"error": "boom"}),
        Case(Writer.hook, Move.fail, F, MINE, False, summary=mark),
        # The reaper: never a queued row (no run claimed it), never a fresh heartbeat.
        Case(Writer.reaper, Move.fail, R, MINE, False, started=False),
        Case(Writer.reaper, Move.fail, R, MINE, False, heartbeat=NOW),
        Case(Writer.reaper, Move.fail, R, None, True, guard_run=None),
        # The webhook fails a dispatch only over the run it saw (none here).
        Case(Writer.webhook, Move.dispatch_failed, R, None, True, guard_run=None),
        Case(Writer.webhook, Move.dispatch_failed, R, MINE, False, guard_run=None),
        Case(Writer.webhook, Move.new_attempt, F, None, True, guard_run=None),
        # A run outside Prefect (no flow run id) is judged by status alone.
        Case(Writer.run, Move.progress, R, OTHER, True, guard_run=None),
        Case(Writer.hook, Move.fail, R, OTHER, True, guard_run=None),
    ]
    return out


CASES = cases()


def as_job(case: Case, job_id: UUID, project_id: UUID) -> Job:
    return Job(
        id=job_id,
        project_id=project_id,
        job_type="qualify",
        status=case.status,
        flow_run_id=case.row_run,
        started_at=OLD if case.started else None,
        heartbeat_at=case.heartbeat,
        created_at=OLD,
        result_summary=case.summary,
    )


def case_guard(case: Case) -> JobGuard:
    return make_guard(case.writer, case.move, case.guard_run)


# --- the table itself ------------------------------------------------------------------------
def test_table_covers_every_writer_and_nothing_else() -> None:
    assert set(OWN_ROW) == set(TABLE)
    assert {w for w, _ in TABLE} == set(Writer)
    with pytest.raises(TransitionNotAllowed):
        guard(Writer.reaper, Move.complete, flow_run_id=None, stale_before=NOW)
    with pytest.raises(TransitionNotAllowed):
        guard(Writer.hook, Move.complete, flow_run_id=MINE)
    with pytest.raises(ValueError, match="flow_run_id is required"):
        guard(Writer.hook, Move.fail)  # "whose run?" must never default to "none"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_guard_admits_what_the_table_says(case: Case) -> None:
    job = as_job(case, uuid4(), uuid4())
    assert case_guard(case).admits(job) is case.allowed


def test_edge_function_allowed_from_matches_the_typescript() -> None:
    source = (ROOT / "deployments/edge-function/tam-run-job.ts").read_text()
    found = re.search(r"STARTABLE_STATUSES\s*=\s*\[([^\]]*)\]", source)
    assert found, "tam-run-job.ts no longer declares STARTABLE_STATUSES"
    in_ts = set(re.findall(r"[\"'](\w+)[\"']", found.group(1)))
    assert in_ts == {s.value for s in EDGE_FUNCTION_FROM}
    assert JobStatus.completed not in EDGE_FUNCTION_FROM


# --- the store applies it, in one statement --------------------------------------------------
@pytest.fixture
def postgrest() -> Iterator[FakePostgrest]:
    fake = FakePostgrest()
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(side_effect=fake)
        mock.route().pass_through()
        yield fake
    fake.engine.dispose()


def supabase_settings() -> Settings:
    return Settings(supabase_url=URL, supabase_service_role_key=KEY)  # type: ignore[arg-type]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("supabase_rest", id="supabase_rest"),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'tam.db'}")
    elif request.param == "postgres":
        store = open_store(request.getfixturevalue("pg_url"))
    else:
        request.getfixturevalue("postgrest")
        store = open_store(settings=supabase_settings())
    await store.init_schema()
    yield store
    await store.close()


async def put_row(store: Store, case: Case, project_id: UUID) -> UUID:
    job = await store.create_job(project_id, "qualify")
    await store.update_job(
        job.id,
        JobUpdate(
            status=case.status,
            flow_run_id=case.row_run,
            started_at=OLD if case.started else None,
            heartbeat_at=case.heartbeat,
            result_summary=case.summary,
        ),
    )
    return job.id


async def test_every_backend_applies_the_guard_as_the_table_says(backend: Store) -> None:
    project = await backend.create_project(Project(id=uuid4(), name="p"))
    wrong: list[str] = []
    for case in CASES:
        job_id = await put_row(backend, case, project.id)
        before = await backend.get_job(job_id)
        assert case_guard(case).admits(before) is case.allowed, case.id  # the row is as meant
        changed = await backend.update_job(
            job_id, JobUpdate(current_step="written"), guard=case_guard(case)
        )
        after = await backend.get_job(job_id)
        if changed is not case.allowed or (after.current_step == "written") is not case.allowed:
            wrong.append(case.id)
    assert wrong == []


async def test_only_if_status_is_still_a_plain_status_guard(backend: Store) -> None:
    project = await backend.create_project(Project(id=uuid4(), name="p"))
    job = await backend.create_job(project.id, "qualify")
    assert not await backend.update_job(
        job.id, JobUpdate(progress=5), only_if_status=[JobStatus.running]
    )
    assert await backend.update_job(job.id, JobUpdate(progress=5), only_if_status=[P, R])
    assert (await backend.get_job(job.id)).progress == 5


# --- the run (JobReporter) --------------------------------------------------------------------
@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'tam.db'}")
    await store.init_schema()
    yield store
    await store.close()


async def new_job(store: Store) -> Job:
    project = await store.create_project(Project(id=uuid4(), name="p"))
    return await store.create_job(project.id, "qualify")


async def test_the_run_overrides_a_dispatch_failure_mark_made_while_it_was_alive(
    db: Store,
) -> None:
    job = await new_job(db)
    run_id = uuid4()
    reporter = JobReporter(db, job.id, progress_interval_s=0.0, heartbeat_interval_s=3600)
    await reporter.start(flow_run_id=run_id, step="qualifying")
    # A duplicate dispatch saw Prefect down and marked the live job failed (older webhook).
    await db.update_job(
        job.id,
        JobUpdate(
            status=JobStatus.failed,
            result_summary={"error": "Could not dispatch the job: down", "dispatch": True},
            completed_at=NOW,
        ),
    )
    reporter.set_total(10)
    reporter.advance(5)
    await reporter.step("qualifying 10 companies")
    row = await db.get_job(job.id)
    assert (row.status, row.progress, row.result_summary) == (JobStatus.running, 50, None)
    assert await reporter.complete({"total": 10})
    row = await db.get_job(job.id)
    assert (row.status, row.progress, row.result_summary) == (
        JobStatus.completed,
        100,
        {"total": 10},
    )


async def test_an_older_attempt_cannot_end_the_row_of_the_newer_one(db: Store) -> None:
    job = await new_job(db)
    old = JobReporter(db, job.id, heartbeat_interval_s=3600)
    await old.start(flow_run_id=uuid4(), step="starting")
    new = JobReporter(db, job.id, heartbeat_interval_s=3600)
    await new.start(flow_run_id=uuid4(), step="starting")
    assert not await old.fail("the old attempt's late failure")
    assert (await db.get_job(job.id)).status == JobStatus.running
    assert await new.complete({"total": 0})
    await old._stop_pump()


async def test_a_completed_job_is_not_claimed_again(db: Store) -> None:
    job = await new_job(db)
    first = JobReporter(db, job.id, heartbeat_interval_s=3600)
    await first.start(flow_run_id=uuid4(), step="starting")
    await first.complete({"total": 3})
    with pytest.raises(ClaimRefused, match="completed"):
        await JobReporter(db, job.id).start(flow_run_id=uuid4(), step="starting")
    row = await db.get_job(job.id)
    assert (row.status, row.result_summary) == (JobStatus.completed, {"total": 3})


# --- the hooks ---------------------------------------------------------------------------------
def flow_run(run_id: UUID, job_id: UUID) -> Any:
    return SimpleNamespace(id=run_id, parameters={"job_id": str(job_id)})


def crashed(message: str) -> Any:
    return SimpleNamespace(message=message)


@pytest.fixture
def sqlite_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'tam.db'}"
    monkeypatch.setenv("TAM_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


async def test_a_hook_ends_the_row_only_when_its_run_owns_it(sqlite_settings: str) -> None:
    from orchestration.hooks import mark_job_cancelled, mark_job_crashed

    store = open_store(sqlite_settings)
    await store.init_schema()
    try:
        job = await new_job(store)
        old_run, new_run = uuid4(), uuid4()
        # The job's new attempt (new_run) is queued; the old attempt's run crashes late.
        await store.update_job(
            job.id, JobUpdate(status=JobStatus.running, flow_run_id=new_run, current_step="queued")
        )
        await mark_job_crashed(None, flow_run(old_run, job.id), crashed("worker lost"))
        await mark_job_cancelled(None, flow_run(old_run, job.id), crashed(""))
        row = await store.get_job(job.id)
        assert (row.status, row.result_summary) == (JobStatus.running, None)

        await mark_job_crashed(None, flow_run(new_run, job.id), crashed("worker lost"))
        row = await store.get_job(job.id)
        assert row.status == JobStatus.failed and "worker lost" in row.result_summary["error"]  # type: ignore[index]
    finally:
        await store.close()


# --- one way to open the store (SUPABASE_URL + key, no TAM_DATABASE_URL) ---------------------
@pytest.fixture
def supabase_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TAM_DATABASE_URL", raising=False)
    monkeypatch.setenv("SUPABASE_URL", URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    get_settings.cache_clear()
    assert "database_url" not in get_settings().model_fields_set
    yield
    get_settings.cache_clear()


async def test_hooks_write_to_supabase_when_only_supabase_is_configured(
    supabase_env: None, postgrest: FakePostgrest
) -> None:
    from orchestration.hooks import mark_job_crashed

    rest = open_store(settings=supabase_settings())
    try:
        job = await new_job(rest)
        run_id = uuid4()
        await rest.update_job(job.id, JobUpdate(status=JobStatus.running, flow_run_id=run_id))
        await mark_job_crashed(None, flow_run(run_id, job.id), crashed("worker lost"))
        assert (await rest.get_job(job.id)).status == JobStatus.failed
    finally:
        await rest.close()


@pytest.mark.prefect
async def test_reaper_and_job_session_use_supabase_when_only_supabase_is_configured(
    prefect_server: Any, supabase_env: None, postgrest: FakePostgrest
) -> None:
    from prefect import flow

    from flows.reaper import reap_stale_jobs
    from orchestration.session import job_session
    from tam.models import JobType

    rest = open_store(settings=supabase_settings())
    try:
        stale = await new_job(rest)
        await rest.update_job(
            stale.id, JobUpdate(status=JobStatus.running, started_at=OLD, heartbeat_at=OLD)
        )
        assert (await reap_stale_jobs(stale_after_s=60))["jobIds"] == [str(stale.id)]
        assert (await rest.get_job(stale.id)).status == JobStatus.failed

        job = await new_job(rest)

        @flow(name="session-probe")
        async def probe() -> str:
            async with job_session(JobType.qualify, job.project_id, job.id) as session:
                return type(session.store).__name__

        assert await probe() == "SupabaseRestStore"
        row = await rest.get_job(job.id)
        assert row.status == JobStatus.running and row.started_at is not None
    finally:
        await rest.close()
