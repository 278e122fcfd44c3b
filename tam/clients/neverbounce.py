"""NeverBounce single check: is this mailbox real?

Wire facts (developers.neverbounce.com): ``GET /v4/single/check?key=&email=``; API errors
come back as **HTTP 200** with ``status`` ≠ ``success`` and a ``message``: ``auth_failure``,
``bad_referrer`` (configuration), ``throttle_triggered``, ``temp_unavail`` (retry),
``general_failure`` (the message says why; an empty balance is one). HTTP 4xx/5xx also occur.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from tam.clients._http import (
    ProviderHTTP,
    map_status_unknown_path_systemic,
    retry_after_seconds,
)
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Unavailable,
)
from tam.models import Usage

PROVIDER = "neverbounce"
# NOTE: pay-as-you-go list price ($8 / 1,000 verifications); override with the real price.
DEFAULT_CREDIT_PRICE_USD = 0.008

VerifyResult = Literal["valid", "invalid", "disposable", "catchall", "unknown"]
_CREDIT_WORDS = ("credit", "balance")


class SingleCheck(BaseModel):
    """A successful single check."""

    model_config = ConfigDict(extra="allow")

    status: Literal["success"]
    result: VerifyResult
    flags: list[str] = []
    suggested_correction: str | None = None
    execution_time: int | None = None


class _Status(BaseModel):
    status: str
    message: str | None = None


class NeverBounceClient:
    """NeverBounce's single check. One call per method; retries live in `tam.clients._retry`.

    The key travels as the ``key`` query parameter (the API's documented way) and is scrubbed
    from every error message.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.neverbounce.com",
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
        credit_price_usd: float = DEFAULT_CREDIT_PRICE_USD,
    ) -> None:
        self._key = api_key
        self._http = ProviderHTTP(
            secret=api_key,
            provider=PROVIDER,
            base_url=base_url,
            params={"key": api_key},
            timeout=timeout,
            http_client=http_client,
        )
        self.credit_price_usd = credit_price_usd
        self.usage = Usage.zero(PROVIDER)
        self.calls = 0

    async def close(self) -> None:
        await self._http.close()

    async def verify(self, email: str) -> VerifyResult:
        """valid | invalid | disposable | catchall | unknown."""
        return (await self.check(email)).result

    async def check(self, email: str) -> SingleCheck:
        """The full single-check answer (flags, suggested correction)."""
        if not email or "@" not in email:
            raise ValueError("verify needs an email address")
        self.calls += 1
        try:
            response = await self._http.request(
                "GET",
                "/v4/single/check",
                params={"email": email.strip()},
                ok=tuple(range(200, 600)),
            )
            if response.status_code != 200:
                raise map_status_unknown_path_systemic(PROVIDER, response)
            data = self._http.json(response)
            status = self._http.parse(_Status, data)
            if status.status != "success":
                raise _api_error(status, response)
            result = self._http.parse(SingleCheck, data)
        except ProviderError as exc:
            raise self._scrubbed(exc) from None
        self.usage.credits += 1
        self.usage.cost_usd += self.credit_price_usd
        return result

    def _scrubbed(self, exc: ProviderError) -> ProviderError:
        if self._key and self._key in exc.message:
            exc.message = exc.message.replace(self._key, "***")
            exc.args = (exc.message,)
        return exc


def _api_error(answer: _Status, response: httpx.Response) -> ProviderError:
    message = f"{answer.status}: {answer.message or 'no message'}"
    kwargs: dict[str, Any] = {"provider": PROVIDER, "status_code": response.status_code}
    if answer.status in ("auth_failure", "bad_referrer"):
        return AuthFailed(message, **kwargs)
    if answer.status == "throttle_triggered":
        # NeverBounce sends no Retry-After; honour one if a proxy adds it.
        return RateLimited(message, retry_after=retry_after_seconds(response.headers), **kwargs)
    if answer.status == "temp_unavail":
        return Unavailable(message, **kwargs)
    if answer.status == "general_failure":
        lowered = (answer.message or "").lower()
        if any(word in lowered for word in _CREDIT_WORDS):
            return OutOfCredits(message, **kwargs)
        return InvalidRequest(message, **kwargs)
    return BadResponse(f"unknown status {message}", **kwargs)
