"""Turn any exception into the one-line message a job row shows (never a secret)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import ValidationError

from tam.errors import AuthFailed, JobInputError, OutOfCredits, ProviderError, SystemicError
from tam.stores.base import StoreError

_KEY_ENV = {
    "anthropic": "ANTHROPIC_API_KEY",
    "prospeo": "PROSPEO_API_KEY",
    "hunter": "HUNTER_API_KEY",
    "neverbounce": "NEVERBOUNCE_API_KEY",
    "brightdata": "BRIGHTDATA_API_TOKEN",
    "discolike": "DISCOLIKE_API_KEY",
    "google_places": "GOOGLE_PLACES_API_KEY",
}


# `scheme://user:password@`: the user stays (it helps to read the error), the password goes.
_URL_PASSWORD = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]+@")


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


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` without the given secrets, nor the password of any URL it quotes."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    # NOTE: also a URL that is not the configured one (a DSN a driver echoes, a pooler's).
    return _URL_PASSWORD.sub(r"\g<prefix>:***@", text)


def describe_failure(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A message for `result_summary.error` that names the cause and what to do."""
    exc = root_cause(exc)
    if isinstance(exc, AuthFailed):
        hint = _KEY_ENV.get(exc.provider, "the API key")
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
