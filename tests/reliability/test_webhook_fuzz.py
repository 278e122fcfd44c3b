"""The dispatch webhook under fuzzing: schema-driven requests to every endpoint, hostile
bodies, content types and keys. tests/test_webhook.py pins each documented answer; this
file throws what the schema does not promise at the app and checks the invariants:

- never a 5xx, never a stack trace or the service key in an answer, always a JSON object
  with an `error` on a 4xx;
- without the right key every endpoint but /healthz (and the API docs) answers 401;
- a rejected request writes nothing (every table compared, row by row) and starts no run.

Cases come from schemathesis (the app's own OpenAPI, positive and negative generation)
and from hypothesis strategies around the real job ids, so the deep paths (a real job of
another project, a job type that does not match the row) are reached too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from starlette.testclient import TestClient

from deployments.webhook import http as webhook_http
from deployments.webhook.app import create_app
from deployments.webhook.dispatch import RunInfo, RunSpec
from flows import FLOWS
from tam.models import Project
from tam.settings import Settings
from tam.stores import open_store
from tests.reliability.plugin import FULL, TALLY

pytestmark = pytest.mark.reliability

KEY = "svc-fuzz-key-7d1e0c9b5a3f4e2d8c6b"
TABLES = ("tam_projects", "tam_companies", "tam_contacts", "tam_job_queue")
# Reachable without the key: liveness, and the API's own documentation (no data, no action).
PUBLIC = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
EXAMPLES = 300 if FULL else 40
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


class RecordingDispatcher:
    """Prefect as the webhook sees it; records every run it was asked to start."""

    def __init__(self) -> None:
        self.specs: list[RunSpec] = []
        self.cancelled: list[UUID] = []
        self.runs: dict[UUID, RunInfo] = {}

    async def start_run(self, spec: RunSpec) -> RunInfo:
        self.specs.append(spec)
        run = RunInfo(id=uuid4(), state_type="SCHEDULED", state_name="Scheduled")
        self.runs[run.id] = run
        return run

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        return self.runs.get(flow_run_id)

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        self.cancelled.append(flow_run_id)
        return self.runs.get(flow_run_id)

    async def check(self) -> None:
        return None

    def run_url(self, flow_run_id: UUID) -> str:
        return f"http://prefect.test/runs/flow-run/{flow_run_id}"


@dataclass
class Webhook:
    client: TestClient
    dispatcher: RecordingDispatcher
    db_path: Path
    app: Any
    jobs: dict[str, tuple[UUID, UUID]] = field(default_factory=dict)  # type -> (project, job)
    other_project: UUID = field(default_factory=uuid4)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with sqlite3.connect(self.db_path) as conn:
            return {t: sorted(conn.execute(f"select * from {t}").fetchall()) for t in TABLES}  # noqa: S608

    def dispatched(self) -> int:
        return len(self.specs_and_cancels())

    def specs_and_cancels(self) -> list[Any]:
        return [*self.dispatcher.specs, *self.dispatcher.cancelled]


async def _seed(url: str) -> tuple[dict[str, tuple[UUID, UUID]], UUID]:
    store = open_store(url)
    await store.init_schema()
    jobs = {}
    for job_type in FLOWS:
        project = await store.create_project(Project(id=uuid4(), name=f"p-{job_type}"))
        job = await store.create_job(project.id, job_type)
        jobs[job_type] = (project.id, job.id)
    other = await store.create_project(Project(id=uuid4(), name="someone else's"))
    await store.close()
    return jobs, other.id


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    db_path = tmp_path_factory.mktemp("webhook-fuzz") / "tam.db"
    url = f"sqlite:///{db_path}"
    jobs, other = asyncio.run(_seed(url))
    dispatcher = RecordingDispatcher()
    settings_ = Settings(database_url=url, service_api_key=KEY)  # type: ignore[arg-type]
    app = create_app(settings_, dispatcher=dispatcher)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Webhook(client, dispatcher, db_path, app, jobs, other)


def send(hook: Webhook, **request: Any) -> httpx.Response | None:
    """The answer, or None when the client itself refuses to send such a request."""
    try:
        return hook.client.request(**request)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeError, ValueError):
        return None  # e.g. a header value no HTTP client can encode


def check_answer(
    hook: Webhook, response: httpx.Response, before: dict[str, Any], dispatched: int
) -> None:
    """The invariants every answer keeps, whatever was sent."""
    TALLY.bad_input("webhook fuzzed request")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    assert KEY not in text
    if response.status_code >= 400:
        data = response.json()
        assert isinstance(data, dict) and isinstance(data.get("error"), str), text[:300]
        assert hook.snapshot() == before, "a rejected request changed the database"
        assert hook.dispatched() == dispatched, "a rejected request reached Prefect"


SCHEMA_CASES = [
    (path, method, mode, keyed)
    for path, method in (
        ("/api/tam/run", "POST"),
        ("/api/tam/jobs/{jobId}", "GET"),
        ("/api/tam/jobs/{jobId}/cancel", "POST"),
        ("/healthz", "GET"),
    )
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for keyed in (True, False)
    if not (path == "/healthz" and mode == GenerationMode.NEGATIVE)  # takes no input at all
]


@pytest.mark.parametrize(
    ("path", "method", "mode", "keyed"),
    SCHEMA_CASES,
    ids=[f"{m} {p} {mode.value} {'key' if k else 'no-key'}" for p, m, mode, k in SCHEMA_CASES],
)
def test_schema_driven_fuzzing_of_every_endpoint(
    webhook: Webhook, path: str, method: str, mode: GenerationMode, keyed: bool
) -> None:
    schema = schemathesis.openapi.from_dict(webhook.app.openapi())
    strategy = schema[path][method].as_strategy(generation_mode=mode)

    @FUZZ_SETTINGS
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        request = case.as_transport_kwargs(base_url="http://testserver")
        headers = {k: v for k, v in request.pop("headers").items() if k.lower() != "x-api-key"}
        if keyed:
            headers["x-api-key"] = KEY
        elif "x-api-key" in {k.lower() for k in case.headers or {}}:
            headers["x-api-key"] = case.headers.get("x-api-key", "")  # a wrong key: keep it
        request.pop("cookies", None)
        before, dispatched = webhook.snapshot(), webhook.dispatched()
        response = send(webhook, headers=headers, **request)
        if response is None:
            return
        check_answer(webhook, response, before, dispatched)
        if not keyed and path != "/healthz" and response.status_code != 413:
            assert response.status_code == 401, (response.status_code, response.text[:200])
            assert response.json() == {"error": "Unauthorized"}

    fuzz()


uuids = st.uuids().map(str)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=50),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@FUZZ_SETTINGS
@given(data=st.data())
def test_bodies_around_real_jobs_never_dispatch_what_they_should_not(
    webhook: Webhook, data: st.DataObject
) -> None:
    """Real job ids with the wrong project, type or shape: only an exact match runs."""
    job_type = data.draw(st.sampled_from(sorted(webhook.jobs)))
    project_id, job_id = webhook.jobs[job_type]
    projects = [str(p) for p, _ in webhook.jobs.values()] + [str(webhook.other_project)]
    body: dict[str, Any] = {
        "jobId": data.draw(st.one_of(st.just(str(job_id)), uuids, junk)),
        "jobType": data.draw(st.one_of(st.sampled_from(list(FLOWS)), st.text(max_size=30), junk)),
        "projectId": data.draw(st.one_of(st.sampled_from(projects), uuids, junk)),
    }
    for name in data.draw(st.sets(st.sampled_from(sorted(body)), max_size=2)):
        del body[name]
    body.update(data.draw(st.dictionaries(st.text(max_size=10), junk, max_size=3)))
    before, dispatched = webhook.snapshot(), webhook.dispatched()
    response = send(
        webhook,
        method="POST",
        url="/api/tam/run",
        # NaN and Infinity go out as the bare tokens Python's json writes for them.
        content=json.dumps(body, allow_nan=True),
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    assert response is not None
    check_answer(webhook, response, before, dispatched)
    exact = (
        body.get("jobId") == str(job_id)
        and body.get("projectId") == str(project_id)
        and body.get("jobType") == job_type
    )
    if exact:
        assert response.status_code == 200, response.text
        assert response.json()["taskId"]
    else:
        assert response.status_code in (400, 404), (body, response.status_code, response.text)


def test_every_route_needs_the_key_except_health(webhook: Webhook) -> None:
    """Listed from the app itself, so a route added later without the key fails here."""
    _, job_id = webhook.jobs["qualify"]
    before, dispatched = webhook.snapshot(), webhook.dispatched()
    # Every documented operation, and every plain route (the docs pages are not in it).
    routes: dict[str, set[str]] = {
        path: {method.upper() for method in operations}
        for path, operations in webhook.app.openapi()["paths"].items()
    }
    for route in webhook.app.routes:
        if isinstance(getattr(route, "methods", None), set):
            routes.setdefault(route.path, set()).update(route.methods - {"HEAD"})
    assert {"/api/tam/run", "/api/tam/jobs/{jobId}", "/healthz"} <= routes.keys()
    wrong_keys: list[dict[str, str]] = [
        {},
        {"x-api-key": ""},
        {"x-api-key": " " + KEY},
        {"x-api-key": KEY.upper()},
        {"x-api-key": KEY[:16]},
        {"x-api-key": KEY + KEY},
        {"authorization": f"Bearer {KEY}"},  # the right key in the wrong place
        {"x-api-key": "x" * 20_000},
    ]
    for route_path, methods in routes.items():
        path = route_path.replace("{jobId}", str(job_id))
        for method in sorted(methods):
            for headers in wrong_keys:
                answer = webhook.client.request(method, path, headers=headers, json={})
                TALLY.bad_input("webhook wrong key")
                if route_path in PUBLIC:
                    assert answer.status_code < 500
                    continue
                assert answer.status_code == 401, (method, path, headers.keys(), answer.text)
                assert answer.json() == {"error": "Unauthorized"}
    # The key in the query string is not the key either.
    answer = webhook.client.get(f"/api/tam/jobs/{job_id}", params={"x-api-key": KEY})
    assert answer.status_code == 401
    assert webhook.snapshot() == before and webhook.dispatched() == dispatched


def test_every_key_check_is_constant_time(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong keys that share a longer and longer prefix with the real one all go through
    hmac.compare_digest on the whole value: no early exit a timing attack could measure."""
    calls: list[tuple[bytes, bytes]] = []
    real = webhook_http.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook_http.hmac, "compare_digest", spy)
    _, job_id = webhook.jobs["qualify"]
    guesses = [KEY[:n] + "#" * (len(KEY) - n) for n in range(0, len(KEY), 4)]
    for guess in guesses:
        calls.clear()
        for request in (
            {"method": "GET", "url": f"/api/tam/jobs/{job_id}"},
            {"method": "POST", "url": "/api/tam/run", "content": b"{not json"},
        ):
            answer = webhook.client.request(**request, headers={"x-api-key": guess})
            assert answer.status_code == 401
        TALLY.bad_input("webhook timing-attack key", 2)
        assert calls and all(c == (KEY.encode(), guess.encode()) for c in calls), calls


HOSTILE_BODIES: list[tuple[str, bytes, str | None]] = [
    ("deeply nested array", b"[" * 60_000, "application/json"),
    ("deeply nested object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "application/json"),
    ("invalid utf-8", b'{"jobId": "\xff\xfe\xfd"}', "application/json"),
    ("NaN and Infinity", b'{"jobId": NaN, "jobType": Infinity, "projectId": -Infinity}', None),
    ("huge number", b'{"jobId": 1' + b"0" * 5000 + b"}", "application/json"),
    ("duplicate keys", b'{"jobId": "a", "jobId": "b", "jobType": "qualify"}', "application/json"),
    ("json in text/plain", b'{"jobId": "x"}', "text/plain"),
    ("form encoded", b"jobId=x&jobType=qualify&projectId=y", "application/x-www-form-urlencoded"),
    ("xml", b"<run><jobId>x</jobId></run>", "application/xml"),
    (
        "multipart",
        b"--b\r\nContent-Disposition: form-data; name=jobId\r\n\r\nx\r\n--b--",
        "multipart/form-data; boundary=b",
    ),
    (
        "latin-1 declared",
        '{"jobType": "qualifié"}'.encode("latin-1"),
        "application/json; charset=latin-1",
    ),
    ("no content type", b'{"jobId": "x"}', None),
    ("json null", b"null", "application/json"),
    ("json string", b'"qualify"', "application/json"),
    ("empty", b"", "application/json"),
    ("whitespace", b" \n\t ", "application/json"),
    ("nul bytes", b'{"jobId": "\x00\x00"}', "application/json"),
    ("bom", b'\xef\xbb\xbf{"jobId": "x"}', "application/json"),
    ("just under the size limit", b'{"pad": "' + b"x" * 65_000 + b'"}', "application/json"),
    ("over the size limit", b'{"pad": "' + b"x" * 70_000 + b'"}', "application/json"),
    ("gzip claimed, not gzip", b'{"jobId": "x"}', "application/json"),
]


@pytest.mark.parametrize(
    ("name", "content", "content_type"), HOSTILE_BODIES, ids=[b[0] for b in HOSTILE_BODIES]
)
@pytest.mark.parametrize("keyed", [True, False], ids=["key", "no-key"])
def test_hostile_bodies_and_content_types_are_refused_cleanly(
    webhook: Webhook, name: str, content: bytes, content_type: str | None, keyed: bool
) -> None:
    headers = {"x-api-key": KEY} if keyed else {}
    if content_type:
        headers["content-type"] = content_type
    if name.startswith("gzip"):
        headers["content-encoding"] = "gzip"
    before, dispatched = webhook.snapshot(), webhook.dispatched()
    response = webhook.client.post("/api/tam/run", content=content, headers=headers)
    check_answer(webhook, response, before, dispatched)
    if "over the size limit" in name:
        assert response.status_code == 413
    elif not keyed:
        assert response.status_code == 401
    else:
        assert response.status_code == 400, (name, response.text[:200])
        assert json.loads(response.text)["error"]
