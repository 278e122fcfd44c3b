"""A provider goes away mid-run: connection refused, 5xx on every call, or every call hanging.

When the provider comes back within the retries' patience the job completes with every
item processed once, exactly as the world predicts. When it does not, the job fails with a
message naming the provider and the cause, no item is marked with a verdict it did not
get, and a re-dispatch (provider back) finishes the job without buying anything twice.
Never `completed` with silent gaps.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flows.find_contacts import find_contacts
from flows.qualify import qualify_companies
from tam.clients.anthropic import build_prompt
from tam.emulators.anthropic import expected_verdict
from tam.models import NEEDS_REVIEW_PREFIX, IcpProfile, JobStatus
from tam.settings import get_settings
from tam.stores.base import Store
from tests.helpers.seed import ICP, seed_project
from tests.reliability.faults import TcpProxy
from tests.reliability.helpers import (
    WORLD,
    all_companies,
    all_contacts,
    duplicates,
    paid_twice,
    seed_qualified,
    settle,
    wait_until_held,
)
from tests.reliability.plugin import FULL, Tally
from tests.test_flow_systemic_errors import CASES
from tests.test_flow_systemic_errors import seed as seed_for_step

pytestmark = [pytest.mark.reliability, pytest.mark.prefect]

_STATUS_OF = {"qualified": "qualified", "disqualified": "disqualified", "needs_review": "pending"}
OUTAGE_S = 6.0 if FULL else 3.0
KINDS = ["connection refused", "http 503"] + (["timeouts"] if FULL else [])


@pytest.fixture
def anthropic_proxy(
    emulators: Any, monkeypatch: pytest.MonkeyPatch, fast_heartbeat: None
) -> Iterator[TcpProxy]:
    """Claude reached through a relay the test can switch off (a real refused connect)."""
    proxy = TcpProxy("127.0.0.1", emulators.port).start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", proxy.url("/anthropic"))
    monkeypatch.setenv("TAM_HTTP_TIMEOUT_S", "1")
    get_settings.cache_clear()
    yield proxy
    proxy.stop()
    get_settings.cache_clear()


class Outage:
    """Starts and ends one kind of outage of Claude, and counts what it injected."""

    def __init__(self, kind: str, proxy: TcpProxy, control: Any) -> None:
        self.kind, self.proxy, self.control = kind, proxy, control

    def begin(self) -> None:
        if self.kind == "connection refused":
            self.proxy.down()
        elif self.kind == "http 503":
            self.control.configure("anthropic", error_rates={503: 1.0}, retry_after_s=0)
        else:
            self.control.configure("anthropic", hang_rate=1.0, hang_s=3.0)

    def end(self) -> None:
        if self.kind == "connection refused":
            self.proxy.up()
        else:
            self.control.configure("anthropic", error_rates={}, hang_rate=0.0)

    def count(self, tally: Tally) -> int:
        stats = self.control.stats("anthropic", latencies=False)
        if self.kind == "connection refused":
            n = self.proxy.outages + self.proxy.connections_cut
        elif self.kind == "http 503":
            n = stats["status_counts"].get("503", 0)
        else:
            n = stats["hangs"]
        tally.fault(f"provider {self.kind}", n)
        return n


def check_qualified_as_predicted(companies: list[Any]) -> list[str]:
    icp = IcpProfile.model_validate(ICP)
    return [
        c.domain
        for c in companies
        if c.qualification_status
        != _STATUS_OF[expected_verdict(build_prompt(c, icp), seed=7, needs_review_pct=5)]
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_claude_outage_mid_run_then_back_completes_every_company_once(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    anthropic_proxy: TcpProxy,
    quick_task_retries: None,
    tally: Tally,
    kind: str,
) -> None:
    n = 200 if FULL else 100
    emulator_control.configure("anthropic", latency_median_s=0.05, latency_sigma=0.3)
    # A quarter of the answers, then the run waits on Claude: the outage meets it mid-run
    # however fast the machine is (the held calls are let go into the outage).
    emulator_control.hold("anthropic", after=n // 4)
    project_id, job_id = await seed_project(store, n)
    outage = Outage(kind, anthropic_proxy, emulator_control)
    run = asyncio.create_task(qualify_companies(project_id=project_id, job_id=job_id))
    try:
        await wait_until_held(emulator_control, "anthropic", n // 4)
        outage.begin()
        await emulator_control.arelease("anthropic")
        await asyncio.sleep(OUTAGE_S)  # how long the outage lasts, not a wait for the run
        during = await store.get_job(job_id)
        assert during.status == JobStatus.running  # waiting it out, not giving up
    finally:
        outage.end()
    await run
    await settle(emulator_control, ["anthropic"])

    injected = outage.count(tally)
    assert injected > 0
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed, job.result_summary
    companies = await all_companies(store, project_id)
    wrong = check_qualified_as_predicted(companies)
    paid = emulator_control.stats("anthropic", latencies=False)["success_by_item"]
    twice = paid_twice(paid)
    tally.items(checked=n, lost=len(wrong), duplicates=len(duplicates(c.domain for c in companies)))
    assert len(companies) == n and not wrong, wrong[:5]
    assert (job.result_summary or {})["total"] == n
    # Calls in flight when the connections were cut, and hung calls the client gave up on,
    # were answered (and billed) on the provider's side but never received; nothing else
    # is bought twice.
    allowed = {
        "connection refused": get_settings().limit_for("anthropic").max_in_flight,
        "http 503": 0,
        "timeouts": injected,
    }[kind]
    assert len(twice) <= allowed, twice


async def test_claude_down_for_good_fails_clearly_and_a_rerun_finishes(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    anthropic_proxy: TcpProxy,
    quick_task_retries: None,
    tally: Tally,
) -> None:
    n = 80
    emulator_control.configure("anthropic", latency_median_s=0.05, latency_sigma=0.3)
    emulator_control.hold("anthropic", after=20)
    project_id, job_id = await seed_project(store, n)
    run = asyncio.create_task(
        qualify_companies(project_id=project_id, job_id=job_id, return_state=True)
    )
    # 20 answered, the rest waiting: Claude goes away for good with the run mid-way.
    await wait_until_held(emulator_control, "anthropic", 20)
    anthropic_proxy.down()
    await emulator_control.arelease("anthropic")
    state = await run
    tally.fault("provider connection refused", anthropic_proxy.outages)

    assert state.is_failed()
    job = await store.get_job(job_id)
    assert job.status == JobStatus.failed and job.completed_at is not None
    error = (job.result_summary or {})["error"]
    assert error.startswith("anthropic failed after retries") and "connection" in error, error
    judged = {c.domain for c in await all_companies(store, project_id) if c.qualification_reason}
    for company in await all_companies(store, project_id):
        # No company is given a verdict (or a "Needs review") it did not get from Claude.
        if company.qualification_status == "pending" and company.qualification_reason:
            assert company.qualification_reason.startswith(NEEDS_REVIEW_PREFIX)
    assert 0 < len(judged) < n

    anthropic_proxy.up()
    before = dict(emulator_control.stats("anthropic", latencies=False)["success_by_item"])
    await qualify_companies(project_id=project_id, job_id=job_id)

    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.attempt == 2
    companies = await all_companies(store, project_id)
    wrong = check_qualified_as_predicted(companies)
    paid = emulator_control.stats("anthropic", latencies=False)["success_by_item"]
    rebought = [d for d in judged if paid.get(d, 0) > before.get(d, 0)]
    tally.items(checked=n, lost=len(wrong), duplicates=len(rebought))
    assert not wrong and len(companies) == n
    # needs-review companies are retried by design; every answered one is kept.
    answered = {c.domain for c in companies if c.qualification_status != "pending"}
    assert not [d for d in rebought if d in answered], rebought


async def test_hunter_outage_mid_waterfall_then_back_gives_every_contact_its_verdict(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    quick_task_retries: None,
    fast_heartbeat: None,
    tally: Tally,
) -> None:
    n = 60 if FULL else 30
    for provider in ("prospeo", "hunter", "neverbounce"):
        emulator_control.configure(provider, latency_median_s=0.1, latency_sigma=0.3)
    project_id, job_id, rows = await seed_qualified(store, n)
    domain_of = {c.id: c.domain or "" for c in rows}
    # The waterfall's first Hunter call waits there: the outage starts mid-waterfall
    # rather than whenever the test gets to it (perhaps after the step ended).
    emulator_control.hold("hunter")
    run = asyncio.create_task(find_contacts(project_id=project_id, job_id=job_id))
    await wait_until_held(emulator_control, "hunter", 0, timeout=120)
    emulator_control.configure("hunter", error_rates={503: 1.0}, retry_after_s=0)
    await emulator_control.arelease("hunter")
    await asyncio.sleep(OUTAGE_S)  # how long the outage lasts
    emulator_control.configure("hunter", error_rates={})
    await run

    injected = emulator_control.stats("hunter", latencies=False)["status_counts"].get("503", 0)
    tally.fault("provider http 503", injected)
    assert injected > 0
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed, job.result_summary
    contacts = await all_contacts(store, project_id)
    wrong = [
        c.linkedin_url
        for c in contacts
        if c.email_status != WORLD.expected_email(domain_of[c.company_id], c.linkedin_url)[0]
    ]
    tally.items(
        checked=len(contacts),
        lost=len(wrong),
        duplicates=len(duplicates(c.linkedin_url for c in contacts)),
    )
    assert contacts and not wrong, wrong[:5]


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PERMANENT = [
    (provider, kind)
    for provider in CASES
    for kind in (["connection refused", "http 503", "timeouts"] if FULL else ["http 503"])
]


@pytest.mark.parametrize(("provider", "kind"), PERMANENT)
async def test_a_provider_down_for_the_whole_run_fails_the_job_naming_it(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    monkeypatch: pytest.MonkeyPatch,
    quick_task_retries: None,
    roomy_limits: None,
    tally: Tally,
    provider: str,
    kind: str,
) -> None:
    job_type, step_flow, _ = CASES[provider]
    monkeypatch.setenv("TAM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("TAM_BRIGHTDATA_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("TAM_HTTP_TIMEOUT_S", "0.5")
    if kind == "connection refused":
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", f"http://127.0.0.1:{dead_port()}")
    elif kind == "http 503":
        emulator_control.configure(provider, error_rates={503: 1.0}, retry_after_s=0)
    else:
        emulator_control.configure(provider, hang_rate=1.0, hang_s=2.0)
    get_settings.cache_clear()
    project_id = await seed_for_step(store, job_type)
    job = await store.create_job(project_id, job_type)

    started = time.monotonic()
    state = await step_flow(project_id=project_id, job_id=job.id, return_state=True)
    tally.fault(f"provider {kind}")
    await settle(emulator_control, CASES)

    assert state.is_failed(), "a step whose provider never answered must not complete"
    failed = await store.get_job(job.id)
    assert failed.status == JobStatus.failed and failed.completed_at is not None
    error = (failed.result_summary or {})["error"]
    assert provider in error, error
    # NeverBounce reports its outages inside an HTTP 200 ("temp_unavail").
    expected = {
        "connection refused": ["connection failed"],
        "http 503": ["503", "unavailable"],
        "timeouts": ["timed out"],
    }
    assert any(word in error.lower() for word in expected[kind]), error
    assert time.monotonic() - started < 120
    # The failing step's task retries resume where the last attempt stopped: no answer any
    # provider gave (Prospeo's enrichments and Hunter's emails before a NeverBounce
    # outage, say) is bought a second time.
    for other in {"anthropic", "prospeo", "hunter", "neverbounce", "brightdata"} - {provider}:
        paid = emulator_control.stats(other, latencies=False)["success_by_item"]
        assert not paid_twice(paid), (other, paid_twice(paid))
