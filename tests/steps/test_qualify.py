"""The qualify step through a JobRuntime: emulated Claude, SQLite, no Prefect."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from tam.errors import Unavailable
from tam.journal import ResultJournal
from tam.models import (
    JobStatus,
    JobType,
    ProjectStatus,
    QualificationResult,
    QualificationStatus,
)
from tam.settings import get_settings
from tam.steps import qualify as step
from tam.steps.chunks import Chunk
from tam.stores.base import Store
from tests.helpers.seed import seed_project


async def pending_of(store: Store, project_id: UUID) -> int:
    return (await store.count_companies(project_id))["pending"]


async def test_every_company_gets_one_verdict_and_the_summary_keys_are_the_contract(
    store: Store, open_runtime: Any, run_all: Any, emulator_control: Any
) -> None:
    emulator_control.configure("anthropic", needs_review_pct=0)
    project_id, job_id = await seed_project(store, 45)
    async with open_runtime(JobType.qualify, project_id, job_id) as runtime:
        run = await step.start_qualify(runtime)
        assert run.total == 45 and run.chunks == 1
        tallies = await run_all(step.qualify_chunk, run, 3)  # more chunks than needed
        summary = await runtime.complete(await step.finish_qualify(run, tallies))

    assert summary["qualified"] + summary["disqualified"] == summary["total"] == 45
    assert {"needsReview", "storeErrors", "costUsd", "project", "resumedVerdicts"} <= set(summary)
    assert summary["costUsd"] > 0 and summary["inputTokens"] > 0
    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.result_summary == summary
    assert job.cost_usd == summary["costUsd"]
    assert await pending_of(store, project_id) == 0
    assert (await store.get_project(project_id)).status == ProjectStatus.enriching
    stats = emulator_control.stats("anthropic", latencies=False)
    assert stats["calls"] == 45 and all(n == 1 for n in stats["calls_by_item"].values())


async def test_a_retried_chunk_redoes_only_what_its_failed_attempt_left_open(
    store: Store, open_runtime: Any, emulator_control: Any, monkeypatch: Any
) -> None:
    emulator_control.configure("anthropic", needs_review_pct=0)
    project_id, job_id = await seed_project(store, 40)
    real = step.qualify_one
    calls: list[int] = []
    answered_first: set[str] = set()

    async def flaky(run: Any, company: Any, tally: Any) -> Any:
        calls.append(1)
        if len(calls) == 25:
            raise Unavailable("connection reset", provider="anthropic")
        result = await real(run, company, tally)
        if not failed:
            answered_first.add(company.domain)
        return result

    failed: list[bool] = []

    monkeypatch.setattr(step, "qualify_one", flaky)
    monkeypatch.setenv("TAM_READ_PAGE_SIZE", "10")
    async with open_runtime(JobType.qualify, project_id, job_id) as runtime:
        run = await step.start_qualify(runtime)
        first = Chunk(0, 1)
        try:
            await step.qualify_chunk(run, first)
        except BaseException as exc:  # noqa: BLE001 - the failed attempt, as Prefect sees it
            assert "connection reset" in repr(exc)
            failed.append(True)
        else:
            raise AssertionError("the first attempt should have failed")
        tally = await step.qualify_chunk(run, first)  # the retry, same chunk
        summary = await step.finish_qualify(run, [tally])

    assert summary.qualified + summary.disqualified == summary.total == 40
    stats = emulator_control.stats("anthropic", latencies=False)
    # Calls the failure cut off are sent again; an answer that arrived never is.
    assert answered_first and len(answered_first) < 40
    for domain in answered_first:
        assert stats["calls_by_item"][domain] == 1, f"{domain} was bought twice"
    assert len(stats["calls_by_item"]) == 40
    assert await pending_of(store, project_id) == 0


async def test_nothing_pending_builds_no_client_and_leaves_the_project(
    store: Store, open_runtime: Any, monkeypatch: Any
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    project_id, job_id = await seed_project(store, 0)
    async with open_runtime(JobType.qualify, project_id, job_id) as runtime:
        run = await step.start_qualify(runtime)
        assert (run.total, run.chunks, run.qualifier) == (0, 0, None)
        summary = await step.finish_qualify(run, [])
    assert (summary.qualified, summary.total, summary.cost_usd) == (0, 0, 0.0)
    assert (await store.get_project(project_id)).status == ProjectStatus.qualifying


async def test_a_killed_attempts_journal_is_replayed_not_bought_again(
    store: Store, open_runtime: Any, run_all: Any, emulator_control: Any
) -> None:
    emulator_control.configure("anthropic", needs_review_pct=0)
    project_id, job_id = await seed_project(store, 30)
    # As if a worker was killed: verdicts journaled, nothing written.
    journal = ResultJournal(
        get_settings().data_dir / "journal", job_id, "qualify", QualificationResult
    )
    companies = [c async for page in store.iter_companies(project_id) for c in page][:12]
    for company in companies:
        journal.append(
            QualificationResult(
                company_id=company.id, status=QualificationStatus.disqualified, reason="Journaled"
            )
        )
    journal.close(remove=False)

    async with open_runtime(JobType.qualify, project_id, job_id) as runtime:
        run = await step.start_qualify(runtime)
        assert (run.resumed, run.total) == (12, 18)
        tallies = await run_all(step.qualify_chunk, run, run.chunks)
        summary = await step.finish_qualify(run, tallies)
    assert summary.resumed_verdicts == 12 and summary.total == 18
    assert emulator_control.stats("anthropic", latencies=False)["calls"] == 18
    assert not journal.path.exists(), "a clean run removes its journal"
