"""No key ever leaves the process: not in logs, Prefect (logs, states, artifacts, results),
job rows, other rows, error messages or exceptions.

Every provider gets a distinctive key; the whole pipeline runs once as it should, and then
each provider in turn is replaced by one that quotes the caller's key back in its error
body (as some APIs do with a rejected request). Everything the runs produced is then
searched for every key: the log records of every logger at INFO, what was printed, every
table of the job database, the Prefect server's database and result storage on disk,
Prefect's logs, artifacts and run states read back through its API, and the exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows import FLOWS
from flows.build_tam import build_tam
from local.prefect_server import drain_prefect_clients
from tam.emulators.server import KEY_ENV
from tam.models import JobStatus, Project
from tam.settings import get_settings
from tam.stores.base import Store
from tests.reliability.faults import HostileProvider
from tests.reliability.helpers import all_companies
from tests.test_flow_systemic_errors import CASES
from tests.test_flow_systemic_errors import seed as seed_for_step

pytestmark = [pytest.mark.reliability, pytest.mark.prefect]

PIPELINE_ICP: dict[str, Any] = {
    "industryKeywords": ["saas", "software"],
    "whatYouSell": "Revenue analytics",
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP"],
    "contactsPerCompany": 1,
    "seedCompanyDomains": ["cloudmetrics.io"],
    "placesQueries": ["software company in Austin"],
    "sourcingLimits": {"discolikeMaxRecords": 25},
}
# An echoed key must come back in each way a provider can fail: systemic (401), per item
# (400) and transient (500, retried until the job gives up).
ECHO_KIND = {
    "anthropic": "echo_key_500",
    "prospeo": "echo_key_401",
    "hunter": "echo_key_500",
    "neverbounce": "echo_key_400",
    "brightdata": "echo_key_500",
    "discolike": "echo_key_401",
    "google_places": "echo_key_400",
}


@pytest.fixture
def distinctive_keys(
    monkeypatch: pytest.MonkeyPatch, quick_task_retries: None, roomy_limits: None
) -> Iterator[dict[str, str]]:
    keys = {name: f"sk-{name}-LEAKCHECK-{uuid4().hex}" for name in KEY_ENV}
    keys["service"] = f"svc-LEAKCHECK-{uuid4().hex}"
    for name, env in KEY_ENV.items():
        monkeypatch.setenv(env, keys[name])
    monkeypatch.setenv("SERVICE_API_KEY", keys["service"])
    monkeypatch.setenv("TAM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("TAM_BRIGHTDATA_POLL_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    assert set(get_settings().secret_values()) == set(keys.values())
    yield keys
    get_settings.cache_clear()


@pytest.fixture
def hostile() -> Iterator[HostileProvider]:
    server = HostileProvider().start()
    yield server
    server.stop()


def exception_text(exc: BaseException | None) -> str:
    """An exception as every consumer could render it: str, repr, traceback, the chain."""
    if exc is None:
        return ""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, BaseExceptionGroup):
        parts += [exception_text(inner) for inner in exc.exceptions]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and linked is not exc:
            parts.append(exception_text(linked))
    return "\n".join(parts)


async def prefect_records(flow_run_ids: list[UUID]) -> str:
    """Logs, artifacts and run states (flow and task) Prefect holds for these runs."""
    # From a thread: the workers' drain waits on its own loop, not on this test's.
    await asyncio.to_thread(drain_prefect_clients, 10)
    parts: list[str] = []
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        )
        # Subflows (build-tam's steps) are runs of their own.
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=flow_run_ids)
            )
        )
        for run in [*runs, *children]:
            parts.append(run.model_dump_json())
            log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            offset = 0
            while logs := await client.read_logs(log_filter, limit=200, offset=offset):
                parts += [log.message for log in logs]
                offset += len(logs)
            artifacts = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            parts += [artifact.model_dump_json() for artifact in artifacts]
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            parts += [task.model_dump_json() for task in tasks]
    assert parts, "Prefect recorded nothing: the check would prove nothing"
    return "\n".join(parts)


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            try:
                yield path, path.read_bytes()
            except OSError:
                continue


async def database_rows(store: Store, project_ids: list[UUID], job_ids: list[UUID]) -> str:
    parts = []
    for project_id in project_ids:
        parts += [c.model_dump_json() for c in await all_companies(store, project_id)]
        parts += [
            c.model_dump_json() async for page in store.iter_contacts(project_id) for c in page
        ]
    parts += [(await store.get_job(job_id)).model_dump_json() for job_id in job_ids]
    return "\n".join(parts)


async def test_no_key_appears_anywhere_a_run_leaves_a_trace(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    distinctive_keys: dict[str, str],
    hostile: HostileProvider,
    monkeypatch: pytest.MonkeyPatch,
    tam_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tally: Any,
) -> None:
    # Every logger at INFO: what a worker run with verbose logging would print.
    caplog.set_level(logging.INFO)
    flow_runs: list[UUID] = []
    job_ids: list[UUID] = []
    project_ids: list[UUID] = []
    exceptions: list[str] = []

    # 1. The whole pipeline, as it should go.
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="secrets", icp_profile=PIPELINE_ICP))
    job = await store.create_job(project_id, "build_tam")
    state = await build_tam(project_id=project_id, job_id=job.id, return_state=True)
    assert state.is_completed(), state.message
    built = await store.get_job(job.id)
    assert built.status == JobStatus.completed
    assert (built.result_summary or {})["results"]["find_contacts"]["contactsFound"] > 0
    project_ids.append(project_id)
    job_ids += [job.id, *[UUID(j) for j in (built.result_summary or {})["jobIds"].values()]]
    flow_runs.append(built.flow_run_id)  # type: ignore[arg-type]

    # 2. Each provider quoting the key back in its errors.
    for provider, (job_type, _, _) in CASES.items():
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", hostile.url())
        get_settings.cache_clear()
        hostile.kind = ECHO_KIND[provider]
        project_id = await seed_for_step(store, job_type)
        job = await store.create_job(project_id, job_type)
        state = await FLOWS[job_type](project_id=project_id, job_id=job.id, return_state=True)
        ended = await store.get_job(job.id)
        # A per-item 400 (NeverBounce) is noted on the contact and the job goes on; the
        # others fail the job. Either way the row is final, and the error names who spoke.
        assert ended.status.is_final, (provider, ended)
        if state.is_failed():
            assert ended.status == JobStatus.failed
            assert provider in (ended.result_summary or {})["error"]
            exceptions.append(exception_text(await state.result(raise_on_failure=False)))
        project_ids.append(project_id)
        job_ids.append(job.id)
        flow_runs.append(ended.flow_run_id)  # type: ignore[arg-type]
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", tam_env[f"{provider.upper()}_BASE_URL"])
        tally.bad_input("provider error body echoing the key")
    # The hostile provider did see (and echo) every provider's real key.
    assert {distinctive_keys[p] for p in CASES} <= hostile.keys_seen

    # 3. Everything those runs left behind.
    sources: dict[str, str] = {
        "log records": caplog.text,
        "printed output": "".join(capfd.readouterr()),
        "job database rows": await database_rows(store, project_ids, job_ids),
        "prefect api records": await prefect_records(flow_runs),
        "exceptions": "\n".join(exceptions),
    }
    tally.items(checked=len(job_ids))
    leaks = [
        f"{provider} key in {where}"
        for where, text in sources.items()
        for provider, key in distinctive_keys.items()
        if key in text
    ]
    # On disk: Prefect's database and result storage; the job database and journals.
    job_database = Path(tam_env["TAM_DATABASE_URL"].split(":///", 1)[1])
    roots = [Path(os.environ["PREFECT_HOME"]), job_database.parent, Path(tam_env["TAM_DATA_DIR"])]
    assert job_database.is_file() and all(root.is_dir() for root in roots), roots
    for root in roots:
        for path, content in files_under(root):
            leaks += [
                f"{provider} key in {path}"
                for provider, key in distinctive_keys.items()
                if key.encode() in content
            ]
    assert not leaks, leaks
