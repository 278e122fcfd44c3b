"""Qualify: ask Claude about each pending company, write verdicts in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from tam.batch_writer import BatchWriter, RejectHandler
from tam.clients._retry import call_with_retries
from tam.clients.anthropic import ClaudeQualifier, Judgement
from tam.errors import BadResponse, InvalidRequest
from tam.job_reporter import JobReporter
from tam.journal import ResultJournal
from tam.limiters import AccountLimiter
from tam.models import (
    NEEDS_REVIEW_PREFIX,
    Company,
    IcpProfile,
    QualificationResult,
    QualificationStatus,
)
from tam.stores.base import RowRejected

_STATUS = {
    "qualified": QualificationStatus.qualified,
    "disqualified": QualificationStatus.disqualified,
    "needs_review": QualificationStatus.pending,
}


@dataclass
class QualifyTally:
    qualified: int = 0
    disqualified: int = 0
    needs_review: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    store_errors: int = 0  # verdicts the database refused (stored as "Needs review")

    def add(self, other: QualifyTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class QualifyContext:
    """Everything one qualify run shares between its chunks."""

    icp: IcpProfile
    qualifier: ClaudeQualifier
    limiter: AccountLimiter
    writer: BatchWriter[QualificationResult]
    reporter: JobReporter
    max_attempts: int
    journal: ResultJournal[QualificationResult] | None = None
    # The run's totals and the companies answered so far, kept across task retries: a
    # retried chunk skips what an earlier attempt answered (needs-review verdicts too,
    # which stay `pending` in the database) and its counts are not lost with it.
    tally: QualifyTally = field(default_factory=QualifyTally)
    done: set[UUID] = field(default_factory=set)


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
    ctx: QualifyContext, company: Company, tally: QualifyTally
) -> QualificationResult:
    """One company → one verdict, counted in `tally`. Systemic and outage errors propagate
    (they fail the job); an answer this company alone cannot get becomes 'Needs review'."""
    try:
        judgement = await call_with_retries(
            lambda: ctx.qualifier.judge(company, ctx.icp),
            limiter=ctx.limiter,
            max_attempts=ctx.max_attempts,
        )
    except BadResponse as exc:
        return needs_review(company, f"malformed model output: {exc.message}")
    except InvalidRequest as exc:
        return needs_review(company, f"request rejected: {exc.message}")
    tally.calls += 1
    tally.input_tokens += judgement.usage.input_tokens
    tally.output_tokens += judgement.usage.output_tokens
    tally.cost_usd += judgement.usage.cost_usd
    ctx.reporter.cost_usd += judgement.usage.cost_usd
    return result_from_judgement(company, judgement)


async def qualify_chunk(ctx: QualifyContext, companies: Sequence[Company]) -> QualifyTally:
    """Qualify a chunk concurrently; the shared limiter makes it a sliding window across
    every chunk and run. The first systemic error cancels the rest of the chunk.

    Companies this run already answered are skipped (a retried chunk); what an attempt
    counted is added to `ctx.tally` even when the attempt fails."""
    tally = QualifyTally()

    async def one(company: Company) -> None:
        result = await qualify_one(ctx, company, tally)
        ctx.done.add(company.id)
        if ctx.journal is not None:
            ctx.journal.append(result)  # paid for: never lose it to a crash
        if result.status == QualificationStatus.qualified:
            tally.qualified += 1
        elif result.status == QualificationStatus.disqualified:
            tally.disqualified += 1
        else:
            tally.needs_review += 1
        ctx.reporter.advance(1)
        await ctx.writer.add(result)

    try:
        async with asyncio.TaskGroup() as group:
            for company in companies:
                if company.id not in ctx.done:
                    group.create_task(one(company))
    finally:
        ctx.tally.add(tally)
    return tally
