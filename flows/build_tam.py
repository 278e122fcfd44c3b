"""build-tam: the whole pipeline for one project, each step a subflow on its own job row."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

from prefect import flow

from flows.check_linkedin import check_linkedin
from flows.find_contacts import find_contacts
from flows.qualify import qualify_companies
from flows.source_companies import source_companies
from orchestration.hooks import JOB_HOOKS
from orchestration.session import create_markdown, job_session
from tam.models import JobStatus, JobType, Usage

STEPS: list[tuple[JobType, Any]] = [
    (JobType.source_companies, source_companies),
    (JobType.qualify, qualify_companies),
    (JobType.find_contacts, find_contacts),
    (JobType.check_linkedin, check_linkedin),
]


class PipelineStepFailed(RuntimeError):
    """A step of the pipeline ended failed or cancelled; the message names it and why."""


def costs_markdown(results: dict[str, dict[str, Any]]) -> str:
    """Cost per step and provider, as a Markdown table for the Prefect UI."""
    lines = ["| step | provider | units | USD |", "|---|---|---:|---:|"]
    for step, summary in results.items():
        usage = dict(summary.get("usage") or {})
        if step == JobType.qualify.value:
            tokens = int(summary.get("inputTokens", 0)) + int(summary.get("outputTokens", 0))
            usage = {"anthropic": {"credits": tokens, "costUsd": summary.get("costUsd", 0.0)}}
        for provider, spent in usage.items():
            lines.append(
                f"| {step} | {provider} | {spent.get('credits', 0):g} "
                f"| {float(spent.get('costUsd', 0.0)):.4f} |"
            )
    total = sum(float(s.get("costUsd") or 0.0) for s in results.values())
    lines.append(f"| **total** | | | **{total:.4f}** |")
    return "\n".join(lines)


def step_job_id(build_job_id: UUID, step: JobType) -> UUID:
    """The job row of one step: derived from the pipeline's own, so the app can find it
    before the step starts and a retried pipeline run reuses it instead of adding rows."""
    return uuid5(build_job_id, step.value)


@flow(name="build-tam", **JOB_HOOKS)
async def build_tam(project_id: UUID, job_id: UUID | None = None) -> dict[str, Any]:
    """Build the project's TAM end to end: source → qualify → find contacts → LinkedIn.

    Each step runs as a subflow on its own `tam_job_queue` row (id derived from this job's
    id, see `step_job_id`), so the frontend follows progress step by step; this job's row
    tracks the pipeline as a whole. The first step that fails stops the pipeline, and this
    job fails with a message naming the step and its cause.
    """
    async with job_session(JobType.build_tam, project_id, job_id) as session:
        await session.load_project()
        store, reporter = session.store, session.reporter
        reporter.set_total(len(STEPS))
        jobs: dict[str, str] = {}
        results: dict[str, Any] = {}
        for index, (step, step_flow) in enumerate(STEPS, start=1):
            child_id = step_job_id(session.job_id, step)
            await store.create_job(project_id, step.value, job_id=child_id)
            jobs[step.value] = str(child_id)
            await reporter.step(f"{index}/{len(STEPS)} {step.value}")
            state = await step_flow(project_id=project_id, job_id=child_id, return_state=True)
            job = await store.get_job(child_id)
            if not state.is_completed() or job.status != JobStatus.completed:
                error = (job.result_summary or {}).get("error") or state.message or job.status
                raise PipelineStepFailed(f"step {step.value} failed: {error}")
            summary = job.result_summary or {}
            results[step.value] = summary
            # What the step's own row says it spent: its providers are metered there.
            spent = float(summary.get("costUsd") or 0.0)
            session.meter.add(Usage(provider=step.value, cost_usd=spent))
            reporter.advance(1)
        await create_markdown(
            "build-tam-costs",
            costs_markdown(results),
            f"Pipeline cost for project {project_id} (units: credits, records or tokens)",
        )
        return await session.complete(
            {
                "steps": [step.value for step, _ in STEPS],
                "jobIds": jobs,
                "results": results,
                "costUsd": round(session.meter.total_usd, 6),
            }
        )
