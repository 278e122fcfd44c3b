"""The webhook's log: a handler Prefect's logging setup leaves alone, and the audit lines.

Importing Prefect runs its logging configuration: the root logger goes to WARNING, and
uvicorn's loggers are reset (access lines gone) when uvicorn configured logging before. So
after the first request imported Prefect's client, no `tam.webhook` INFO line and no access line
was printed. `configure_logging` lets Prefect configure first, then gives `tam.webhook` a
handler and level of its own (no Prefect configuration touches it); uvicorn configures its
loggers after that. Audit lines never carry key material: a refused request is logged by
client address, method and path only.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO
from uuid import UUID

from starlette.requests import Request

LOGGER_NAME = "tam.webhook"
AUDIT = logging.getLogger(f"{LOGGER_NAME}.audit")
LOG_FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"


class WebhookLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure_logging` installs (told apart so a second call replaces it)."""


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """`tam.webhook` (and `tam.webhook.audit`) print at `level` to stderr, whatever Prefect's
    logging configuration did or does to the root logger."""
    # NOTE: Prefect configures logging when `prefect.main` is imported (the first `from
    # prefect import flow`), and again, from scratch, if it was configured before and
    # someone (uvicorn) replaced the handlers since. Importing it here, before uvicorn
    # configures its loggers, makes the Prefect imports of the first dispatch change nothing.
    import prefect.main  # noqa: F401

    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if isinstance(h, WebhookLogHandler)]:
        logger.removeHandler(old)
    handler = WebhookLogHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    # NOTE: not propagated: the root logger is Prefect's (WARNING), and a line must not
    # print twice where a root handler does take INFO.
    logger.propagate = False
    logger.disabled = AUDIT.disabled = False
    return handler


def client_address(request: Request) -> str:
    """The caller as uvicorn saw it (behind a trusted proxy: X-Forwarded-For's client)."""
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def audit_refused(request: Request) -> None:
    """A request without the right x-api-key: who and where, never what key it sent."""
    reason = "missing" if not request.headers.get("x-api-key") else "wrong"
    AUDIT.warning(
        "refused key=%s client=%s method=%s path=%s",
        reason,
        client_address(request),
        request.method,
        request.url.path,
    )


def audit_dispatch(
    *,
    job_id: UUID,
    job_type: str,
    project_id: UUID,
    flow_run_id: UUID,
    state: str,
    deduplicated: bool,
) -> None:
    AUDIT.info(
        "dispatch job=%s type=%s project=%s flow_run=%s state=%s deduplicated=%s",
        job_id,
        job_type,
        project_id,
        flow_run_id,
        state,
        str(deduplicated).lower(),
    )


def audit_cancel(
    *, job_id: UUID, project_id: UUID, flow_run_id: UUID | None, state: str | None, outcome: str
) -> None:
    AUDIT.info(
        "cancel job=%s project=%s flow_run=%s state=%s outcome=%s",
        job_id,
        project_id,
        flow_run_id or "-",
        state or "-",
        outcome,
    )
