"""Job rows end final whatever ends the run: crash (SIGKILL → reaper) and cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.qualify import qualify_companies
from flows.reaper import reap_stale_jobs
from tam.job_reporter import utcnow
from tam.models import JobStatus, JobUpdate
from tam.stores.base import Store
from tests.helpers.seed import seed_project

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]


async def wait_for(store: Store, job_id: UUID, predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await store.get_job(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last job state: {job}")


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch, tam_env: dict[str, str]) -> None:
    from tam.settings import get_settings

    monkeypatch.setenv("TAM_HEARTBEAT_INTERVAL_S", "0.3")
    monkeypatch.setenv("TAM_PROGRESS_INTERVAL_S", "0.2")
    get_settings.cache_clear()


async def test_killed_worker_is_reaped_and_a_rerun_finishes_the_job(
    prefect_server: Any, store: Store, emulator_control: Any, fast_heartbeat: None
) -> None:
    emulator_control.configure("anthropic", latency_median_s=0.3, latency_sigma=0.2)
    project_id, job_id = await seed_project(store, 120)
    code = (
        "import asyncio, uuid; from flows.qualify import qualify_companies; "
        f"asyncio.run(qualify_companies(project_id=uuid.UUID('{project_id}'), "
        f"job_id=uuid.UUID('{job_id}')))"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ))
    try:
        await wait_for(store, job_id, lambda j: (j.done_count or 0) >= 20)
        os.kill(worker.pid, signal.SIGKILL)  # no hook can run: only the heartbeat stops
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    job = await store.get_job(job_id)
    assert job.status == JobStatus.running  # nothing ended it...

    assert (await reap_stale_jobs(stale_after_s=30))["reaped"] == 0  # ...and it is recent
    await asyncio.sleep(1.5)
    reaped = await reap_stale_jobs(stale_after_s=1)
    assert str(job_id) in reaped["jobIds"]
    job = await store.get_job(job_id)
    assert job.status == JobStatus.failed
    assert "no heartbeat" in job.result_summary["error"]  # type: ignore[index]
    assert job.completed_at is not None

    # Re-dispatching the same job resumes where it stopped: answers the killed worker
    # paid for but had not written yet come from its journal, not from Claude again.
    summary = await qualify_companies(project_id=project_id, job_id=job_id)
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.attempt == 2
    assert "error" not in (job.result_summary or {})
    assert 0 < summary["total"] < 120
    counts = await store.count_companies(project_id)
    assert counts["pending"] == counts["needs_review"]
    assert counts["total"] == 120
    paid = emulator_control.stats("anthropic", latencies=False)["success_by_item"]
    companies = [c async for page in store.iter_companies(project_id) for c in page]
    assert {c.domain for c in companies} == set(paid)
    # Every answer the worker received was kept (journal), so nothing it saw is bought
    # again. Only calls in flight at the SIGKILL — answered and billed by the provider,
    # never received — can repeat: at most the account's in-flight limit (10).
    twice = {domain: n for domain, n in paid.items() if n > 1}
    assert len(twice) <= 10, f"paid twice after the crash: {twice}"
    assert max(paid.values()) <= 2


# Part of the reliability suite (make reliability): the reaper case it asks for.
@pytest.mark.reliability(faults={"stale heartbeat": 1})
async def test_reaper_never_touches_a_healthy_long_job(prefect_server: Any, store: Store) -> None:
    project_id, job_id = await seed_project(store, 0)
    started = utcnow() - timedelta(hours=3)  # long, but its heartbeat is fresh
    await store.update_job(
        job_id,
        JobUpdate(status=JobStatus.running, started_at=started, heartbeat_at=utcnow()),
    )
    assert (await reap_stale_jobs(stale_after_s=60))["reaped"] == 0
    assert (await store.get_job(job_id)).status == JobStatus.running
    await store.update_job(job_id, JobUpdate(heartbeat_at=utcnow() - timedelta(minutes=5)))
    assert (await reap_stale_jobs(stale_after_s=60))["reaped"] == 1
    assert (await store.get_job(job_id)).status == JobStatus.failed


async def test_reaper_never_reaps_a_job_waiting_for_a_worker(
    prefect_server: Any, store: Store
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    long_ago = utcnow() - timedelta(hours=1)
    project_id, queued = await seed_project(store, 0)
    # Queued by the webhook (no free worker): running, step `queued`, claimed by no run.
    await store.update_job(
        queued, JobUpdate(status=JobStatus.running, current_step="queued", heartbeat_at=long_ago)
    )
    # A run claimed this one earlier; its run is Scheduled again (a retry waits for a worker).
    deployment = await qualify_companies.ato_deployment(name=f"reaper-{uuid4().hex[:8]}")
    deployment_id = await deployment.apply()  # nothing serves it
    retried = (await store.create_job(project_id, "qualify")).id
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(
            deployment_id, parameters={"project_id": str(project_id), "job_id": str(retried)}
        )
    await store.update_job(
        retried,
        JobUpdate(
            status=JobStatus.running, flow_run_id=run.id, started_at=long_ago, heartbeat_at=long_ago
        ),
    )
    assert (await reap_stale_jobs(stale_after_s=60))["reaped"] == 0
    assert (await store.get_job(queued)).status == JobStatus.running
    assert (await store.get_job(retried)).status == JobStatus.running

    # Once its run is Running and the heartbeat still stale, the worker is dead: reaped.
    async with get_client() as client:
        await client.set_flow_run_state(run.id, Running(), force=True)
    assert (await reap_stale_jobs(stale_after_s=60))["jobIds"] == [str(retried)]
    assert (await store.get_job(queued)).status == JobStatus.running


async def test_reaper_reaps_nothing_when_prefect_cannot_be_read(store: Store) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.reaper import reap
    from local.prefect_server import free_port

    long_ago = utcnow() - timedelta(hours=1)
    _, job_id = await seed_project(store, 0)
    await store.update_job(
        job_id,
        JobUpdate(
            status=JobStatus.running,
            flow_run_id=uuid4(),
            started_at=long_ago,
            heartbeat_at=long_ago,
        ),
    )
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        assert await reap(store, cutoff=utcnow() - timedelta(seconds=60)) == []
    assert (await store.get_job(job_id)).status == JobStatus.running


@pytest.fixture
def served_qualify(prefect_server: Any, tam_env: dict[str, str]) -> Iterator[None]:
    """`tam serve` for the qualify flow in a subprocess, as a developer runs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.serve", "--flow", "qualify-companies"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _deployment_id(name: str, timeout: float = 60) -> UUID:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            try:
                return (await client.read_deployment_by_name(name)).id
            except Exception:  # noqa: BLE001 - not registered yet
                await asyncio.sleep(0.5)
    raise AssertionError(f"deployment {name} never appeared")


async def test_cancel_from_prefect_ends_the_job_cancelled(
    served_qualify: None, store: Store, emulator_control: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    emulator_control.configure("anthropic", latency_median_s=0.5, latency_sigma=0.1)
    project_id, job_id = await seed_project(store, 200)
    deployment_id = await _deployment_id("qualify-companies/tam")
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(
            deployment_id, parameters={"project_id": str(project_id), "job_id": str(job_id)}
        )
        await wait_for(store, job_id, lambda j: (j.done_count or 0) >= 10, timeout=90)
        await client.set_flow_run_state(run.id, Cancelling(), force=True)
    job = await wait_for(store, job_id, lambda j: j.status.is_final, timeout=60)
    assert job.status == JobStatus.cancelled
    assert (
        job.result_summary == {"error": "Cancelled by user", "cancelled": True}
        or (job.result_summary or {}).get("error") == "Cancelled by user"
    )
    assert job.flow_run_id == run.id
    assert job.completed_at is not None
