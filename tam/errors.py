"""One error tree for every provider, so a flow can tell 'retry later' from 'fail the job now'.

ProviderError
├── RateLimited        429 / throttled: retry after `retry_after` seconds
├── Unavailable        5xx, 529 overloaded, connection refused, timeouts: retry
├── BadResponse        the answer did not parse or validate: retry a little, then give up
├── NotFound           the provider has no data for this item (not an error for the job)
├── InvalidRequest     4xx caused by our input for this item: do not retry this item
└── SystemicError      nothing will work until a human acts: fail the job at once
    ├── AuthFailed     401/403 bad key, permission
    └── OutOfCredits   account out of credits / quota / billing
"""

from __future__ import annotations

from collections.abc import Iterable

# Credentials the clients of this process were built with. A provider may quote the
# request back in its error body (key included); every ProviderError message is scrubbed
# of these, so no exception, log line, Prefect state or job row can carry a key.
_SECRETS: set[str] = set()
# Real keys are 20+ characters; short test keys like "invalid" must not scrub ordinary words.
MIN_SECRET_LENGTH = 8


def register_secret(value: str | None) -> None:
    """Remember a credential so that no provider error message can ever show it."""
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        _SECRETS.add(value.strip())


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every registered credential (and each of `extra`) replaced by ***."""
    # Longest first: a key that contains another key must not be left half-visible.
    for secret in sorted({*_SECRETS, *extra}, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


class ProviderError(Exception):
    """Root of every provider failure. `provider` names who spoke; never carries a key."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = scrub(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.provider}: {self.message}{code}"

    def __reduce__(self) -> tuple[object, ...]:
        # NOTE: Prefect pickles exceptions into task/flow states; keep keyword args.
        return (
            _rebuild,
            (type(self), self.message, self.provider, self.status_code, self.retry_after),
        )


def _rebuild(
    cls: type[ProviderError],
    message: str,
    provider: str,
    status_code: int | None,
    retry_after: float | None,
) -> ProviderError:
    return cls(message, provider=provider, status_code=status_code, retry_after=retry_after)


class RateLimited(ProviderError):
    retryable = True


class Unavailable(ProviderError):
    retryable = True


class BadResponse(ProviderError):
    retryable = True


class NotFound(ProviderError):
    pass


class InvalidRequest(ProviderError):
    pass


class SystemicError(ProviderError):
    """The account or configuration is broken: every further call would fail too."""


class AuthFailed(SystemicError):
    pass


class OutOfCredits(SystemicError):
    pass


class JobInputError(ValueError):
    """The job's own input (project, ICP, job row) is invalid; names the field."""
