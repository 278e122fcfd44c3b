"""The qualify flow end to end: real Prefect server, real Claude emulator, real SDK."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import pytest

from flows.qualify import qualify_companies
from tam.clients.anthropic import build_prompt
from tam.emulators import latency_for_key
from tam.emulators.anthropic import expected_verdict
from tam.models import NEEDS_REVIEW_PREFIX, Company, IcpProfile, JobStatus, ProjectStatus
from tam.stores.base import Store
from tests.helpers.seed import ICP, seed_project

pytestmark = pytest.mark.prefect

_STATUS_OF = {"qualified": "qualified", "disqualified": "disqualified", "needs_review": "pending"}


async def all_companies(store: Store, project_id: UUID) -> list[Company]:
    return [c async for page in store.iter_companies(project_id) for c in page]


def expected_status(company: Company) -> str:
    icp = IcpProfile.model_validate(ICP)
    verdict = expected_verdict(build_prompt(company, icp), seed=7, needs_review_pct=5)
    return _STATUS_OF[verdict]


async def test_completes_with_summary_matching_rows(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, job_id = await seed_project(store, 60)
    result = await qualify_companies(project_id=project_id, job_id=job_id)

    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed
    assert job.progress == 100
    assert job.completed_at is not None and job.flow_run_id is not None
    assert job.done_count == job.total_count == 60
    companies = await all_companies(store, project_id)
    counts = {s: sum(c.qualification_status == s for c in companies) for s in _STATUS_OF.values()}
    summary = job.result_summary or {}
    assert summary == result
    assert summary["qualified"] == counts["qualified"] > 0
    assert summary["disqualified"] == counts["disqualified"] > 0
    assert summary["total"] == 60
    assert summary["inputTokens"] > 0 and summary["costUsd"] > 0
    for company in companies:
        assert company.qualification_status == expected_status(company), company.domain
        if company.qualification_status == "pending":
            assert (company.qualification_reason or "").startswith(NEEDS_REVIEW_PREFIX)
    assert (await store.get_project(project_id)).status == ProjectStatus.enriching


async def test_injected_faults_every_company_ends_exactly_once(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tam.settings import get_settings

    monkeypatch.setenv("TAM_MAX_ATTEMPTS", "10")
    monkeypatch.setenv("TAM_HTTP_TIMEOUT_S", "1")
    get_settings.cache_clear()
    emulator_control.configure(
        "anthropic",
        error_rates={"429": 0.05, "529": 0.05, "500": 0.03},
        retry_after_s=0,
        hang_rate=0.03,
        hang_s=3.0,
        malformed_rate=0.05,
        latency_mode="per_request",
    )
    project_id, job_id = await seed_project(store, 150)
    await qualify_companies(project_id=project_id, job_id=job_id)

    stats = emulator_control.stats("anthropic", latencies=False)
    assert stats["status_counts"].get("429", 0) > 0
    assert stats["status_counts"].get("529", 0) > 0
    assert stats["hangs"] > 0 and stats["malformed"] > 0
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed
    companies = await all_companies(store, project_id)
    assert len(companies) == 150
    for company in companies:  # each ends in the state its verdict predicts, written once
        assert company.qualification_status == expected_status(company), company.domain
    summary = job.result_summary or {}
    assert summary["total"] == 150
    assert summary["qualified"] + summary["disqualified"] + summary["needsReview"] == 150
    assert summary["qualified"] == sum(c.qualification_status == "qualified" for c in companies)


async def test_rerun_sends_no_answered_company_again(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, first_job = await seed_project(store, 80)
    await qualify_companies(project_id=project_id, job_id=first_job)
    before = emulator_control.stats("anthropic", latencies=False)["calls_by_item"]
    companies = await all_companies(store, project_id)
    answered = {c.domain for c in companies if c.qualification_status != "pending"}
    review = {c.domain for c in companies if c.qualification_status == "pending"}
    assert answered and review

    second = await store.create_job(project_id, "qualify")
    summary = await qualify_companies(project_id=project_id, job_id=second.id)

    after = emulator_control.stats("anthropic", latencies=False)["calls_by_item"]
    for domain in answered:
        assert after.get(domain) == before.get(domain), f"{domain} was sent to Claude again"
    for domain in review:  # needs-review companies are retried by design
        assert after.get(domain, 0) > before.get(domain, 0)
    assert summary["total"] == len(review)
    assert (await store.get_job(second.id)).status == JobStatus.completed


async def test_nothing_pending_completes_at_once_with_zeros(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, job_id = await seed_project(store, 0)
    summary = await qualify_companies(project_id=project_id, job_id=job_id)
    assert (summary["qualified"], summary["disqualified"], summary["total"]) == (0, 0, 0)
    assert (await store.get_job(job_id)).status == JobStatus.completed
    assert emulator_control.stats("anthropic", latencies=False)["calls"] == 0


async def test_bad_key_fails_fast_naming_the_cause(
    prefect_server: Any, store: Store, emulator_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tam.settings import get_settings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "invalid-key-123")
    get_settings.cache_clear()
    project_id, job_id = await seed_project(store, 200)
    state = await qualify_companies(project_id=project_id, job_id=job_id, return_state=True)

    assert state.is_failed()
    job = await store.get_job(job_id)
    assert job.status == JobStatus.failed
    error = (job.result_summary or {})["error"]
    assert "anthropic" in error and "ANTHROPIC_API_KEY" in error and "401" in error
    assert "invalid-key-123" not in error
    # Fail fast: the first wave of calls, not one per company.
    assert emulator_control.stats("anthropic", latencies=False)["calls"] <= 20
    companies = await all_companies(store, project_id)
    assert all(
        c.qualification_status == "pending" and c.qualification_reason is None for c in companies
    ), "no company may be marked because of a bad key"


async def test_sliding_window_beats_fixed_batches(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    """Limit 10, lognormal latency per company: the emulator sees exactly 10 in flight and
    the run finishes well under what fixed batches of 10 need for the same latencies."""
    median, sigma = 0.2, 0.8
    emulator_control.configure(
        "anthropic",
        latency_median_s=median,
        latency_sigma=sigma,
        latency_mode="per_item",
        needs_review_pct=0,
    )
    project_id, job_id = await seed_project(store, 300)
    companies = await all_companies(store, project_id)
    latencies = [
        latency_for_key(c.domain or "", seed=7, median=median, sigma=sigma) for c in companies
    ]
    fixed_batches = sum(max(latencies[i : i + 10]) for i in range(0, len(latencies), 10))
    ideal = sum(latencies) / 10

    started = time.monotonic()
    await qualify_companies(project_id=project_id, job_id=job_id)
    wall = time.monotonic() - started

    stats = emulator_control.stats("anthropic", latencies=False)
    assert stats["max_in_flight"] == 10
    assert fixed_batches > 1.5 * ideal  # the draws really are spread out
    assert wall < 0.8 * fixed_batches, (wall, ideal, fixed_batches)
