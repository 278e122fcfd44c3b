"""The webhook's request and response bodies (camelCase, as the app's Edge Functions speak)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from tam.job_transitions import QUEUED_STEP
from tam.models import Job, JobStatus, JobType


def known_job_types() -> list[str]:
    return [job_type.value for job_type in JobType]


# NOTE: a JSON list of its own: pydantic's JsonValue list is invariant to list[str].
_JOB_TYPE_ENUM: list[JsonValue] = [job_type.value for job_type in JobType]


class RunRequest(BaseModel):
    """What tam-run-job POSTs: the job row it just marked running."""

    model_config = ConfigDict(extra="ignore")

    jobId: UUID = Field(description="tam_job_queue.id")
    jobType: str = Field(
        description="tam_job_queue.job_type; one of the deployed steps",
        json_schema_extra={"enum": _JOB_TYPE_ENUM},
    )
    projectId: UUID = Field(description="tam_projects.id the job belongs to")

    @field_validator("jobType")
    @classmethod
    def _known(cls, value: str) -> str:
        types = known_job_types()
        if value not in types:
            raise ValueError(f"unknown job type {value!r}; expected one of: {', '.join(types)}")
        return value


class RunResponse(BaseModel):
    """`taskId` is what the Edge Function reads (the flow run id, as the old route's task id)."""

    triggered: bool = True
    taskId: str
    flowRunId: str
    jobId: UUID
    flowRunState: str
    deduplicated: bool = Field(description="True when an existing run was returned")
    prefectUrl: str | None = None


class JobView(BaseModel):
    jobId: UUID
    projectId: UUID
    jobType: str
    status: JobStatus
    progress: int
    currentStep: str | None = None
    queuedSeconds: float | None = Field(
        default=None, description="How long the job has waited for a worker (step `queued`)"
    )
    done: int | None = None
    total: int | None = None
    estimatedSecondsRemaining: float | None = None
    resultSummary: dict[str, Any] | None = None
    flowRunId: UUID | None = None
    prefectUrl: str | None = None
    attempt: int = 0
    costUsd: float | None = None
    createdAt: datetime | None = None
    startedAt: datetime | None = None
    heartbeatAt: datetime | None = None
    completedAt: datetime | None = None


class CancelRequest(BaseModel):
    """The optional JSON body of a cancel; `projectId` may come as a query parameter instead."""

    model_config = ConfigDict(extra="ignore")

    projectId: UUID | None = Field(default=None, description="tam_projects.id of the job")


class CancelResponse(BaseModel):
    jobId: UUID
    status: JobStatus
    flowRunId: UUID | None = None
    flowRunState: str | None = None
    message: str


Reachability = Literal["ok", "unavailable"]


class HealthResponse(BaseModel):
    """Fixed words only: the reason (a hostname, a URL) goes to the server log, not to an
    anonymous caller."""

    status: Literal["ok", "degraded"]
    database: Reachability
    prefect: Reachability


class ErrorResponse(BaseModel):
    error: str
    field: str | None = Field(default=None, description="The request field at fault (400)")
    requestId: str | None = Field(default=None, description="For the server log (500)")


def estimate_remaining_s(job: Job, now: datetime) -> float | None:
    """Seconds left at the rate so far (done/elapsed); None until there is a rate."""
    if job.status.is_final:
        return 0.0 if job.status == JobStatus.completed else None
    done, total = job.done_count or 0, job.total_count or 0
    if job.status != JobStatus.running or job.started_at is None or done <= 0 or total <= 0:
        return None
    elapsed = (now - job.started_at).total_seconds()
    if elapsed <= 0:
        return None
    return round(max(total - done, 0) * elapsed / done, 1)


def queued_s(job: Job, now: datetime) -> float | None:
    """Seconds since the job was queued while it waits for a worker (the webhook stamps
    the heartbeat when it queues; no run has claimed it: started_at NULL)."""
    waiting = job.status == JobStatus.running and job.started_at is None
    if not waiting or job.current_step != QUEUED_STEP or job.heartbeat_at is None:
        return None
    return round(max((now - job.heartbeat_at).total_seconds(), 0.0), 1)


def job_view(job: Job, prefect_url: str | None, *, now: datetime) -> JobView:
    return JobView(
        jobId=job.id,
        projectId=job.project_id,
        jobType=job.job_type,
        status=job.status,
        progress=job.progress,
        currentStep=job.current_step,
        queuedSeconds=queued_s(job, now),
        done=job.done_count,
        total=job.total_count,
        estimatedSecondsRemaining=estimate_remaining_s(job, now),
        resultSummary=job.result_summary,
        flowRunId=job.flow_run_id,
        prefectUrl=prefect_url,
        attempt=job.attempt,
        costUsd=job.cost_usd,
        createdAt=job.created_at,
        startedAt=job.started_at,
        heartbeatAt=job.heartbeat_at,
        completedAt=job.completed_at,
    )
