"""Turn any exception into the one-line message a job row shows (never a secret)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from tam.errors import AuthFailed, JobInputError, OutOfCredits, ProviderError, SystemicError
from tam.providers import key_env
from tam.secrets import redact
from tam.stores.base import StoreError

__all__ = ["describe_failure", "redact", "root_cause"]


def root_cause(exc: BaseException) -> BaseException:
    """The first meaningful exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not _is_cancel(e)] or list(exc.exceptions)
        systemic = [e for e in inner if isinstance(root_cause(e), SystemicError)]
        exc = (systemic or inner)[0]
    return exc


def _is_cancel(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


def describe_failure(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A message for `result_summary.error` that names the cause and what to do."""
    exc = root_cause(exc)
    if isinstance(exc, AuthFailed):
        hint = key_env(exc.provider) or "the API key"
        message = f"{exc.provider} rejected the credentials: {exc}. Check {hint}."
    elif isinstance(exc, OutOfCredits):
        message = f"{exc.provider} account is out of credits: {exc}"
    elif isinstance(exc, SystemicError):
        message = f"{exc.provider} refused every request: {exc}"
    elif isinstance(exc, ProviderError):
        message = f"{exc.provider} failed after retries: {exc}"
    elif isinstance(exc, JobInputError):
        message = f"Invalid job input: {exc}"
    elif isinstance(exc, ValidationError):
        fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors()[:5])
        message = f"Invalid input in {fields}: {exc.errors()[0]['msg']}"
    elif isinstance(exc, StoreError):
        message = f"Database error: {exc}"
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(message, secrets)[:2000]
