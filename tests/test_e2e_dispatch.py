"""Dispatch end to end, as the product runs: the Edge Function's POST reaches `tam webhook`,
which starts the deployment `tam serve` serves on a real Prefect server; the flow run works
against the emulators and a Postgres database, and the job row tells the story.

Processes: the Prefect server (session fixture), `python -m deployments.serve --flow
qualify-companies` and `python -m cli.main webhook`, both subprocesses with their
environment pointing at the database, the emulators and the Prefect API.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest

from flows import FLOWS
from local.prefect_server import free_port
from tam.emulators.server import env_for
from tam.models import Company, JobStatus, JobUpdate
from tam.stores import Store, open_store
from tests.helpers.seed import seed_project

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent
SERVICE_KEY = "e2e-service-key-5a1d9c-0123456789abcdef"
DEPLOYMENT = f"{FLOWS['qualify'].name}/tam"
T = TypeVar("T")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.5
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Stack:
    """What the tests talk to: the webhook's URL and the job database."""

    def __init__(self, url: str, database_url: str, logs: Path) -> None:
        self.url, self.database_url, self.logs = url, database_url, logs

    async def post_job(self, project_id: UUID, job_id: UUID) -> httpx.Response:
        """Exactly what tam-run-job sends (deployments/edge-function/tam-run-job.ts)."""
        body = json.dumps(
            {"jobId": str(job_id), "jobType": "qualify", "projectId": str(project_id)}
        )
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(
                f"{self.url}/api/tam/run",
                content=body,
                headers={"Content-Type": "application/json", "x-api-key": SERVICE_KEY},
            )


@pytest.fixture(scope="module")
def stack(
    prefect_server: Any, emulators: Any, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e")
    name = f"tam_e2e_{uuid.uuid4().hex[:10]}"
    database_url = pg_server.create_database(name)

    async def init() -> None:
        store = open_store(database_url)
        await store.init_schema()
        await store.close()

    asyncio.run(init())
    env = {
        **os.environ,
        **env_for(emulators),
        **prefect_server.env(),
        "PREFECT_HOME": str(logs / "prefect-home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "TAM_ENV_FILE": "",
        "TAM_DATABASE_URL": database_url,
        "TAM_MAX_ATTEMPTS": "2",
        "TAM_LIMITER_BACKEND": "local",
        "TAM_PROGRESS_INTERVAL_S": "0.2",
        "SERVICE_API_KEY": SERVICE_KEY,
    }
    started = datetime.now(UTC)
    serve = _start(
        ["-m", "deployments.serve", "--flow", FLOWS["qualify"].name], env, logs / "serve.log"
    )
    port = free_port()
    webhook = _start(
        ["-m", "cli.main", "webhook", "--host", "127.0.0.1", "--port", str(port)],
        env,
        logs / "webhook.log",
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> None:
        from prefect.client.orchestration import get_client

        async def deployment_served() -> bool:
            assert serve.poll() is None, (logs / "serve.log").read_text()[-3000:]
            async with get_client() as client:
                try:
                    deployment = await client.read_deployment_by_name(DEPLOYMENT)
                except Exception:  # noqa: BLE001 - not there yet
                    return False
            # A deployment applied earlier in the session does not count: serve's own does.
            return bool(deployment.updated and deployment.updated > started)

        async def webhook_up() -> bool:
            assert webhook.poll() is None, (logs / "webhook.log").read_text()[-3000:]
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(deployment_served, timeout=90, what="tam serve's deployment")
        await wait_for(webhook_up, timeout=60, what="the webhook's /healthz")

    try:
        asyncio.run(ready())
        yield Stack(url, database_url, logs)
    finally:
        _stop(webhook)
        _stop(serve)
        try:
            pg_server.drop_database(name)
        except Exception:  # noqa: BLE001,S110 - the cluster goes away with the session anyway
            pass


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[Store]:
    store = open_store(stack.database_url)
    yield store
    await store.close()


async def companies_of(store: Store, project_id: UUID) -> list[Company]:
    return [c async for page in store.iter_companies(project_id) for c in page]


async def final_job(store: Store, job_id: UUID, timeout: float, stack: Stack) -> Any:
    async def final() -> Any:
        job = await store.get_job(job_id)
        return job if job.status.is_final else None

    try:
        return await wait_for(final, timeout=timeout, what=f"job {job_id} to end")
    except AssertionError:
        print((stack.logs / "serve.log").read_text()[-5000:])  # noqa: T201 - failure context
        raise


async def flow_run_state(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    return run.state.type.value if run.state else "?"


async def run_reaches(run_id: UUID, state: str, timeout: float = 60) -> None:
    """The job row is final a moment before the flow run itself returns."""

    async def reached() -> bool:
        return await flow_run_state(run_id) == state

    await wait_for(reached, timeout=timeout, what=f"flow run {run_id} to be {state}")


async def test_dispatched_job_completes_once(
    stack: Stack, db: Store, emulator_control: Any
) -> None:
    project_id, job_id = await seed_project(db, 40)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))  # as the Edge Function does

    first, again = (
        await stack.post_job(project_id, job_id),
        await stack.post_job(project_id, job_id),
    )
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["triggered"] is True and answer["taskId"] == answer["flowRunId"]
    run_id = UUID(answer["taskId"])
    assert again.status_code == 200 and UUID(again.json()["taskId"]) == run_id

    job = await final_job(db, job_id, 120, stack)
    assert job.status == JobStatus.completed, job.result_summary
    assert job.flow_run_id == run_id and job.progress == 100
    companies = await companies_of(db, project_id)
    summary = job.result_summary or {}
    assert summary["total"] == len(companies) == 40
    assert summary["qualified"] == sum(c.qualification_status == "qualified" for c in companies)
    assert summary["disqualified"] == sum(
        c.qualification_status == "disqualified" for c in companies
    )
    await run_reaches(run_id, "COMPLETED")

    # Dispatching the finished job again: 409, the row untouched, nothing started.
    late = await stack.post_job(project_id, job_id)
    assert late.status_code == 409, late.text
    assert await db.get_job(job_id) == job
    # An older Edge Function moves it back to running first: the webhook sees its run
    # Completed in Prefect and puts the row back, with its result, instead of a rerun.
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    again = await stack.post_job(project_id, job_id)
    assert again.status_code == 409 and again.json()["restored"] is True, again.text
    restored = await db.get_job(job_id)
    assert (restored.status, restored.result_summary) == (JobStatus.completed, summary)
    assert restored.flow_run_id == run_id
    async with httpx.AsyncClient(headers={"x-api-key": SERVICE_KEY}) as http:
        view = (
            await http.get(f"{stack.url}/api/tam/jobs/{job_id}", params={"projectId": project_id})
        ).json()
    assert view["status"] == "completed" and view["flowRunId"] == str(run_id)
    assert view["prefectUrl"].endswith(f"/runs/flow-run/{run_id}")


async def test_cancel_through_the_api_ends_the_job_cancelled(
    stack: Stack, db: Store, emulator_control: Any
) -> None:
    emulator_control.configure("anthropic", latency_median_s=3.0, latency_sigma=0.0)
    project_id, job_id = await seed_project(db, 60)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    run_id = UUID((await stack.post_job(project_id, job_id)).json()["taskId"])

    async def working() -> bool:
        job = await db.get_job(job_id)
        return (
            job.flow_run_id == run_id
            and job.current_step is not None
            and (job.current_step.startswith("qualifying"))
        )

    await wait_for(working, timeout=90, what="the flow run to start qualifying")
    async with httpx.AsyncClient(headers={"x-api-key": SERVICE_KEY}, timeout=30) as http:
        cancel = await http.post(
            f"{stack.url}/api/tam/jobs/{job_id}/cancel", json={"projectId": str(project_id)}
        )
    assert cancel.status_code == 202, cancel.text

    job = await final_job(db, job_id, 90, stack)
    assert job.status == JobStatus.cancelled, job.result_summary
    assert (job.result_summary or {}).get("cancelled") is True

    await run_reaches(run_id, "CANCELLED")
    pending = [c for c in await companies_of(db, project_id) if c.qualification_status == "pending"]
    assert pending, "cancelled long before the end, some companies are still pending"


async def test_retry_from_prefect_after_an_outage_completes_the_same_job(
    stack: Stack, db: Store, emulator_control: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    emulator_control.configure("anthropic", error_rates={"500": 1.0}, retry_after_s=0)
    project_id, job_id = await seed_project(db, 30)
    await db.update_job(job_id, JobUpdate(status=JobStatus.running))
    run_id = UUID((await stack.post_job(project_id, job_id)).json()["taskId"])

    failed = await final_job(db, job_id, 180, stack)
    assert failed.status == JobStatus.failed
    assert "anthropic" in (failed.result_summary or {})["error"]
    await run_reaches(run_id, "FAILED")

    # The outage ends; an operator presses Retry on the failed run in the Prefect UI.
    emulator_control.configure("anthropic", error_rates={})
    async with get_client() as client:
        await client.set_flow_run_state(
            run_id, AwaitingRetry(message="Retry from the UI"), force=True
        )

    async def completed() -> Any:
        job = await db.get_job(job_id)
        return job if job.status == JobStatus.completed else None

    job = await wait_for(completed, timeout=180, what="the retried run to complete the job")
    assert job.flow_run_id == run_id and job.attempt >= 2
    companies = await companies_of(db, project_id)
    assert len(companies) == 30 and len({c.domain for c in companies}) == 30
    summary = job.result_summary or {}
    assert summary["total"] == 30
    assert summary["qualified"] + summary["disqualified"] + summary["needsReview"] == 30
    calls = emulator_control.stats("anthropic", latencies=False)["calls_by_item"]
    assert set(calls) >= {c.domain for c in companies}
    await run_reaches(run_id, "COMPLETED")
