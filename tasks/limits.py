"""Which limiter a task uses for a provider account."""

from __future__ import annotations

from tam.limiters import AccountLimiter, limiter_for
from tam.settings import Settings


def account_limiter(provider: str, settings: Settings) -> AccountLimiter:
    """The shared limiter for this provider account in this process."""
    return limiter_for(provider, settings.limit_for(provider))
