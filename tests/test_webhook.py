"""The dispatch webhook against a real SQLite store: every answer the Edge Function can get.

Prefect is a fake dispatcher here except where Prefect's own behaviour is the point
(idempotency keys, cancelling a scheduled run, an unreachable API): those tests use the
real PrefectDispatcher on the session's Prefect server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from deployments.webhook import http as webhook_http
from deployments.webhook.app import ServiceKeyMissing, create_app, run
from deployments.webhook.dispatch import (
    DeploymentMissing,
    PrefectDispatcher,
    PrefectUnavailable,
    RunInfo,
    RunSpec,
    attempt_key,
    run_spec,
)
from flows import FLOWS
from tam.job_reporter import JobReporter
from tam.models import JobStatus, JobUpdate, Project
from tam.settings import Settings
from tam.stores import Store, StoreError, open_store

KEY = "svc-key-0123456789abcdef-0123456789abcdef"  # the webhook wants 32+ characters
HEADERS = {"x-api-key": KEY}


class FakeDispatcher:
    """Prefect as the webhook sees it: runs by id, one run per idempotency key."""

    def __init__(self) -> None:
        self.runs: dict[UUID, RunInfo] = {}
        self.by_key: dict[str, UUID] = {}
        self.specs: list[RunSpec] = []
        self.cancelled: list[UUID] = []
        self.fail_with: BaseException | None = None
        self.healthy = True

    def set_state(self, run_id: UUID, state_type: str) -> None:
        self.runs[run_id] = RunInfo(id=run_id, state_type=state_type, state_name=state_type.title())

    async def start_run(self, spec: RunSpec) -> RunInfo:
        await asyncio.sleep(0)  # let concurrent dispatches interleave
        if self.fail_with is not None:
            raise self.fail_with
        self.specs.append(spec)
        if spec.idempotency_key not in self.by_key:
            run_id = uuid4()
            self.by_key[spec.idempotency_key] = run_id
            self.set_state(run_id, "SCHEDULED")
        return self.runs[self.by_key[spec.idempotency_key]]

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        if self.fail_with is not None:
            raise self.fail_with
        return self.runs.get(flow_run_id)

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        run = self.runs.get(flow_run_id)
        if run is None or run.is_final:
            return run
        self.cancelled.append(flow_run_id)
        self.set_state(flow_run_id, "CANCELLED" if run.state_type == "SCHEDULED" else "CANCELLING")
        return self.runs[flow_run_id]

    async def check(self) -> None:
        if not self.healthy:
            raise PrefectUnavailable("Prefect API unreachable (ConnectError: refused)")

    def run_url(self, flow_run_id: UUID) -> str:
        return f"http://prefect.test/runs/flow-run/{flow_run_id}"


def settings_for(url: str, key: str | None = KEY) -> Settings:
    # NOTE: docs on, so the schema test can read /openapi.json (production default: off).
    return Settings(database_url=url, service_api_key=key, webhook_docs=True)  # type: ignore[arg-type]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'tam.db'}")
    await store.init_schema()
    yield store
    await store.close()


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
async def client(
    db: Store, dispatcher: FakeDispatcher, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'tam.db'}"), db, dispatcher)
    app.state.cancel_watch_s = 5.0
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as c:
        yield c
    for task in list(app.state.background):
        task.cancel()


async def new_job(store: Store, job_type: str = "qualify") -> tuple[UUID, UUID]:
    project = await store.create_project(Project(id=uuid4(), name="p"))
    job = await store.create_job(project.id, job_type)
    return project.id, job.id


def body(project_id: UUID, job_id: UUID, job_type: str = "qualify") -> dict[str, str]:
    return {"jobId": str(job_id), "jobType": job_type, "projectId": str(project_id)}


# --- start-up and the key -------------------------------------------------------------------
@pytest.mark.parametrize("key", [None, "", "   "])
def test_refuses_to_start_without_service_key(key: str | None, tmp_path: Path) -> None:
    with pytest.raises(ServiceKeyMissing, match="SERVICE_API_KEY"):
        create_app(settings_for(f"sqlite:///{tmp_path / 'x.db'}", key), dispatcher=FakeDispatcher())


def test_run_exits_with_a_message_without_service_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from tam.settings import get_settings

    monkeypatch.delenv("SERVICE_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="SERVICE_API_KEY is not set"):
            run(port=0)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"x-api-key": "wrong"},
        {"x-api-key": KEY + "x"},
        {"x-api-key": KEY[:-1]},
    ],
)
async def test_wrong_or_missing_key_is_401(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher, headers: dict[str, str]
) -> None:
    project_id, job_id = await new_job(db)
    answers = [
        await client.post("/api/tam/run", json=body(project_id, job_id), headers=headers),
        # A bad body must not tell an anonymous caller anything either.
        await client.post("/api/tam/run", content=b"{not json", headers=headers),
        await client.post("/api/tam/run", json={"jobId": "x"}, headers=headers),
        await client.get(f"/api/tam/jobs/{job_id}", headers=headers),
        await client.get("/api/tam/jobs/not-a-uuid", headers=headers),
        await client.post(f"/api/tam/jobs/{job_id}/cancel", headers=headers),
    ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "Unauthorized"}
    assert dispatcher.specs == []
    assert (await db.get_job(job_id)).status == JobStatus.pending


def test_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = webhook_http.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook_http.hmac, "compare_digest", spy)
    assert webhook_http.key_matches(KEY, KEY)
    assert not webhook_http.key_matches(KEY, "nope")
    assert not webhook_http.key_matches(KEY, None)
    assert calls == [(KEY.encode(), KEY.encode()), (KEY.encode(), b"nope")]


# --- POST /api/tam/run ----------------------------------------------------------------------
async def test_dispatch_starts_the_deployment_and_records_the_run(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)

    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["triggered"] is True and data["taskId"] == data["flowRunId"]
    run_id = UUID(data["taskId"])
    assert data["deduplicated"] is False and data["prefectUrl"].endswith(str(run_id))
    assert answer.headers["x-request-id"]
    (spec,) = dispatcher.specs
    assert spec.deployment == f"{FLOWS['qualify'].name}/tam"
    assert spec.parameters == {"project_id": str(project_id), "job_id": str(job_id)}
    assert spec.idempotency_key == attempt_key(job_id, None)
    assert str(job_id)[:8] in spec.name
    assert f"job:{job_id}" in spec.tags and f"project:{project_id}" in spec.tags
    assert (await db.get_job(job_id)).flow_run_id == run_id


async def test_same_job_while_its_run_is_live_gets_the_same_run(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    payload = body(project_id, job_id)
    # Two dispatches racing (the Edge Function retried): one run.
    first, second = await asyncio.gather(
        client.post("/api/tam/run", json=payload, headers=HEADERS),
        client.post("/api/tam/run", json=payload, headers=HEADERS),
    )
    run_id = first.json()["taskId"]
    assert second.json()["taskId"] == run_id and len(dispatcher.by_key) == 1

    for state in ("RUNNING", "PAUSED", "CANCELLING"):
        dispatcher.set_state(UUID(run_id), state)
        again = await client.post("/api/tam/run", json=payload, headers=HEADERS)
        assert again.status_code == 200
        assert again.json()["taskId"] == run_id and again.json()["deduplicated"] is True
    assert len(dispatcher.by_key) == 1


@pytest.mark.parametrize("ended", ["FAILED", "CRASHED", "CANCELLED"])
async def test_a_job_whose_run_ended_unfinished_gets_a_new_attempt(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher, ended: str
) -> None:
    project_id, job_id = await new_job(db)
    payload = body(project_id, job_id)
    first = UUID(
        (await client.post("/api/tam/run", json=payload, headers=HEADERS)).json()["taskId"]
    )
    dispatcher.set_state(first, ended)
    final = JobStatus.cancelled if ended == "CANCELLED" else JobStatus.failed
    await db.update_job(job_id, JobUpdate(status=final, result_summary={"error": "boom"}))

    answer = await client.post("/api/tam/run", json=payload, headers=HEADERS)
    second = UUID(answer.json()["taskId"])
    assert second != first and answer.json()["deduplicated"] is False
    assert dispatcher.specs[-1].idempotency_key == attempt_key(job_id, first)
    job = await db.get_job(job_id)
    assert (job.flow_run_id, job.status, job.result_summary) == (second, JobStatus.running, None)
    assert job.current_step == "queued" and job.started_at is None
    # ...and that attempt is itself idempotent.
    again = await client.post("/api/tam/run", json=payload, headers=HEADERS)
    assert UUID(again.json()["taskId"]) == second


async def test_a_run_prefect_no_longer_knows_gets_a_new_attempt(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    gone = uuid4()
    await db.update_job(job_id, JobUpdate(flow_run_id=gone, status=JobStatus.running))
    answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == 200 and UUID(answer.json()["taskId"]) != gone
    assert dispatcher.specs[-1].idempotency_key == attempt_key(job_id, gone)


@pytest.mark.parametrize("job_type", sorted(FLOWS))
async def test_every_registered_job_type_dispatches_to_its_flow(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher, job_type: str
) -> None:
    project_id, job_id = await new_job(db, job_type)
    payload = body(project_id, job_id, job_type)
    answer = await client.post("/api/tam/run", json=payload, headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert dispatcher.specs[-1].deployment == f"{FLOWS[job_type].name}/tam"


async def test_deployment_name_follows_tam_deployment_name(
    db: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAM_DEPLOYMENT_NAME", "tam-process")  # prefect.yaml's process flavour
    dispatcher = FakeDispatcher()
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'tam.db'}"), db, dispatcher)
    project_id, job_id = await new_job(db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as c:
        answer = await c.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == 200
    assert dispatcher.specs[0].deployment == f"{FLOWS['qualify'].name}/tam-process"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"jobType": "qualify", "projectId": str(uuid4())}, "jobId"),
        ({"jobId": "123", "jobType": "qualify", "projectId": str(uuid4())}, "jobId"),
        ({"jobId": str(uuid4()), "jobType": "qualify"}, "projectId"),
        ({"jobId": str(uuid4()), "jobType": "qualify", "projectId": "p-1"}, "projectId"),
        ({"jobId": str(uuid4()), "projectId": str(uuid4())}, "jobType"),
        ({"jobId": str(uuid4()), "jobType": "mine_bitcoin", "projectId": str(uuid4())}, "jobType"),
        ({"jobId": str(uuid4()), "jobType": 7, "projectId": str(uuid4())}, "jobType"),
        ([1, 2], "body"),
        ("qualify", "body"),
    ],
)
async def test_bad_body_is_400_naming_the_field(
    client: httpx.AsyncClient, dispatcher: FakeDispatcher, payload: Any, field: str
) -> None:
    answer = await client.post("/api/tam/run", json=payload, headers=HEADERS)
    assert answer.status_code == 400, answer.text
    data = answer.json()
    assert data["field"] == field and data["error"].startswith(f"{field}:")
    if "mine_bitcoin" in str(payload):
        assert "qualify" in data["error"]  # says which types exist
    assert dispatcher.specs == []


async def test_unparseable_or_missing_body_is_400(client: httpx.AsyncClient) -> None:
    for content in (b"{not json", b"", b"null"):
        answer = await client.post(
            "/api/tam/run", content=content, headers={**HEADERS, "content-type": "application/json"}
        )
        assert answer.status_code == 400, (content, answer.text)
        assert answer.json()["field"] == "body"


async def test_job_type_must_match_the_row(client: httpx.AsyncClient, db: Store) -> None:
    project_id, job_id = await new_job(db, "find_contacts")
    answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == 400 and answer.json()["field"] == "jobType"


async def test_unknown_job_or_other_project_is_404(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    other_project, _ = await new_job(db)
    missing = await client.post("/api/tam/run", json=body(project_id, uuid4()), headers=HEADERS)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    foreign = await client.post("/api/tam/run", json=body(other_project, job_id), headers=HEADERS)
    assert foreign.status_code == 404
    # GET and cancel: one answer whether the job is missing or another project's.
    for job in (uuid4(), job_id):
        view = await client.get(f"/api/tam/jobs/{job}?projectId={other_project}", headers=HEADERS)
        cancel = await client.post(
            f"/api/tam/jobs/{job}/cancel", json={"projectId": str(other_project)}, headers=HEADERS
        )
        assert view.status_code == cancel.status_code == 404
        assert view.json()["error"] == cancel.json()["error"] == f"Job {job} not found"
    assert foreign.json()["error"] == f"Job {job_id} not found"
    assert (await db.get_job(job_id)).status == JobStatus.pending
    assert dispatcher.specs == []


async def test_oversized_body_is_413_before_parsing(
    client: httpx.AsyncClient, dispatcher: FakeDispatcher
) -> None:
    big = json.dumps({"jobId": "x" * 70_000}).encode()
    answer = await client.post("/api/tam/run", content=big, headers=HEADERS)
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b" " * 8192

    streamed = await client.post("/api/tam/run", content=chunks(), headers=HEADERS)
    assert streamed.status_code == 413
    # Even without the key: the size is checked before anything else.
    assert (await client.post("/api/tam/run", content=big)).status_code == 413
    assert dispatcher.specs == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PrefectUnavailable("Prefect API unreachable (ConnectError: refused)"), 502),
        (DeploymentMissing("Prefect has no deployment 'qualify-companies/tam'"), 503),
    ],
)
async def test_prefect_trouble_answers_5xx_and_fails_the_job(
    client: httpx.AsyncClient,
    db: Store,
    dispatcher: FakeDispatcher,
    error: Exception,
    status: int,
) -> None:
    project_id, job_id = await new_job(db)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))  # as the Edge Function did
    dispatcher.fail_with = error
    answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == status
    assert str(error) in answer.json()["error"]
    job = await db.get_job(job_id)
    assert job.status == JobStatus.failed and job.completed_at is not None
    assert str(error) in (job.result_summary or {})["error"]


async def test_unexpected_error_is_500_without_a_stack_trace(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    dispatcher.fail_with = RuntimeError(f"kaboom {KEY}")
    answer = await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    assert answer.status_code == 500
    data = answer.json()
    assert data == {"error": "Internal error", "requestId": answer.headers["x-request-id"]}
    assert "Traceback" not in answer.text and "kaboom" not in answer.text


async def test_database_down_is_503(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    async def get_job(_job_id: UUID) -> Any:
        raise StoreError("database unavailable (postgresql://u:***@h/db): refused")

    db.get_job = get_job  # type: ignore[method-assign]
    answer = await client.get(f"/api/tam/jobs/{uuid4()}?projectId={uuid4()}", headers=HEADERS)
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "Database unavailable",
        "requestId": answer.headers["x-request-id"],
    }


# --- GET /api/tam/jobs/{id} and cancel ----------------------------------------------------
async def test_job_view_has_progress_eta_and_prefect_link(
    client: httpx.AsyncClient, db: Store
) -> None:
    project_id, job_id = await new_job(db)
    run_id = uuid4()
    started = datetime.now(UTC) - timedelta(seconds=60)
    await db.update_job(
        job_id,
        JobUpdate(
            status=JobStatus.running,
            progress=25,
            started_at=started,
            flow_run_id=run_id,
            current_step="qualifying 100 companies",
            done_count=25,
            total_count=100,
        ),
    )
    view = f"/api/tam/jobs/{job_id}?projectId={project_id}"
    data = (await client.get(view, headers=HEADERS)).json()
    assert (data["status"], data["progress"], data["done"], data["total"]) == (
        "running",
        25,
        25,
        100,
    )
    assert data["currentStep"] == "qualifying 100 companies"
    assert 170 <= data["estimatedSecondsRemaining"] <= 200  # 75 left at 25 per minute
    assert data["flowRunId"] == str(run_id) and data["prefectUrl"].endswith(str(run_id))

    await db.update_job(
        job_id, JobUpdate(status=JobStatus.completed, progress=100, result_summary={"total": 100})
    )
    done = (await client.get(view, headers=HEADERS)).json()
    assert done["estimatedSecondsRemaining"] == 0 and done["resultSummary"] == {"total": 100}
    bad = await client.get(f"/api/tam/jobs/nope?projectId={project_id}", headers=HEADERS)
    assert bad.status_code == 400 and bad.json()["field"] == "jobId"
    unscoped = await client.get(f"/api/tam/jobs/{job_id}", headers=HEADERS)
    assert unscoped.status_code == 400 and unscoped.json()["field"] == "projectId"


async def test_cancel_a_running_job_goes_through_prefect(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    run_id = UUID(
        (await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)).json()[
            "taskId"
        ]
    )
    dispatcher.set_state(run_id, "RUNNING")
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))

    cancel_url = f"/api/tam/jobs/{job_id}/cancel?projectId={project_id}"
    answer = await client.post(cancel_url, headers=HEADERS)
    assert answer.status_code == 202
    assert answer.json()["flowRunState"] == "Cancelling" and dispatcher.cancelled == [run_id]
    # The worker stops the run; if its hook never reports, the webhook's watcher does.
    dispatcher.set_state(run_id, "CANCELLED")
    for _ in range(50):
        if (await db.get_job(job_id)).status == JobStatus.cancelled:
            break
        await asyncio.sleep(0.1)
    assert (await db.get_job(job_id)).status == JobStatus.cancelled

    again = await client.post(cancel_url, headers=HEADERS)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_cancel_without_a_live_run_ends_the_row_here(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, never_dispatched = await new_job(db)
    unscoped = await client.post(f"/api/tam/jobs/{never_dispatched}/cancel", headers=HEADERS)
    assert unscoped.status_code == 400 and unscoped.json()["field"] == "projectId"
    answer = await client.post(
        f"/api/tam/jobs/{never_dispatched}/cancel",
        json={"projectId": str(project_id)},
        headers=HEADERS,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"

    project_id, scheduled = await new_job(db)
    await client.post("/api/tam/run", json=body(project_id, scheduled), headers=HEADERS)
    answer = await client.post(
        f"/api/tam/jobs/{scheduled}/cancel?projectId={project_id}", headers=HEADERS
    )
    assert answer.status_code == 200 and answer.json()["flowRunState"] == "Cancelled"
    assert (await db.get_job(scheduled)).status == JobStatus.cancelled

    project_id, completed = await new_job(db)
    await db.update_job(completed, JobUpdate(status=JobStatus.completed))
    conflict = await client.post(
        f"/api/tam/jobs/{completed}/cancel?projectId={project_id}", headers=HEADERS
    )
    assert conflict.status_code == 409 and "completed" in conflict.json()["error"]


async def test_cancel_when_prefect_is_down_is_502_and_leaves_the_row(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    dispatcher.fail_with = PrefectUnavailable("down")
    dispatcher.cancel_run = dispatcher.read_run  # type: ignore[method-assign]
    answer = await client.post(
        f"/api/tam/jobs/{job_id}/cancel?projectId={project_id}", headers=HEADERS
    )
    assert answer.status_code == 502
    assert (await db.get_job(job_id)).status == JobStatus.running


# --- the transition table through the webhook (docs/contracts.md, "Who moves the job row") ---
async def dispatch(client: httpx.AsyncClient, project_id: UUID, job_id: UUID) -> httpx.Response:
    return await client.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)


async def test_a_duplicate_dispatch_during_a_prefect_outage_never_fails_the_live_job(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    run_id = UUID((await dispatch(client, project_id, job_id)).json()["taskId"])
    run = JobReporter(db, job_id, progress_interval_s=0.0, heartbeat_interval_s=3600)
    await run.start(flow_run_id=run_id, step="qualifying")
    dispatcher.set_state(run_id, "RUNNING")

    dispatcher.fail_with = PrefectUnavailable("Prefect API unreachable (ConnectError: refused)")
    answer = await dispatch(client, project_id, job_id)  # the Edge Function retried
    assert answer.status_code == 502
    row = await db.get_job(job_id)
    assert (row.status, row.result_summary) == (JobStatus.running, None)

    # ...and the run, alive all along, finishes the job.
    run.set_total(4)
    run.advance(2)
    await run.step("qualifying 4 companies")
    assert (await db.get_job(job_id)).progress == 50
    assert await run.complete({"total": 4})
    row = await db.get_job(job_id)
    assert (row.status, row.progress, row.result_summary) == (
        JobStatus.completed,
        100,
        {"total": 4},
    )


async def test_a_dispatch_error_fails_a_job_without_a_live_run(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    first = UUID((await dispatch(client, project_id, job_id)).json()["taskId"])
    dispatcher.set_state(first, "CRASHED")  # known final: no live run
    dispatcher.start_run = _raise_unavailable  # type: ignore[method-assign]
    answer = await dispatch(client, project_id, job_id)
    assert answer.status_code == 502
    row = await db.get_job(job_id)
    assert row.status == JobStatus.failed and (row.result_summary or {})["dispatch"] is True


async def _raise_unavailable(_spec: RunSpec) -> RunInfo:
    raise PrefectUnavailable("Prefect API unreachable (ConnectError: refused)")


async def test_a_completed_job_dispatched_again_is_409_and_the_row_is_untouched(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    run_id = UUID((await dispatch(client, project_id, job_id)).json()["taskId"])
    dispatcher.set_state(run_id, "COMPLETED")
    await db.update_job(
        job_id, JobUpdate(status=JobStatus.completed, progress=100, result_summary={"total": 7})
    )
    before = await db.get_job(job_id)
    answer = await dispatch(client, project_id, job_id)
    assert answer.status_code == 409 and "already completed" in answer.json()["error"]
    assert await db.get_job(job_id) == before
    assert len(dispatcher.specs) == 1


async def test_a_running_row_whose_run_completed_is_restored_not_rerun(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    run_id = UUID((await dispatch(client, project_id, job_id)).json()["taskId"])
    dispatcher.set_state(run_id, "COMPLETED")
    await db.update_job(
        job_id, JobUpdate(status=JobStatus.completed, progress=100, result_summary={"total": 7})
    )
    # An older Edge Function moves the completed job back to running and dispatches it.
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    answer = await dispatch(client, project_id, job_id)
    assert answer.status_code == 409, answer.text
    assert answer.json()["restored"] is True and answer.json()["taskId"] == str(run_id)
    row = await db.get_job(job_id)
    assert (row.status, row.progress, row.result_summary) == (
        JobStatus.completed,
        100,
        {"total": 7},
    )
    assert len(dispatcher.specs) == 1  # nothing started again
    # The reaper has nothing to overwrite: the row is final.
    from flows.reaper import reap

    assert await reap(db, cutoff=datetime.now(UTC) + timedelta(hours=1)) == []


async def test_a_redispatch_of_a_failed_job_is_a_new_queued_attempt_without_the_old_error(
    client: httpx.AsyncClient, db: Store, dispatcher: FakeDispatcher
) -> None:
    project_id, job_id = await new_job(db)
    first = UUID((await dispatch(client, project_id, job_id)).json()["taskId"])
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await db.update_job(
        job_id,
        JobUpdate(
            status=JobStatus.failed,
            result_summary={"error": "boom"},
            started_at=long_ago,
            heartbeat_at=long_ago,
            completed_at=long_ago,
        ),
    )
    dispatcher.set_state(first, "FAILED")
    # The Edge Function moves failed → running before it calls the webhook.
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    queued_from = datetime.now(UTC)
    answer = await dispatch(client, project_id, job_id)
    second = UUID(answer.json()["taskId"])
    assert second != first
    assert dispatcher.specs[-1].idempotency_key == attempt_key(job_id, first)
    row = await db.get_job(job_id)
    assert (row.status, row.current_step, row.flow_run_id) == (JobStatus.running, "queued", second)
    assert (row.result_summary, row.completed_at, row.started_at) == (None, None, None)
    assert row.heartbeat_at is not None and row.heartbeat_at >= queued_from
    from flows.reaper import reap

    # Queued, waiting for a worker: not stale, and never reaped however long it waits.
    assert await reap(db, cutoff=datetime.now(UTC) + timedelta(hours=1)) == []
    view = await client.get(f"/api/tam/jobs/{job_id}?projectId={project_id}", headers=HEADERS)
    assert view.json()["currentStep"] == "queued" and view.json()["queuedSeconds"] >= 0


# --- health and schema ------------------------------------------------------------------------
async def test_healthz_reports_database_and_prefect(
    client: httpx.AsyncClient, dispatcher: FakeDispatcher, tmp_path: Path
) -> None:
    ok = await client.get("/healthz")  # no key needed
    assert ok.status_code == 200
    assert ok.json() == {
        "status": "ok",
        "database": "ok",
        "prefect": "ok",
    }
    dispatcher.healthy = False
    down = await client.get("/healthz")
    assert down.status_code == 503 and down.json()["prefect"] == "unavailable"

    broken = open_store(f"sqlite:///{tmp_path}")  # a folder: the database cannot open
    app = create_app(settings_for("sqlite://"), broken, FakeDispatcher())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://webhook"
    ) as other:
        answer = await other.get("/healthz")
    await broken.close()
    assert answer.status_code == 503 and answer.json()["database"] == "unavailable"


async def test_openapi_schema_matches_the_answers(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    run_op = schema["paths"]["/api/tam/run"]["post"]
    assert set(run_op["responses"]) == {
        "200",
        "400",
        "401",
        "404",
        "409",
        "413",
        "500",
        "502",
        "503",
    }
    cancel_op = schema["paths"]["/api/tam/jobs/{jobId}/cancel"]["post"]
    assert {"200", "202", "409", "502"} <= set(cancel_op["responses"])
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200", "503"}
    assert "503" in schema["paths"]["/api/tam/jobs/{jobId}"]["get"]["responses"]
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert {"taskId", "flowRunId", "triggered"} <= set(components["RunResponse"]["properties"])
    assert set(components["RunRequest"]["properties"]["jobType"]["enum"]) == set(FLOWS)
    assert components["ErrorResponse"]["required"] == ["error"]
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "x-api-key"


# --- the real dispatcher on a real Prefect server ------------------------------------------
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_prefect_is_502_with_the_real_dispatcher(
    db: Store, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    project_id, job_id = await new_job(db)
    app = create_app(settings_for("sqlite://"), db, PrefectDispatcher(timeout_s=3))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{dead_port()}/api"}):
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as c:
            answer = await c.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
            health = await c.get("/healthz")
    assert answer.status_code == 502 and "unreachable" in answer.json()["error"]
    job = await db.get_job(job_id)
    assert job.status == JobStatus.failed and "unreachable" in (job.result_summary or {})["error"]
    assert health.status_code == 503 and health.json()["prefect"] == "unavailable"


@pytest.mark.prefect
async def test_real_prefect_idempotency_and_cancel_of_a_scheduled_run(
    prefect_server: Any, db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    # A deployment name of this test's own: nothing else in the session serves it.
    deployment_name = f"webhook-test-{uuid4().hex[:8]}"
    monkeypatch.setenv("TAM_DEPLOYMENT_NAME", deployment_name)
    dispatcher = PrefectDispatcher()
    app = create_app(settings_for("sqlite://"), db, dispatcher)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    project_id, job_id = await new_job(db)
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as c:
        missing = await c.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        assert missing.status_code == 503 and "tam serve" in missing.json()["error"]

        deployment = await FLOWS["qualify"].ato_deployment(name=deployment_name)
        await deployment.apply()  # registered, but nothing serves it: runs stay Scheduled
        await db.update_job(job_id, JobUpdate(status=JobStatus.running))
        first = await c.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        second = await c.post("/api/tam/run", json=body(project_id, job_id), headers=HEADERS)
        assert first.status_code == second.status_code == 200, first.text
        run_id = UUID(first.json()["taskId"])
        assert UUID(second.json()["taskId"]) == run_id
        # Two racing dispatches both compute the first attempt's key: Prefect itself
        # hands the second one the first one's run.
        spec = run_spec(
            FLOWS["qualify"].name,
            "qualify",
            project_id=project_id,
            job_id=job_id,
            previous_run_id=None,
            deployment_name=deployment_name,
        )
        assert (await dispatcher.start_run(spec)).id == run_id

        async with get_client() as prefect:
            run = await prefect.read_flow_run(run_id)
        assert run.idempotency_key == attempt_key(job_id, None)
        assert f"job:{job_id}" in run.tags and run.parameters["job_id"] == str(job_id)

        cancel = await c.post(
            f"/api/tam/jobs/{job_id}/cancel?projectId={project_id}", headers=HEADERS
        )
        assert cancel.status_code == 200 and cancel.json()["flowRunState"] == "Cancelled"
        assert (await db.get_job(job_id)).status == JobStatus.cancelled

        view = (
            await c.get(f"/api/tam/jobs/{job_id}?projectId={project_id}", headers=HEADERS)
        ).json()
        assert view["prefectUrl"] == f"{prefect_server.ui_url}/runs/flow-run/{run_id}"


@pytest.mark.prefect
async def test_cancel_never_forces_cancelled_over_a_run_a_worker_is_starting(
    prefect_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    deployment = await FLOWS["qualify"].ato_deployment(name=f"cancel-race-{uuid4().hex[:8]}")
    deployment_id = await deployment.apply()  # nothing serves it: its runs wait, Scheduled
    async with get_client() as prefect:
        run = await prefect.create_flow_run_from_deployment(
            deployment_id, parameters={"project_id": str(uuid4()), "job_id": str(uuid4())}
        )

    dispatcher = PrefectDispatcher()
    real_client = dispatcher._client

    @contextlib.asynccontextmanager
    async def worker_picks_it_up_after_the_read() -> AsyncIterator[Any]:
        async with real_client() as client:
            read = client.read_flow_run
            reads = 0

            async def read_then_claimed(flow_run_id: UUID) -> Any:
                nonlocal reads
                seen = await read(flow_run_id)
                reads += 1
                if reads == 1:  # a worker proposes Pending, as it does when it takes a run
                    async with get_client() as worker:
                        await worker.set_flow_run_state(flow_run_id, Pending())
                return seen

            client.read_flow_run = read_then_claimed
            yield client

    monkeypatch.setattr(dispatcher, "_client", worker_picks_it_up_after_the_read)
    info = await dispatcher.cancel_run(run.id)
    # Not Cancelled over the starting worker: Cancelling, which that worker acts on.
    assert info is not None and info.state_type == "CANCELLING"
