"""The Prefect server restarts while a qualify run is going.

The session's server is stopped mid-run and started again on the same port with the same
PREFECT_HOME (its database survives, as a real restart's does). The run keeps working
through the gap (task states, logs and artifacts are retried or dropped, never fatal), and
afterwards both the job row and Prefect's own record of the flow run end `completed`, with
every company qualified once.

The emulator holds Anthropic's answers (the `hold_after` knob) around the stop and the
restart, so the run is mid-way when the server goes, works on while it is away, and is still
mid-way when it comes back, on a fast machine or a busy one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from flows.qualify import qualify_companies
from local.prefect_server import LocalPrefectServer, is_healthy
from tam.clients.anthropic import build_prompt
from tam.emulators.anthropic import expected_verdict
from tam.models import IcpProfile, JobStatus
from tam.stores.base import Store
from tests.helpers.seed import ICP, seed_project
from tests.reliability.helpers import all_companies, duplicates, paid_twice, wait_until_held
from tests.reliability.plugin import FULL, Tally

pytestmark = [pytest.mark.reliability, pytest.mark.prefect]

_STATUS_OF = {"qualified": "qualified", "disqualified": "disqualified", "needs_review": "pending"}


async def test_prefect_server_restart_mid_run_ends_run_and_job_correctly(
    prefect_server: LocalPrefectServer,
    store: Store,
    emulator_control: Any,
    fast_heartbeat: None,
    tally: Tally,
) -> None:
    n = 600 if FULL else 300
    step = n // 10
    emulator_control.configure("anthropic", latency_median_s=0.02, latency_sigma=0.2)
    # The run gets `step` answers, then waits on Anthropic: in progress, whatever the speed.
    await emulator_control.ahold("anthropic", after=step)
    project_id, job_id = await seed_project(store, n)
    run = asyncio.create_task(
        qualify_companies(project_id=project_id, job_id=job_id, return_state=True)
    )
    await wait_until_held(emulator_control, "anthropic", step)
    try:
        await asyncio.to_thread(prefect_server.stop)
        tally.fault("prefect server restart")
        assert not is_healthy(prefect_server.api_url, timeout=0.5)
        # Work goes on while the server is down: `step` more answers reach the run (it
        # sends new requests only as earlier ones come back), then it is held again.
        await emulator_control.ahold("anthropic", after=step)
        await wait_until_held(emulator_control, "anthropic", step)
        during = await store.get_job(job_id)
        assert during.status == JobStatus.running
    finally:
        await asyncio.to_thread(prefect_server.start)
        await emulator_control.arelease("anthropic")
    done_at_restart = (await store.get_job(job_id)).done_count or 0
    state = await asyncio.wait_for(run, timeout=240)

    assert done_at_restart < n, "held answers cannot have been counted"
    assert state.is_completed(), state
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.progress == 100, job.result_summary
    assert job.flow_run_id is not None
    async with get_client() as client:
        flow_run = await client.read_flow_run(job.flow_run_id)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state

    icp = IcpProfile.model_validate(ICP)
    companies = await all_companies(store, project_id)
    wrong = [
        c.domain
        for c in companies
        if c.qualification_status
        != _STATUS_OF[expected_verdict(build_prompt(c, icp), seed=7, needs_review_pct=5)]
    ]
    dups = duplicates(c.domain for c in companies)
    paid = emulator_control.stats("anthropic", latencies=False)["success_by_item"]
    tally.items(checked=n, lost=len(wrong), duplicates=len(dups) + len(paid_twice(paid)))
    assert len(companies) == n and not dups and not wrong, wrong[:5]
    assert not paid_twice(paid)
    assert (job.result_summary or {})["total"] == n
