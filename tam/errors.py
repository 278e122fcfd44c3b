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

# NOTE: the secret registry lives in tam.secrets; re-exported here, where clients import it.
from tam.secrets import MIN_SECRET_LENGTH, register_secret, scrub

__all__ = [
    "MIN_SECRET_LENGTH",
    "AuthFailed",
    "BadResponse",
    "InvalidRequest",
    "JobInputError",
    "NotFound",
    "OutOfCredits",
    "ProviderError",
    "RateLimited",
    "SystemicError",
    "Unavailable",
    "register_secret",
    "scrub",
]


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
