"""The dispatch webhook the app's tam-run-job Edge Function calls (docs/contracts.md, "The
dispatch webhook").

`POST /api/tam/run` starts the Prefect deployment for a job, `GET /api/tam/jobs/{id}` and
`POST /api/tam/jobs/{id}/cancel` watch and stop it, `GET /healthz` reports reachability.
Every answer is JSON; an error is `{"error": ...}`, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from deployments.serve import DEPLOYMENT_NAME
from deployments.webhook.audit import audit_cancel, audit_dispatch, configure_logging
from deployments.webhook.budget import BudgetedDispatcher, CancelWatchers
from deployments.webhook.dispatch import (
    DeploymentMissing,
    Dispatcher,
    PrefectDispatcher,
    PrefectUnavailable,
    RunInfo,
    run_spec,
)
from deployments.webhook.http import (
    MAX_BODY_BYTES,
    ApiError,
    RequestGuard,
    install_error_handlers,
    key_matches,
    openapi_without_422,
)
from deployments.webhook.models import (
    CancelRequest,
    CancelResponse,
    ErrorResponse,
    HealthResponse,
    JobView,
    RunRequest,
    RunResponse,
    job_view,
)
from tam.failures import redact
from tam.job_transitions import ACTIVE, QUEUED_STEP, Move, Writer, guard
from tam.models import Job, JobStatus, JobType, JobUpdate
from tam.settings import Settings, get_settings
from tam.stores import NotFoundInStore, Store, StoreError, open_store

logger = logging.getLogger("tam.webhook")

CANCEL_WATCH_S = 180.0
HEALTH_CHECK_TIMEOUT_S = 10.0
# The key is all that stands between the internet and starting paid runs: long enough that
# guessing it is hopeless (`openssl rand -hex 32` gives 64).
MIN_SERVICE_KEY_CHARS = 32


class ServiceKeyMissing(RuntimeError):
    """SERVICE_API_KEY is empty: the webhook would accept anyone, so it does not start."""


class ServiceKeyTooShort(ServiceKeyMissing):
    """SERVICE_API_KEY is shorter than MIN_SERVICE_KEY_CHARS: as good as none."""


# --- dependencies -----------------------------------------------------------------------
api_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="SERVICE_API_KEY shared with the app"
)


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_dispatcher(request: Request) -> Dispatcher:
    """The app's dispatcher, its Prefect calls bounded by this request's dispatch budget."""
    settings: Settings = request.app.state.settings
    return BudgetedDispatcher(request.app.state.dispatcher, settings.dispatch_budget_s)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    assert settings.service_api_key is not None  # create_app refuses to start without it
    if not key_matches(settings.service_api_key.get_secret_value(), key):
        raise ApiError(401, "Unauthorized")


# --- helpers ------------------------------------------------------------------------------
async def load_job(store: Store, job_id: UUID, project_id: UUID | None = None) -> Job:
    try:
        job: Job | None = await store.get_job(job_id)
    except NotFoundInStore:
        job = None
    if job is None or (project_id is not None and job.project_id != project_id):
        # NOTE: one answer for both: in that project the job does not exist, and a caller
        # probing ids learns nothing about other projects' jobs.
        raise ApiError(404, f"Job {job_id} not found")
    return job


async def fail_dispatch(store: Store, settings: Settings, job: Job, reason: str) -> bool:
    """The job row says why dispatch failed (the frontend shows result_summary.error).

    Only while no live run exists: the caller saw the row's run (`job.flow_run_id`) absent
    or final, and the write is refused if the row has another run by now."""
    message = redact(reason, settings.secret_values())
    try:
        return await store.update_job(
            job.id,
            JobUpdate(
                status=JobStatus.failed,
                result_summary={"error": message, "dispatch": True},
                completed_at=datetime.now(UTC),
            ),
            guard=guard(Writer.webhook, Move.dispatch_failed, flow_run_id=job.flow_run_id),
        )
    except StoreError as exc:
        logger.error("Could not mark job %s failed after a dispatch error: %s", job.id, exc)
        return False


async def record_run(store: Store, job: Job, run: RunInfo) -> bool:
    """A new attempt: the row is `running`, queued for a worker, with this run and nothing
    of the last attempt (error, result, started_at, counts). The heartbeat is the time it
    was queued, so the attempt is not stale before a worker claims it."""
    now = datetime.now(UTC)
    return await store.update_job(
        job.id,
        JobUpdate(
            status=JobStatus.running,
            progress=0,
            flow_run_id=run.id,
            current_step=QUEUED_STEP,
            heartbeat_at=now,
            done_count=0,
            total_count=0,
            clear_result=True,
            clear_started=True,
        ),
        guard=guard(Writer.webhook, Move.new_attempt, flow_run_id=job.flow_run_id),
    )


async def restore_completed(store: Store, job: Job, run: RunInfo) -> bool:
    """Put back `completed` on a row an older Edge Function moved back to running although
    its run completed. result_summary still holds the run's result unless a writer put an
    error there; then the row says it was restored."""
    summary = job.result_summary or {}
    kept = summary if summary and "error" not in summary else {"restored": True}
    return await store.update_job(
        job.id,
        JobUpdate(
            status=JobStatus.completed,
            progress=100,
            current_step="done",
            result_summary=kept,
            completed_at=job.completed_at or datetime.now(UTC),
        ),
        guard=guard(Writer.webhook, Move.restore_completed, flow_run_id=run.id),
    )


async def mark_cancelled(store: Store, job_id: UUID, run_id: UUID | None) -> bool:
    """End the row cancelled when its run (`run_id`, None: it has none) cannot do it."""
    return await store.update_job(
        job_id,
        JobUpdate(
            status=JobStatus.cancelled,
            result_summary={"error": "Cancelled by user", "cancelled": True},
            completed_at=datetime.now(UTC),
        ),
        guard=guard(Writer.webhook, Move.cancel, flow_run_id=run_id),
    )


async def watch_cancellation(
    store: Store, dispatcher: Dispatcher, job_id: UUID, run_id: UUID, timeout_s: float
) -> None:
    """Backstop for the flow's cancellation hook: once the run is Cancelled, so is the job."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        await asyncio.sleep(1.0)
        try:
            run = await dispatcher.read_run(run_id)
            if run is None or run.state_type == "CANCELLED":
                await mark_cancelled(store, job_id, run_id)
                return
            if run.is_final:
                return
        except (PrefectUnavailable, StoreError) as exc:
            logger.warning("Watching the cancellation of job %s: %s", job_id, exc)


# --- routes -------------------------------------------------------------------------------
_ERROR_TEXT = {
    400: "A field is missing or invalid (the message names it)",
    401: "Missing or wrong x-api-key",
    404: "No such job (in that project)",
    409: "The job already completed or failed",
    413: f"Body larger than {MAX_BODY_BYTES} bytes",
    500: "Unexpected error (details in the server log under requestId)",
    502: "Prefect could not be reached",
    503: "The database is unavailable, or Prefect has no deployment for this job type",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _ERROR_TEXT[code]} for code in codes}


router = APIRouter(
    prefix="/api/tam",
    dependencies=[Depends(require_api_key)],
    responses=errors(400, 401, 500, 503),
)


@router.post(
    "/run",
    response_model=RunResponse,
    responses=errors(404, 409, 413, 502),
    summary="Start the Prefect flow run for a job (idempotent per job)",
)
async def run_job(
    body: RunRequest,
    request: Request,
    store: StoreDep,
    dispatcher: DispatcherDep,
    settings: SettingsDep,
) -> Any:
    job = await load_job(store, body.jobId, body.projectId)
    if job.job_type != body.jobType:
        raise ApiError(
            400,
            f"jobType: the job is a {job.job_type!r} job, not {body.jobType!r}",
            field="jobType",
        )
    if job.status == JobStatus.completed:
        # NOTE: the row is untouched: finished work is never redone over its result.
        raise ApiError(409, f"Job {job.id} already completed")
    try:
        previous = await dispatcher.read_run(job.flow_run_id) if job.flow_run_id else None
    except PrefectUnavailable as exc:
        # The row's run may be alive (this may be a duplicate dispatch during an outage):
        # a dispatch error never fails a job whose run may be alive.
        raise ApiError(502, f"Could not dispatch the job: {exc}") from exc
    if previous is not None and previous.state_type == "COMPLETED" and job.status in ACTIVE:
        # An older Edge Function moved the completed job back to running.
        restored = await restore_completed(store, job, previous)
        logger.warning("Job %s: its run %s completed; row restored", job.id, previous.id)
        return JSONResponse(
            {
                "error": f"Job {job.id} already completed",
                "restored": restored,
                "taskId": str(previous.id),
                "flowRunId": str(previous.id),
            },
            status_code=409,
        )
    if previous is not None and not previous.is_final:
        # Still scheduled, running or retrying: the same run.
        run, reused = previous, True
    else:
        # No run yet, Prefect no longer knows it, or it ended: a new attempt.
        spec = run_spec(
            JobType(body.jobType).flow_name,
            body.jobType,
            project_id=job.project_id,
            job_id=job.id,
            previous_run_id=job.flow_run_id,
            deployment_name=request.app.state.deployment_name,
        )
        try:
            run = await dispatcher.start_run(spec)
        except (PrefectUnavailable, DeploymentMissing) as exc:
            reason = f"Could not dispatch the job: {exc}"
            await fail_dispatch(store, settings, job, reason)
            status = 502 if isinstance(exc, PrefectUnavailable) else 503
            raise ApiError(status, reason) from exc
        # NOTE: Prefect handing back a run for the idempotency key is a reuse too: a
        # concurrent dispatch of this job created it after this one read the row.
        reused = run.existing or run.id == job.flow_run_id
        if run.id != job.flow_run_id:
            await record_run(store, job, run)
    audit_dispatch(
        job_id=job.id,
        job_type=job.job_type,
        project_id=job.project_id,
        flow_run_id=run.id,
        state=run.state_name,
        deduplicated=reused,
    )
    return RunResponse(
        taskId=str(run.id),
        flowRunId=str(run.id),
        jobId=job.id,
        flowRunState=run.state_name,
        deduplicated=reused,
        prefectUrl=dispatcher.run_url(run.id),
    )


@router.get(
    "/jobs/{jobId}",
    response_model=JobView,
    responses=errors(404),
    summary="A job's status and progress",
)
async def get_job(
    jobId: UUID,
    projectId: Annotated[UUID, Query(description="tam_projects.id the job belongs to")],
    store: StoreDep,
    dispatcher: DispatcherDep,
) -> JobView:
    job = await load_job(store, jobId, projectId)
    url = dispatcher.run_url(job.flow_run_id) if job.flow_run_id else None
    return job_view(job, url, now=datetime.now(UTC))


@router.post(
    "/jobs/{jobId}/cancel",
    response_model=CancelResponse,
    responses={
        202: {"model": CancelResponse, "description": "Cancelling; the job ends cancelled soon"},
        **errors(404, 409, 502),
    },
    summary="Cancel a job's flow run",
)
async def cancel_job(
    jobId: UUID,
    request: Request,
    store: StoreDep,
    dispatcher: DispatcherDep,
    projectId: Annotated[
        UUID | None, Query(description="tam_projects.id (or in the JSON body)")
    ] = None,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> Any:
    project_id = projectId or (body.projectId if body else None)
    if project_id is None:
        raise ApiError(400, "projectId: required (query parameter or JSON body)", field="projectId")
    job = await load_job(store, jobId, project_id)
    if job.status == JobStatus.cancelled:
        audit_cancel(
            job_id=job.id,
            project_id=job.project_id,
            flow_run_id=job.flow_run_id,
            state=None,
            outcome="already-cancelled",
        )
        return CancelResponse(
            jobId=job.id, status=job.status, flowRunId=job.flow_run_id, message="Already cancelled"
        )
    if job.status.is_final:
        raise ApiError(409, f"Job {job.id} already {job.status.value}")
    try:
        run = await dispatcher.cancel_run(job.flow_run_id) if job.flow_run_id else None
    except PrefectUnavailable as exc:
        raise ApiError(502, f"Could not cancel the flow run: {exc}") from exc
    if run is None or run.is_final:
        # Nothing is running it (never dispatched, run gone, or ended): end the row here.
        await mark_cancelled(store, job.id, job.flow_run_id)
        current = await store.get_job(job.id)
        audit_cancel(
            job_id=job.id,
            project_id=job.project_id,
            flow_run_id=job.flow_run_id,
            state=run.state_name if run else None,
            outcome=f"row-{current.status.value}",
        )
        return CancelResponse(
            jobId=job.id,
            status=current.status,
            flowRunId=job.flow_run_id,
            flowRunState=run.state_name if run else None,
            message="Cancelled",
        )
    watchers: CancelWatchers = request.app.state.watchers
    # NOTE: the app's own dispatcher: this request's dispatch budget ends long before the
    # watch does. A job cancelled twice keeps its first watcher.
    unbudgeted: Dispatcher = request.app.state.dispatcher
    run_id, watch_s = run.id, request.app.state.cancel_watch_s
    watchers.start(job.id, lambda: watch_cancellation(store, unbudgeted, job.id, run_id, watch_s))
    audit_cancel(
        job_id=job.id,
        project_id=job.project_id,
        flow_run_id=run.id,
        state=run.state_name,
        outcome="cancelling",
    )
    answer = CancelResponse(
        jobId=job.id,
        status=job.status,
        flowRunId=run.id,
        flowRunState=run.state_name,
        message="Cancelling: the worker stops the run and the job ends cancelled",
    )
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


async def _reachable(name: str, check: Awaitable[object], secrets: list[str]) -> bool:
    try:
        await asyncio.wait_for(check, timeout=HEALTH_CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure is "unavailable"; the log says which
        detail = f"{type(exc).__name__}: {exc}"
        logger.warning("Health check: %s unavailable: %s", name, redact(detail, secrets))
        return False
    return True


async def healthz(request: Request) -> JSONResponse:
    # NOTE: anyone may call this: it answers fixed words. An exception's text can carry a
    # hostname, a URL or a credential, so it goes to the log only.
    store: Store = request.app.state.store
    dispatcher: Dispatcher = request.app.state.dispatcher
    secrets = request.app.state.settings.secret_values()
    database, prefect = await asyncio.gather(
        _reachable("database", store.list_jobs(limit=1), secrets),
        _reachable("Prefect", dispatcher.check(), secrets),
    )
    answer = HealthResponse(
        status="ok" if database and prefect else "degraded",
        database="ok" if database else "unavailable",
        prefect="ok" if prefect else "unavailable",
    )
    return JSONResponse(
        answer.model_dump(mode="json"), status_code=200 if answer.status == "ok" else 503
    )


# --- the app ------------------------------------------------------------------------------
def check_service_key(settings: Settings) -> None:
    """Refuse to serve without a key, or with one short enough to guess."""
    key = settings.service_api_key.get_secret_value() if settings.service_api_key else ""
    if not key.strip():
        raise ServiceKeyMissing(
            "SERVICE_API_KEY is not set: the dispatch webhook refuses to start without it"
        )
    if len(key) < MIN_SERVICE_KEY_CHARS:
        raise ServiceKeyTooShort(
            f"SERVICE_API_KEY has {len(key)} characters; the dispatch webhook needs at least "
            f"{MIN_SERVICE_KEY_CHARS} (make one with `openssl rand -hex 32`)"
        )


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    """The webhook app. Without `store`/`dispatcher` it opens the configured database and
    talks to the Prefect API in PREFECT_API_URL. Raises ServiceKeyMissing without a key of
    at least MIN_SERVICE_KEY_CHARS characters."""
    settings = settings or get_settings()
    check_service_key(settings)
    owns_store = store is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.store is None:
            app.state.store = open_store(settings=settings)
            try:
                await app.state.store.init_schema()
            except StoreError as exc:  # /healthz reports it; dispatches answer 500 meanwhile
                logger.error("Database not ready: %s", redact(str(exc), settings.secret_values()))
        try:
            yield
        finally:
            for task in list(app.state.background):
                task.cancel()
            if owns_store:
                await app.state.store.close()

    # NOTE: the docs pages and the schema map the whole API for anyone: off unless asked
    # for (TAM_WEBHOOK_DOCS=true, for local development).
    docs = settings.webhook_docs
    app = FastAPI(
        title="TAM dispatch webhook",
        version="1.0.0",
        summary="Starts the TAM pipeline's Prefect flows for the app's Edge Functions.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.dispatcher = dispatcher or PrefectDispatcher()
    app.state.background = set()
    app.state.watchers = CancelWatchers(app.state.background)
    app.state.cancel_watch_s = CANCEL_WATCH_S
    # `tam serve` and prefect.yaml's Docker flavour deploy as "tam"; the process flavour as
    # "tam-process" (see prefect.yaml).
    app.state.deployment_name = os.environ.get("TAM_DEPLOYMENT_NAME") or DEPLOYMENT_NAME
    app.include_router(router)
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Database or Prefect down"}},
        summary="Database and Prefect reachability (no key needed)",
    )
    install_error_handlers(app, settings)
    app.add_middleware(RequestGuard, max_body_bytes=MAX_BODY_BYTES, secrets=settings.secret_values)
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def run(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the webhook with uvicorn until interrupted (`tam webhook`)."""
    import uvicorn

    try:
        app = create_app()
    except ServiceKeyMissing as exc:
        raise SystemExit(f"error: {exc}") from None
    # NOTE: before uvicorn configures its loggers: Prefect's logging setup (run at its
    # import) would otherwise silence the access and audit lines after the first dispatch.
    configure_logging()
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True)
