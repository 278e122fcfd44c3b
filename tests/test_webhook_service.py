"""The dispatch webhook as a service on the internet: what an anonymous caller can learn
(/healthz, the docs), the key it starts with, the audit trail in its log, the answer it owes
the Edge Function in time, redaction, and one cancellation watcher per job.

The audit test runs `tam webhook` as a subprocess on a real socket against the session's
Prefect server, as production does, and reads its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from deployments.webhook.app import (
    MIN_SERVICE_KEY_CHARS,
    ServiceKeyMissing,
    ServiceKeyTooShort,
    create_app,
    run,
)
from deployments.webhook.dispatch import PrefectDispatcher, PrefectUnavailable, RunInfo, RunSpec
from flows import FLOWS
from local.prefect_server import free_port
from tam.failures import describe_failure, redact
from tam.models import JobStatus, JobUpdate, Project
from tam.settings import Settings, get_settings
from tam.stores import Store, StoreError, open_store

ROOT = Path(__file__).resolve().parent.parent
KEY = "svc-service-test-key-6f0d2c8e41b7a9035e"
HEADERS = {"x-api-key": KEY}
DB_PASSWORD = "Pa$$w0rd-zq81"
DB_URL_WITH_PASSWORD = "postgresql://tam_user:Pa%24%24w0rd-zq81@db.internal.example:6543/postgres"


class StubDispatcher:
    """Prefect as the webhook sees it, with the failures these tests need."""

    def __init__(self) -> None:
        self.runs: dict[UUID, RunInfo] = {}
        self.check_error: BaseException | None = None
        self.start_error: BaseException | None = None

    def set_state(self, run_id: UUID, state_type: str) -> None:
        self.runs[run_id] = RunInfo(id=run_id, state_type=state_type, state_name=state_type.title())

    async def start_run(self, spec: RunSpec) -> RunInfo:
        if self.start_error is not None:
            raise self.start_error
        run_id = uuid4()
        self.set_state(run_id, "SCHEDULED")
        return self.runs[run_id]

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        return self.runs.get(flow_run_id)

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        run = self.runs.get(flow_run_id)
        if run is None or run.is_final:
            return run
        # A worker holds the run: it stays Cancelling until the worker stops it.
        self.set_state(flow_run_id, "CANCELLING")
        return self.runs[flow_run_id]

    async def check(self) -> None:
        if self.check_error is not None:
            raise self.check_error

    def run_url(self, flow_run_id: UUID) -> str:
        return f"http://prefect.test/runs/flow-run/{flow_run_id}"


def settings_for(url: str, **extra: Any) -> Settings:
    return Settings(database_url=url, service_api_key=KEY, **extra)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'tam.db'}")
    await store.init_schema()
    yield store
    await store.close()


@contextlib.asynccontextmanager
async def webhook(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            yield client
    finally:
        for task in list(app.state.background):
            task.cancel()


async def new_job(store: Store, job_type: str = "qualify") -> tuple[UUID, UUID]:
    project = await store.create_project(Project(id=uuid4(), name="p"))
    job = await store.create_job(project.id, job_type)
    return project.id, job.id


def body(project_id: UUID, job_id: UUID, job_type: str = "qualify") -> dict[str, str]:
    return {"jobId": str(job_id), "jobType": job_type, "projectId": str(project_id)}


# --- /healthz ---------------------------------------------------------------------------------
async def test_healthz_answers_fixed_words_and_logs_the_reason(
    db: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = StubDispatcher()
    secret_host = "prefect-7f3a.internal.example"
    dispatcher.check_error = PrefectUnavailable(
        f"Prefect API unreachable (ConnectError: http://admin:s3cret-xyz@{secret_host}:4200)"
    )
    caplog.set_level(logging.WARNING, logger="tam.webhook")
    async with webhook(create_app(settings_for("sqlite://"), db, dispatcher)) as client:
        down = await client.get("/healthz")
        dispatcher.check_error = None
        up = await client.get("/healthz")
    assert down.status_code == 503
    assert down.json() == {"status": "degraded", "database": "ok", "prefect": "unavailable"}
    assert up.status_code == 200
    assert up.json() == {"status": "ok", "database": "ok", "prefect": "ok"}
    # The reason is in the log, for the operator, without the URL's password.
    assert secret_host in caplog.text and "s3cret-xyz" not in caplog.text

    broken = open_store(f"sqlite:///{tmp_path}")  # a folder: the database cannot open
    async with webhook(create_app(settings_for("sqlite://"), broken, StubDispatcher())) as client:
        answer = await client.get("/healthz")
    await broken.close()
    assert answer.status_code == 503
    assert answer.json() == {"status": "degraded", "database": "unavailable", "prefect": "ok"}


# --- the docs ---------------------------------------------------------------------------------
DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


async def test_docs_are_off_unless_enabled(db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async with webhook(create_app(settings_for("sqlite://"), db, StubDispatcher())) as client:
        for path in DOC_PATHS:
            answer = await client.get(path)
            assert answer.status_code == 404, (path, answer.text)
            assert "openapi" not in answer.text.lower()

    monkeypatch.setenv("TAM_WEBHOOK_DOCS", "true")
    enabled = Settings(database_url="sqlite://", service_api_key=KEY)
    assert enabled.webhook_docs is True
    async with webhook(create_app(enabled, db, StubDispatcher())) as client:
        for path in DOC_PATHS:
            assert (await client.get(path)).status_code == 200, path
        schema = (await client.get("/openapi.json")).json()
    assert "/api/tam/run" in schema["paths"]


# --- the key ----------------------------------------------------------------------------------
def test_refuses_to_start_with_a_short_service_key(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "k" * (MIN_SERVICE_KEY_CHARS - 1)
    with pytest.raises(ServiceKeyTooShort, match=f"at least {MIN_SERVICE_KEY_CHARS}"):
        create_app(
            Settings(database_url="sqlite://", service_api_key=short), None, StubDispatcher()
        )
    # Still a ServiceKeyMissing: whoever handles "no usable key" handles this too.
    assert issubclass(ServiceKeyTooShort, ServiceKeyMissing)
    just_enough = "k" * MIN_SERVICE_KEY_CHARS
    create_app(
        Settings(database_url="sqlite://", service_api_key=just_enough), None, StubDispatcher()
    )

    monkeypatch.setenv("SERVICE_API_KEY", short)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match=f"needs at least {MIN_SERVICE_KEY_CHARS}") as exited:
            run(port=0)
        assert short not in str(exited.value)  # the message says how long, not what
    finally:
        get_settings.cache_clear()


# --- redaction --------------------------------------------------------------------------------
def test_the_database_password_is_a_secret_value() -> None:
    settings = Settings(database_url=DB_URL_WITH_PASSWORD, service_api_key=KEY)
    values = settings.secret_values()
    assert KEY in values and DB_PASSWORD in values and "Pa%24%24w0rd-zq81" in values
    libpq = Settings(database_url="postgresql://db/x?user=u&password=q%2Fwerty-77")
    assert {"q%2Fwerty-77", "q/werty-77"} <= set(libpq.secret_values())
    assert Settings(database_url="sqlite:///x.db").secret_values() == []

    error = StoreError(
        f"connection to {DB_URL_WITH_PASSWORD} failed: the server said {DB_PASSWORD!r} is wrong"
    )
    message = describe_failure(error, values)
    assert "db.internal.example" in message  # the message still says where
    assert DB_PASSWORD not in message and "Pa%24%24" not in message
    # A URL that is not the configured one loses its password too (a pooler's, say).
    other = redact("via postgres://pooler.user:another-pw-991@pool.example:6543/db", [])
    assert "another-pw-991" not in other and "pooler.user" in other


async def test_a_dispatch_error_quoting_the_database_url_never_carries_its_password(
    db: Store,
) -> None:
    dispatcher = StubDispatcher()
    dispatcher.start_error = PrefectUnavailable(
        f"Prefect API error (OperationalError: {DB_URL_WITH_PASSWORD} refused {DB_PASSWORD})"
    )
    project_id, job_id = await new_job(db)
    settings = settings_for(DB_URL_WITH_PASSWORD)
    async with webhook(create_app(settings, db, dispatcher)) as client:
        answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == 502
    job = await db.get_job(job_id)
    for text in (answer.text, str(job.result_summary)):
        assert "db.internal.example" in text
        assert DB_PASSWORD not in text and "Pa%24%24w0rd" not in text


# --- one watcher per job ----------------------------------------------------------------------
async def test_two_cancels_of_a_job_start_one_watcher(db: Store) -> None:
    dispatcher = StubDispatcher()
    project_id, job_id = await new_job(db)
    run_id = uuid4()
    dispatcher.set_state(run_id, "RUNNING")
    await db.update_job(job_id, JobUpdate(status=JobStatus.running, flow_run_id=run_id))
    app = create_app(settings_for("sqlite://"), db, dispatcher)
    async with webhook(app) as client:
        url = f"/api/tam/jobs/{job_id}/cancel?projectId={project_id}"
        first = await client.post(url, headers=HEADERS)
        second = await client.post(url, headers=HEADERS)
        assert first.status_code == second.status_code == 202, second.text
        assert len(app.state.background) == 1
        (watcher,) = app.state.background
        assert app.state.watchers.get(job_id) is watcher and not watcher.done()

        # The run ends Cancelled: the one watcher ends the row and leaves the registry.
        dispatcher.set_state(run_id, "CANCELLED")
        await asyncio.wait_for(watcher, timeout=30)
        assert (await db.get_job(job_id)).status == JobStatus.cancelled
        assert len(app.state.background) == 0 and app.state.watchers.get(job_id) is None


# --- the dispatch budget ----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers: a Prefect API that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client hangs up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_dispatch_answers_502_within_its_budget_when_prefect_hangs(db: Store) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    project_id, job_id = await new_job(db)
    # The client's own timeout is far past the budget: only the budget can answer in time.
    dispatcher = PrefectDispatcher(timeout_s=300)
    settings = settings_for("sqlite://", dispatch_budget_s=1.0)
    async with silent_server() as api_url:
        with temporary_settings({PREFECT_API_URL: api_url}):
            async with webhook(create_app(settings, db, dispatcher)) as client:
                post = client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
                # NOTE: 60 s of slack for a loaded machine; without the budget it takes 300+.
                answer = await asyncio.wait_for(post, timeout=60)
    assert answer.status_code == 502
    assert "1 s dispatch budget" in answer.json()["error"]


# --- deduplicated -----------------------------------------------------------------------------
@pytest.mark.prefect
async def test_a_run_prefect_returns_for_the_idempotency_key_is_deduplicated(
    prefect_server: Any, db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.webhook.dispatch import run_spec

    deployment_name = f"webhook-service-{uuid4().hex[:8]}"
    monkeypatch.setenv("TAM_DEPLOYMENT_NAME", deployment_name)
    deployment = await FLOWS["qualify"].ato_deployment(name=deployment_name)
    await deployment.apply()  # nothing serves it: its runs stay Scheduled
    dispatcher = PrefectDispatcher()
    project_id, job_id = await new_job(db)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    # A concurrent dispatch of the same job created the run and has not recorded it on
    # the row yet: this dispatch reads the row without a run and computes the same key.
    spec = run_spec(
        FLOWS["qualify"].name,
        "qualify",
        project_id=project_id,
        job_id=job_id,
        previous_run_id=None,
        deployment_name=deployment_name,
    )
    created = await dispatcher.start_run(spec)

    other_project, other_job = await new_job(db)
    async with webhook(create_app(settings_for("sqlite://"), db, dispatcher)) as client:
        answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        fresh = await client.post(
            "/api/tam/run", json=body(other_project, other_job), headers=HEADERS
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["taskId"] == str(created.id)
    assert answer.json()["deduplicated"] is True
    assert (await db.get_job(job_id)).flow_run_id == created.id
    assert fresh.status_code == 200 and fresh.json()["deduplicated"] is False
    assert created.existing is False  # the dispatcher tells its own creation apart


# --- the audit trail, as `tam webhook` prints it ------------------------------------------------
@pytest.fixture
def served_webhook(
    prefect_server: Any, tmp_path: Path
) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`tam webhook` on a free port: its base URL, its output file and its environment."""
    database_url = f"sqlite:///{tmp_path / 'tam.db'}"
    env = {
        **os.environ,
        **prefect_server.env(),
        "TAM_ENV_FILE": "",
        "TAM_DATABASE_URL": database_url,
        "SERVICE_API_KEY": KEY,
        "TAM_DEPLOYMENT_NAME": f"webhook-audit-{uuid4().hex[:8]}",
    }
    env.pop("TAM_WEBHOOK_DOCS", None)
    port = free_port()
    log = tmp_path / "webhook.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "webhook", "--port", str(port)],
            cwd=ROOT,
            env=env,
            # uvicorn prints access lines on stdout, everything else on stderr.
            stdout=err,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", log, env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def wait_until_up(url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise AssertionError(f"the webhook did not come up:\n{log.read_text()[-3000:]}")


async def wait_for_line(log: Path, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no line matching {pattern!r} in:\n{log.read_text()[-4000:]}")


@pytest.mark.prefect
async def test_tam_webhook_logs_dispatches_cancels_and_refused_keys_after_prefect_ran(
    served_webhook: tuple[str, Path, dict[str, str]],
) -> None:
    url, log, env = served_webhook
    deployment = await FLOWS["qualify"].ato_deployment(name=env["TAM_DEPLOYMENT_NAME"])
    await deployment.apply()  # nothing serves it: its runs stay Scheduled
    store = open_store(env["TAM_DATABASE_URL"])
    await store.init_schema()
    try:
        project_id, job_id = await new_job(store)
        await store.update_job(job_id, JobUpdate(status=JobStatus.running))
    finally:
        await store.close()
    await wait_until_up(url, log)
    wrong_key = "wrong-" + uuid4().hex
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        # The first dispatch imports the flows and talks to Prefect; the lines after it
        # are the ones Prefect's logging setup used to swallow.
        first = await http.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        again = await http.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        wrong = await http.post(
            "/api/tam/run", json=body(project_id, job_id), headers={"x-api-key": wrong_key}
        )
        missing = await http.get(f"/api/tam/jobs/{job_id}?projectId={project_id}")
        cancel = await http.post(
            f"/api/tam/jobs/{job_id}/cancel?projectId={project_id}", headers=HEADERS
        )
    assert first.status_code == again.status_code == 200, first.text
    assert (wrong.status_code, missing.status_code, cancel.status_code) == (401, 401, 200)
    run_id = first.json()["taskId"]

    common = f"job={job_id} type=qualify project={project_id} flow_run={run_id}"
    await wait_for_line(
        log, rf"tam\.webhook\.audit - dispatch {common} state=\S+ deduplicated=false"
    )
    await wait_for_line(
        log, rf"tam\.webhook\.audit - dispatch {common} state=\S+ deduplicated=true"
    )
    await wait_for_line(
        log, r"refused key=wrong client=127\.0\.0\.1:\d+ method=POST path=/api/tam/run"
    )
    await wait_for_line(
        log, rf"refused key=missing client=127\.0\.0\.1:\d+ method=GET path=/api/tam/jobs/{job_id}"
    )
    await wait_for_line(
        log, rf"cancel job={job_id} project={project_id} flow_run={run_id} .*outcome=row-cancelled"
    )
    # uvicorn's access lines survive too, for the requests after Prefect was imported.
    await wait_for_line(log, r'"GET /api/tam/jobs/\S+ HTTP/1\.1" 401')
    text = log.read_text()
    assert KEY not in text and wrong_key not in text
