"""The Prefect side of dispatch: start a step's deployment, read a run, cancel a run.

The webhook decides *whether* to start a run; this module only talks to Prefect, behind
the small `Dispatcher` protocol so the HTTP layer can be tested with a fake.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID, uuid4

import httpx
from pydantic import BaseModel

from deployments.serve import DEPLOYMENT_NAME

logger = logging.getLogger("tam.webhook")

# Prefect state types (prefect.client.schemas.objects.StateType values).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
# A final run that did not finish its work: dispatching the job again starts a new attempt.
UNFINISHED_STATES = frozenset({"FAILED", "CANCELLED", "CRASHED"})
# The flow-run context key start_run marks its own creations with.
DISPATCH_TOKEN = "tam_dispatch_token"


class PrefectUnavailable(Exception):
    """Prefect could not be reached, or answered with an error."""


class DeploymentMissing(Exception):
    """Prefect is up but has no deployment for this job type."""


class RunInfo(BaseModel):
    """What the webhook needs to know about one flow run."""

    id: UUID
    state_type: str
    state_name: str
    # start_run only: Prefect answered with a run that already had the idempotency key.
    existing: bool = False

    @property
    def is_final(self) -> bool:
        return self.state_type in FINAL_STATES

    @property
    def ended_unfinished(self) -> bool:
        return self.state_type in UNFINISHED_STATES


@dataclass(frozen=True)
class RunSpec:
    """One flow run to create from a deployment."""

    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str
    name: str
    tags: list[str] = field(default_factory=list)


class Dispatcher(Protocol):
    async def start_run(self, spec: RunSpec) -> RunInfo:
        """Create the run, or return the existing run with the same idempotency key."""
        ...

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        """None when Prefect has no such run (deleted, or from another server)."""
        ...

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None: ...

    async def check(self) -> None:
        """Raise PrefectUnavailable unless the API answers its health check."""

    def run_url(self, flow_run_id: UUID) -> str | None: ...


def attempt_key(job_id: UUID, previous_run_id: UUID | None) -> str:
    """The idempotency key of a job's next attempt.

    The first attempt is keyed by the job alone; each later one by the run it replaces.
    Two dispatches that race therefore compute the same key (they saw the same previous
    run) and Prefect hands both the same run, while a job whose run failed or was cancelled
    gets a fresh key and so a fresh run.
    """
    base = f"tam-job:{job_id}"
    return base if previous_run_id is None else f"{base}:after:{previous_run_id}"


def run_spec(
    flow_name: str,
    job_type: str,
    *,
    project_id: UUID,
    job_id: UUID,
    previous_run_id: UUID | None,
    deployment_name: str = DEPLOYMENT_NAME,
) -> RunSpec:
    return RunSpec(
        deployment=f"{flow_name}/{deployment_name}",
        parameters={"project_id": str(project_id), "job_id": str(job_id)},
        idempotency_key=attempt_key(job_id, previous_run_id),
        name=f"{job_type}-job-{str(job_id)[:8]}",
        tags=["tam", f"job-type:{job_type}", f"project:{project_id}", f"job:{job_id}"],
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"Prefect API answered {exc.response.status_code} for {exc.request.url.path}"
    if isinstance(exc, httpx.TimeoutException):
        return "Prefect API timed out"
    if isinstance(exc, httpx.HTTPError | OSError):
        return f"Prefect API unreachable ({type(exc).__name__}: {exc})"
    return f"Prefect API error ({type(exc).__name__}: {exc})"


def _info(run: Any) -> RunInfo:
    state = run.state
    state_type = getattr(getattr(state, "type", None), "value", None) or "SCHEDULED"
    return RunInfo(id=run.id, state_type=state_type, state_name=getattr(state, "name", state_type))


class PrefectDispatcher:
    """Dispatcher on the Prefect API named by PREFECT_API_URL (server or Cloud)."""

    def __init__(self, *, timeout_s: float = 15.0) -> None:
        self.timeout_s = timeout_s

    @staticmethod
    def api_url() -> str | None:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
        return str(url) if url else None

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        if not self.api_url():
            # NOTE: without an API URL Prefect would start a private in-process server,
            # whose runs no worker ever sees.
            raise PrefectUnavailable("PREFECT_API_URL is not set")
        try:
            async with get_client(httpx_settings={"timeout": self.timeout_s}) as client:
                yield client
        except (ObjectNotFound, DeploymentMissing, PrefectUnavailable):
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise PrefectUnavailable(_describe(exc)) from exc

    async def start_run(self, spec: RunSpec) -> RunInfo:
        from prefect.exceptions import ObjectNotFound

        async with self._client() as client:
            try:
                deployment = await client.read_deployment_by_name(spec.deployment)
            except ObjectNotFound:
                raise DeploymentMissing(
                    f"Prefect has no deployment {spec.deployment!r}; start `tam serve` or "
                    "run `prefect deploy` (see deployments/README.md)"
                ) from None
            # NOTE: a token of this call in the run's context tells a run created here
            # from one Prefect returned for the key (the API's 201/200 is decided on a
            # timestamp taken before the insert, so two racing creates can both see 201).
            token = uuid4().hex
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=spec.parameters,
                name=spec.name,
                tags=spec.tags,
                idempotency_key=spec.idempotency_key,
                context={DISPATCH_TOKEN: token},
            )
        existing = (run.context or {}).get(DISPATCH_TOKEN) != token
        return _info(run).model_copy(update={"existing": existing})

    async def read_run(self, flow_run_id: UUID) -> RunInfo | None:
        from prefect.exceptions import ObjectNotFound

        async with self._client() as client:
            try:
                return _info(await client.read_flow_run(flow_run_id))
            except ObjectNotFound:
                return None

    async def cancel_run(self, flow_run_id: UUID) -> RunInfo | None:
        """Ask Prefect to cancel the run, never forcing a state over a worker.

        Cancelling is proposed without force: Prefect's own rule turns it into Cancelled,
        in the same transaction, when the run is Scheduled and no worker holds it (nothing
        to stop), and accepts it as Cancelling once a worker picked it up (Pending,
        Running): that worker stops the run and its on_cancellation hook ends the row. A
        forced Cancelled decided on a state read a moment earlier could land on a run a
        worker is starting, which would then run with its row cancelled.
        """
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Cancelling

        async with self._client() as client:
            try:
                run = _info(await client.read_flow_run(flow_run_id))
            except ObjectNotFound:
                return None
            if run.is_final:
                return run
            await client.set_flow_run_state(
                flow_run_id, Cancelling(message="Cancelled through the dispatch webhook")
            )
            return _info(await client.read_flow_run(flow_run_id))

    async def check(self) -> None:
        async with self._client() as client:
            error = await client.api_healthcheck()
        if error is not None:
            raise PrefectUnavailable(_describe(error))

    def run_url(self, flow_run_id: UUID) -> str | None:
        from prefect.settings import get_current_settings

        ui_url = get_current_settings().ui_url
        return f"{str(ui_url).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None
