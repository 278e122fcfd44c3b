"""Qualify: ask Claude about each pending company, write verdicts in batches.

No Prefect here. `start_qualify` replays the journal of a killed attempt, counts what is
pending and opens the page stream of pending companies; `qualify_chunk` is one chunk of
the run (a Prefect task run under Prefect) pulling companies from that stream into the
shared sliding window; `finish_qualify` writes what is left and builds the summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tam.batch_writer import BatchWriter, RejectHandler
from tam.clients._retry import call_with_retries
from tam.clients.anthropic import ClaudeQualifier, Judgement
from tam.errors import BadResponse, InvalidRequest
from tam.journal import ResultJournal
from tam.limiters import AccountLimiter
from tam.models import (
    NEEDS_REVIEW_PREFIX,
    Company,
    IcpProfile,
    ProjectStatus,
    QualificationResult,
    QualificationStatus,
)
from tam.runtime import JobRuntime
from tam.steps.chunks import Chunk, ChunkState, PageStream, chunk_count, work_chunk
from tam.stores.base import RowRejected

PROVIDER = "anthropic"

_STATUS = {
    "qualified": QualificationStatus.qualified,
    "disqualified": QualificationStatus.disqualified,
    "needs_review": QualificationStatus.pending,
}


@dataclass
class QualifyTally:
    """What one chunk (or the writer's refusals) counted; the run's is their sum."""

    qualified: int = 0
    disqualified: int = 0
    needs_review: int = 0
    calls: int = 0
    store_errors: int = 0  # verdicts the database refused (stored as "Needs review")

    def add(self, other: QualifyTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class QualifySummary(BaseModel):
    """The qualify job's result_summary (docs/contracts.md, "result_summary keys":
    qualified, disqualified, total)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    qualified: int = 0
    disqualified: int = 0
    needs_review: int = Field(0, alias="needsReview")
    # Verdicts the database refused; those companies stay pending ("Needs review").
    store_errors: int = Field(0, alias="storeErrors")
    total: int = 0
    input_tokens: int = Field(0, alias="inputTokens")
    output_tokens: int = Field(0, alias="outputTokens")
    cost_usd: float = Field(0.0, alias="costUsd")
    project: dict[str, int] = Field(default_factory=dict)
    # Verdicts taken from the journal of an earlier, killed attempt (not bought again).
    resumed_verdicts: int = Field(0, alias="resumedVerdicts")


@dataclass
class QualifyRun:
    """One qualify run: what its chunks share, and each chunk's state across retries."""

    runtime: JobRuntime
    icp: IcpProfile
    journal: ResultJournal[QualificationResult]
    resumed: int = 0
    total: int = 0
    chunks: int = 0
    qualifier: ClaudeQualifier | None = None
    limiter: AccountLimiter | None = None
    writer: BatchWriter[QualificationResult] | None = None
    pending: PageStream[Company] | None = None
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # The writer's refusals move verdicts to needs_review (see `store_refused`).
    refused: QualifyTally = field(default_factory=QualifyTally)
    states: dict[int, ChunkState[Company, QualifyTally]] = field(default_factory=dict)


def result_from_judgement(company: Company, judgement: Judgement) -> QualificationResult:
    verdict = judgement.verdict
    status = _STATUS[verdict.verdict]
    reason = verdict.reason.strip()
    if status == QualificationStatus.pending:
        reason = f"{NEEDS_REVIEW_PREFIX} (model unsure): {reason}"
    return QualificationResult(
        company_id=company.id,
        status=status,
        reason=reason,
        raw={
            "verdict": verdict.verdict,
            "confidence": verdict.confidence,
            "model": judgement.model,
            "input_tokens": judgement.usage.input_tokens,
            "output_tokens": judgement.usage.output_tokens,
        },
    )


def needs_review(company: Company, why: str) -> QualificationResult:
    return QualificationResult(
        company_id=company.id,
        status=QualificationStatus.pending,
        reason=f"{NEEDS_REVIEW_PREFIX} ({why})",
        raw={"verdict": "needs_review", "error": why},
    )


def store_refused(tally: QualifyTally | None) -> RejectHandler[QualificationResult]:
    """The writer's `on_rejected`: a verdict the database refuses is replaced by a
    "Needs review (could not be stored: ...)" result, so the company stays `pending`, a
    re-run retries it, and the rest of the batch and the job go on. With `tally`, the
    verdict moves from its count to needs_review there."""

    def instead(result: QualificationResult, exc: RowRejected) -> QualificationResult:
        if tally is not None:
            tally.store_errors += 1
            if result.status == QualificationStatus.qualified:
                tally.qualified -= 1
                tally.needs_review += 1
            elif result.status == QualificationStatus.disqualified:
                tally.disqualified -= 1
                tally.needs_review += 1
        why = f"could not be stored: {exc.reason}"
        return QualificationResult(
            company_id=result.company_id,
            status=QualificationStatus.pending,
            reason=f"{NEEDS_REVIEW_PREFIX} ({why})",
            raw={"verdict": "needs_review", "error": why, "refused": result.status.value},
        )

    return instead


async def qualify_one(
    run: QualifyRun, company: Company, tally: QualifyTally
) -> QualificationResult:
    """One company → one verdict, counted in `tally`. Systemic and outage errors propagate
    (they fail the job); an answer this company alone cannot get becomes 'Needs review'."""
    assert run.qualifier is not None
    qualifier = run.qualifier
    try:
        judgement = await call_with_retries(
            lambda: qualifier.judge(company, run.icp),
            limiter=run.limiter,
            max_attempts=run.runtime.settings.max_attempts,
        )
    except BadResponse as exc:
        return needs_review(company, f"malformed model output: {exc.message}")
    except InvalidRequest as exc:
        return needs_review(company, f"request rejected: {exc.message}")
    tally.calls += 1
    run.runtime.meter.add(judgement.usage)
    return result_from_judgement(company, judgement)


async def start_qualify(runtime: JobRuntime) -> QualifyRun:
    """Replay what a killed attempt paid for, count the pending companies, open the stream."""
    _, icp = await runtime.load_project()
    store, settings, reporter = runtime.store, runtime.settings, runtime.reporter
    run = QualifyRun(runtime, icp, runtime.journal("qualify", QualificationResult))
    # Needs-review verdicts of the killed attempt stay `pending` in the database: skipped.
    answered: set[UUID] = set()
    # Through a writer: a verdict the database refuses must not fail every re-run.
    replay = runtime.writer(store.save_qualifications, on_rejected=store_refused(None))
    for batch in run.journal.replay_batches(settings.read_page_size):
        for result in batch:
            run.resumed += 1
            if result.status == QualificationStatus.pending:
                answered.add(result.company_id)
            await replay.add(result)
    await replay.close()
    if run.resumed:
        runtime.logger.info("Replayed %d journaled verdicts", run.resumed)
    await reporter.step("counting pending companies")
    counts = await store.count_companies(runtime.project_id)
    run.total = max(0, counts.get(QualificationStatus.pending.value, 0) - len(answered))
    if not run.total:
        return run
    reporter.set_total(run.total)
    await reporter.step(f"qualifying {run.total} companies")
    run.qualifier = runtime.client(ClaudeQualifier)
    run.limiter = runtime.limiter(PROVIDER)
    run.writer = runtime.writer(store.save_qualifications, on_rejected=store_refused(run.refused))
    run.pending = runtime.stream(
        store.iter_companies(
            runtime.project_id,
            status=QualificationStatus.pending,
            page_size=settings.read_page_size,
        ),
        skip=(lambda c: c.id in answered) if answered else None,
    )
    # The sliding window: companies in hand at once across every chunk (a page's worth,
    # or twice the account's in-flight cap when that is more), whatever the job's size.
    run.window = asyncio.Semaphore(
        max(settings.read_page_size, 2 * settings.limit_for(PROVIDER).max_in_flight)
    )
    run.chunks = chunk_count(
        run.total, max_chunks=settings.max_task_runs, min_size=settings.chunk_size
    )
    return run


async def qualify_chunk(run: QualifyRun, chunk: Chunk) -> QualifyTally:
    """Ask Claude about pending companies, concurrently under the account's limit, until
    none is left; verdicts are journaled as they arrive and written in batches.

    A retry of this chunk redoes only the companies its failed attempt left unanswered,
    so no company is sent to Claude twice; the tally returned counts both attempts.
    """
    assert run.pending is not None and run.writer is not None
    state = run.states.setdefault(chunk.index, ChunkState(QualifyTally()))
    writer, reporter = run.writer, run.runtime.reporter

    async def one(company: Company) -> None:
        result = await qualify_one(run, company, state.tally)
        run.journal.append(result)  # paid for: never lose it to a crash
        if result.status == QualificationStatus.qualified:
            state.tally.qualified += 1
        elif result.status == QualificationStatus.disqualified:
            state.tally.disqualified += 1
        else:
            state.tally.needs_review += 1
        reporter.advance(1)
        await writer.add(result)

    await work_chunk(run.pending, state, run.window, one)
    return dataclasses.replace(state.tally)


async def finish_qualify(run: QualifyRun, tallies: Sequence[QualifyTally]) -> QualifySummary:
    """Write what is buffered, move the project on, and sum the chunks' tallies."""
    runtime = run.runtime
    await runtime.flush_writers()
    tally = QualifyTally()
    for chunk_tally in tallies:
        tally.add(chunk_tally)
    tally.add(run.refused)
    if run.total:
        await runtime.store.set_project_status(runtime.project_id, ProjectStatus.enriching)
    usage = runtime.meter.by_provider().get(PROVIDER)
    return QualifySummary(
        qualified=tally.qualified,
        disqualified=tally.disqualified,
        needs_review=tally.needs_review,
        store_errors=tally.store_errors,
        total=tally.qualified + tally.disqualified + tally.needs_review,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_usd=round(usage.cost_usd, 6) if usage else 0.0,
        project=await runtime.store.count_companies(runtime.project_id),
        resumed_verdicts=run.resumed,
    )
