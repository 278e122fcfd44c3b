"""The tam-run-job Edge Function, run under Deno, against the real webhook and a Supabase stand-in.

deployments/edge-function/tam-run-job.ts runs as a Deno subprocess on a loopback port. It
talks to the real dispatch webhook (deployments.webhook.create_app under uvicorn, with a
recording Dispatcher instead of Prefect) and to tests/edge_stub.py, which plays Supabase's
auth and REST API over the same SQLite database, with the ownership rules of RLS. Deno comes
from scripts/ensure-deno.sh (the npm registry); these tests never skip.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from deployments.webhook.app import create_app
from deployments.webhook.dispatch import RunInfo, RunSpec
from tam.models import Job, JobStatus, JobUpdate, Project
from tam.settings import Settings
from tam.stores import Store, open_store
from tests.edge_stub import ServedApp, SupabaseStub, sign_jwt

REPO = Path(__file__).resolve().parents[1]
FUNCTION = REPO / "deployments" / "edge-function" / "tam-run-job.ts"
ENSURE_DENO = REPO / "scripts" / "ensure-deno.sh"
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
SERVICE_KEY = "svc-key-edge-0123456789abcdef0123456789abcdef"
APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
STARTUP_TIMEOUT_S = 120.0


class RecordingDispatcher:
    """Prefect as the webhook sees it, recording every start_run (one run per key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.specs: list[RunSpec] = []
        self.runs: dict[UUID, RunInfo] = {}
        self.by_key: dict[str, UUID] = {}

    def set_state(self, run_id: UUID, state_type: str) -> None:
        with self._lock:
            self.runs[run_id] = RunInfo(id=run_id, state_type=state_type, state_name=state_type)

    def started_for(self, job_id: UUID) -> list[RunSpec]:
        with self._lock:
            return [s for s in self.specs if s.parameters["job_id"] == str(job_id)]

    async def start_run(self, spec: RunSpec) -> RunInfo:
        with self._lock:
            self.specs.append(spec)
            if spec.idempotency_key not in self.by_key:
                run_id = uuid4()
                self.by_key[spec.idempotency_key] = run_id
                self.runs[run_id] = RunInfo(
                    id=run_id, state_type="SCHEDULED", state_name="Scheduled"
                )
            return self.runs[self.by_key[spec.idempotency_key]]

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        with self._lock:
            return self.runs.get(flow_run_id)

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        return await self.read_run(flow_run_id)

    async def check(self) -> None:
        return None

    def run_url(self, flow_run_id: UUID) -> str:
        return f"http://prefect.test/runs/flow-run/{flow_run_id}"


class EdgeFunction:
    """`deno run` of the function on a loopback port (PORT=0: Deno picks; it prints which)."""

    def __init__(self, deno: str, env: dict[str, str], log: Path) -> None:
        self.deno, self.env, self.log_path = deno, env, log
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> EdgeFunction:
        self._log = self.log_path.open("w")
        env = {**os.environ, **self.env, "PORT": "0", "HOST": "127.0.0.1", "NO_COLOR": "1"}
        env["NO_PROXY"] = "127.0.0.1,localhost"
        self.process = subprocess.Popen(
            [self.deno, "run", "--quiet", "--no-prompt", "--allow-net", "--allow-env", FUNCTION],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.url:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the Edge Function did not start: {self.log_path.read_text()}")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            line = self.process.stdout.readline() if ready else ""
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip().rstrip("/")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def npm_registry_env() -> dict[str, str]:
    """Deno reads no npm config: hand it the registry npm is configured with here."""
    if os.environ.get("NPM_CONFIG_REGISTRY"):
        return {}
    out = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True)
    registry = out.stdout.strip()
    if out.returncode == 0 and registry and registry != DEFAULT_NPM_REGISTRY:
        return {"NPM_CONFIG_REGISTRY": registry}
    return {}


# --- the world: Deno, the database, the stand-in, the webhook, the function -----------------
@pytest.fixture(scope="module")
def deno() -> str:
    result = subprocess.run(
        ["bash", str(ENSURE_DENO)], capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/ensure-deno.sh failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge")


@pytest.fixture(scope="module")
def database_url(world: Path) -> str:
    return f"sqlite:///{world / 'tam.db'}"


@pytest.fixture(scope="module")
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture(scope="module")
def webhook(database_url: str, dispatcher: RecordingDispatcher) -> Iterator[ServedApp]:
    settings = Settings(database_url=database_url, service_api_key=SERVICE_KEY)
    # The webhook opens (and creates the schema of) the database itself, on its own loop.
    with ServedApp(create_app(settings, dispatcher=dispatcher), name="webhook") as served:
        yield served


@pytest.fixture(scope="module")
def supabase(world: Path, webhook: ServedApp) -> Iterator[tuple[SupabaseStub, ServedApp]]:
    stub = SupabaseStub(world / "tam.db")
    with ServedApp(stub.app, name="supabase-stub") as served:
        yield stub, served


def function_env(stub: SupabaseStub, supabase_url: str, webhook_url: str) -> dict[str, str]:
    return {
        **npm_registry_env(),
        "SUPABASE_URL": supabase_url,
        "SUPABASE_ANON_KEY": stub.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": stub.service_key,
        "GTM_SYSTEM_URL": webhook_url,
        "SERVICE_API_KEY": SERVICE_KEY,
        "ALLOWED_ORIGINS": f"{APP_ORIGIN}, https://staging.example.com ,*",
    }


@pytest.fixture(scope="module")
def edge(
    deno: str, world: Path, webhook: ServedApp, supabase: tuple[SupabaseStub, ServedApp]
) -> Iterator[str]:
    stub, served = supabase
    env = function_env(stub, served.url, webhook.url)
    with EdgeFunction(deno, env, world / "deno.log") as function:
        yield function.url


@pytest.fixture
async def store(database_url: str, webhook: ServedApp) -> AsyncIterator[Store]:
    store = open_store(database_url)
    yield store
    await store.close()


@pytest.fixture
def stub(supabase: tuple[SupabaseStub, ServedApp]) -> SupabaseStub:
    return supabase[0]


def customer(stub: SupabaseStub) -> tuple[UUID, str]:
    user_id = uuid4()
    stub.add_user(user_id, f"{user_id.hex[:8]}@customer.example")
    return user_id, stub.user_token(user_id)


async def new_job(
    store: Store, owner: UUID | None, status: JobStatus = JobStatus.pending, **fields: Any
) -> Job:
    project = await store.create_project(Project(id=uuid4(), name="p", user_id=owner))
    job = await store.create_job(project.id, "qualify")
    if status != JobStatus.pending or fields:
        await store.update_job(job.id, JobUpdate(status=status, **fields))
    return await store.get_job(job.id)


async def call(
    url: str, job_id: UUID | str, token: str | None, *, origin: str | None = APP_ORIGIN
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(url, json={"jobId": str(job_id)}, headers=headers)


# --- the function itself ------------------------------------------------------------------
def test_function_type_checks_lints_and_is_formatted(deno: str) -> None:
    for args in (["check"], ["lint"], ["fmt", "--check", "--line-width=100"]):
        result = subprocess.run(
            [deno, *args, str(FUNCTION)],
            capture_output=True,
            text=True,
            env={**os.environ, **npm_registry_env(), "NO_COLOR": "1"},
            timeout=300,
        )
        assert result.returncode == 0, f"deno {args[0]}:\n{result.stdout}{result.stderr}"


def ts_constant(name: str) -> str:
    source = FUNCTION.read_text()
    line = next(x for x in source.splitlines() if x.startswith(f"export const {name} = "))
    return line.split(" = ", 1)[1].removesuffix(";").removesuffix(" as const")


def test_constants_agree_with_the_core() -> None:
    from tam.job_transitions import EDGE_FUNCTION_FROM

    statuses = ", ".join(f'"{status.value}"' for status in EDGE_FUNCTION_FROM)
    assert ts_constant("STARTABLE_STATUSES") == f"[{statuses}]"
    # The function outwaits the webhook's own dispatch budget, so it hears the webhook's answer.
    budget_ms = Settings.model_fields["dispatch_budget_s"].default * 1000
    assert int(ts_constant("WEBHOOK_BUDGET_MS").replace("_", "")) == budget_ms
    assert int(ts_constant("DISPATCH_TIMEOUT_MS").replace("_", "")) > budget_ms


# --- who may start a job ------------------------------------------------------------------
@pytest.mark.parametrize("status", [JobStatus.pending, JobStatus.failed, JobStatus.cancelled])
async def test_owner_starts_their_job_and_the_webhook_dispatches_it(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher, status: JobStatus
) -> None:
    owner, token = customer(stub)
    summary = {"error": "Worker crashed"} if status != JobStatus.pending else None
    job = await new_job(store, owner, status, result_summary=summary)

    response = await call(edge, job.id, token)

    assert response.status_code == 200, response.text
    answer = response.json()
    (spec,) = dispatcher.started_for(job.id)
    run_id = dispatcher.by_key[spec.idempotency_key]
    assert answer == {"success": True, "jobId": str(job.id), "taskId": str(run_id)}
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    row = await store.get_job(job.id)
    assert row.status == JobStatus.running
    assert row.flow_run_id == run_id
    assert row.current_step == "queued"
    assert row.started_at is None  # queued: no worker claimed it yet
    assert row.result_summary is None  # the last attempt's error is gone


async def test_another_customers_job_is_not_found_and_nothing_is_dispatched(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher
) -> None:
    owner, _ = customer(stub)
    _, intruder_token = customer(stub)
    job = await new_job(store, owner)
    before = await store.get_job(job.id)

    theirs = await call(edge, job.id, intruder_token)
    missing = await call(edge, uuid4(), intruder_token)
    nobodys = await call(edge, (await new_job(store, None)).id, intruder_token)

    assert theirs.status_code == missing.status_code == nobodys.status_code == 404
    # The same answer as for a job that does not exist: ids of other customers do not leak.
    assert theirs.json() == missing.json() == nobodys.json() == {"error": "Job not found"}
    assert dispatcher.started_for(job.id) == []
    assert await store.get_job(job.id) == before


@pytest.mark.parametrize("token", ["none", "anon-key", "service-role-key", "forged", "expired"])
async def test_a_caller_without_a_user_session_gets_401(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher, token: str
) -> None:
    owner, _ = customer(stub)
    job = await new_job(store, owner)
    before = await store.get_job(job.id)
    # A well-formed user token for a real user, signed with a key that is not the project's.
    claims = {"sub": str(owner), "role": "authenticated", "exp": int(time.time()) + 3600}
    forged = sign_jwt(claims, "not-the-project-jwt-secret")
    bearer = {
        "none": None,
        "anon-key": stub.anon_key,
        "service-role-key": stub.service_key,
        "forged": forged,
        "expired": stub.user_token(owner, expires_in_s=-60),
    }[token]

    response = await call(edge, job.id, bearer)

    assert response.status_code == 401, response.text
    assert dispatcher.started_for(job.id) == []
    assert await store.get_job(job.id) == before


async def test_a_completed_job_is_409_and_left_as_it_is(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher
) -> None:
    owner, token = customer(stub)
    result = {"qualified": 12, "disqualified": 30, "total": 42}
    job = await new_job(store, owner, JobStatus.completed, progress=100, result_summary=result)
    before = await store.get_job(job.id)

    response = await call(edge, job.id, token)

    assert response.status_code == 409, response.text
    assert dispatcher.started_for(job.id) == []
    after = await store.get_job(job.id)
    assert after == before
    assert (after.status, after.result_summary) == (JobStatus.completed, result)


async def test_a_running_job_is_dispatched_again_without_being_reset(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher
) -> None:
    owner, token = customer(stub)
    run_id = uuid4()
    dispatcher.set_state(run_id, "RUNNING")
    job = await new_job(
        store,
        owner,
        JobStatus.running,
        progress=40,
        current_step="Qualifying 4/10",
        flow_run_id=run_id,
    )
    before = await store.get_job(job.id)

    response = await call(edge, job.id, token)

    assert response.status_code == 200, response.text
    # The webhook hands back the live run; nothing new starts and the row keeps its progress.
    assert response.json()["taskId"] == str(run_id)
    assert dispatcher.started_for(job.id) == []
    assert await store.get_job(job.id) == before


@pytest.mark.parametrize("body", ["null", "[]", '{"jobId": 7}', '{"jobId": "1; drop table"}'])
async def test_a_body_without_a_job_id_is_400(edge: str, stub: SupabaseStub, body: str) -> None:
    _, token = customer(stub)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(edge, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "jobId is required (a UUID)"}


# --- CORS -----------------------------------------------------------------------------------
async def test_cors_answers_only_the_configured_origins(
    edge: str, store: Store, stub: SupabaseStub, dispatcher: RecordingDispatcher
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(timeout=60) as client:
        allowed = await client.options(edge, headers={**preflight, "Origin": APP_ORIGIN})
        staging = await client.options(
            edge, headers={**preflight, "Origin": "https://staging.example.com"}
        )
        refused = await client.options(edge, headers={**preflight, "Origin": OTHER_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert staging.headers["access-control-allow-origin"] == "https://staging.example.com"
    assert "access-control-allow-origin" not in refused.headers

    owner, token = customer(stub)
    job = await new_job(store, owner)
    before = await store.get_job(job.id)
    response = await call(edge, job.id, token, origin=OTHER_ORIGIN)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert dispatcher.started_for(job.id) == []
    assert await store.get_job(job.id) == before


# --- configuration and dispatch failures --------------------------------------------------
async def test_a_plain_http_webhook_url_is_refused(
    deno: str,
    world: Path,
    webhook: ServedApp,
    supabase: tuple[SupabaseStub, ServedApp],
    store: Store,
    dispatcher: RecordingDispatcher,
) -> None:
    stub, served = supabase
    env = {
        **function_env(stub, served.url, webhook.url),
        "GTM_SYSTEM_URL": "http://tam.example.com",
    }
    owner, token = customer(stub)
    job = await new_job(store, owner)
    before = await store.get_job(job.id)

    with EdgeFunction(deno, env, world / "deno-http.log") as function:
        response = await call(function.url, job.id, token)

    assert response.status_code == 500
    assert "GTM_SYSTEM_URL must be an https:// URL" in response.json()["error"]
    assert dispatcher.started_for(job.id) == []
    assert await store.get_job(job.id) == before


async def test_an_unreachable_webhook_fails_only_the_job_this_call_queued(
    deno: str,
    world: Path,
    webhook: ServedApp,
    supabase: tuple[SupabaseStub, ServedApp],
    store: Store,
    dispatcher: RecordingDispatcher,
) -> None:
    stub, served = supabase
    # A bound port that does not listen: connections are refused at once.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {**function_env(stub, served.url, webhook.url), "GTM_SYSTEM_URL": dead_url}
        owner, token = customer(stub)
        queued = await new_job(store, owner)
        run_id = uuid4()
        live = await new_job(store, owner, JobStatus.running, progress=30, flow_run_id=run_id)
        with EdgeFunction(deno, env, world / "deno-dead.log") as function:
            first = await call(function.url, queued.id, token)
            again = await call(function.url, live.id, token)

    assert first.status_code == again.status_code == 502
    assert "unreachable" in first.json()["error"]
    row = await store.get_job(queued.id)
    assert row.status == JobStatus.failed
    assert row.result_summary is not None and "unreachable" in row.result_summary["error"]
    # A job that was running before this call belongs to its run: not failed on our account.
    assert await store.get_job(live.id) == live
