"""The one way secrets are hidden: a registry of credentials, and the functions that scrub
them from error messages, log records and job rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

# Credentials the clients of this process were built with. A provider may quote the
# request back in its error body (key included); every ProviderError message is scrubbed
# of these, so no exception, log line, Prefect state or job row can carry a key.
_SECRETS: set[str] = set()
# Real keys are 20+ characters; short test keys like "invalid" must not scrub ordinary words.
MIN_SECRET_LENGTH = 8
# A secret named explicitly (the settings' own values) is hidden from this length on.
MIN_NAMED_SECRET_LENGTH = 4
MASK = "***"

# `scheme://user:password@`: the user stays (it helps to read the error), the password goes.
_URL_PASSWORD = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]+@")


def register_secret(value: str | None) -> None:
    """Remember a credential so that no provider error message can ever show it."""
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        _SECRETS.add(value.strip())


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every registered credential (and each of `extra`) replaced by ***."""
    # Longest first: a key that contains another key must not be left half-visible.
    for secret in sorted({*_SECRETS, *extra}, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the registered credentials, the given `secrets` (the settings' values),
    nor the password of any URL it quotes."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret and len(secret) >= MIN_NAMED_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    # NOTE: also a URL that is not the configured one (a DSN a driver echoes, a pooler's).
    return _URL_PASSWORD.sub(rf"\g<prefix>:{MASK}@", scrub(text))


def url_password_forms(url: str) -> list[str]:
    """The password of a database URL (`scheme://user:password@host/...` or libpq's
    `?password=`), as written and percent-decoded; [] without one.

    NOTE: a driver's error may quote the URL as configured or the password it decoded."""
    try:
        parts = urlsplit(url)
        query = [pair.partition("=") for pair in parts.query.split("&")]
        written = [parts.password or "", *(v for k, _, v in query if k == "password")]
    except ValueError:  # a malformed port, say: no password can be told apart
        return []
    forms: list[str] = []
    for value in written:
        for form in (value, unquote(value)):
            if form and form not in forms:
                forms.append(form)
    return forms


class ScrubSecrets(logging.Filter):
    """Rewrites a log record whose text holds a registered key.

    httpx logs every request's full URL at INFO, query string included, and NeverBounce's
    key travels in the query string: with INFO logging on, the key would be in the logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def install_log_filter(*loggers: str) -> None:
    """Scrub registered keys from these loggers' records (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubSecrets) for f in logger.filters):
            logger.addFilter(ScrubSecrets())
