"""NeverBounce single check: is this mailbox real?

Wire facts (developers.neverbounce.com): ``GET /v4/single/check?key=&email=``; API errors
come back as **HTTP 200** with ``status`` ≠ ``success`` and a ``message``: ``auth_failure``,
``bad_referrer`` (configuration), ``throttle_triggered``, ``temp_unavail`` (retry),
``general_failure`` (the message says why; an empty balance is one). HTTP 4xx/5xx also occur.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from tam.clients._base import ProviderClient
from tam.clients._http import map_status_unknown_path_systemic, retry_after_seconds
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Unavailable,
)
from tam.providers import PROVIDERS
from tam.secrets import MASK

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "neverbounce"
# NOTE: pay-as-you-go list price ($8 / 1,000 verifications); override with the real price.
DEFAULT_CREDIT_PRICE_USD = PROVIDERS[PROVIDER].prices["neverbounce_check_usd"]

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


class NeverBounceClient(ProviderClient):
    """NeverBounce's single check.

    The key travels as the ``key`` query parameter (the API's documented way) and is scrubbed
    from every error message.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
        credit_price_usd: float = DEFAULT_CREDIT_PRICE_USD,
    ) -> None:
        self._key = api_key
        super().__init__(
            api_key=api_key, base_url=base_url, timeout=timeout, http_client=http_client
        )
        self.credit_price_usd = credit_price_usd

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:
        return {"credit_price_usd": block.prices["neverbounce_check_usd"]}

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"key": api_key}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """API errors come as HTTP 200 with a ``status`` other than ``success``."""
        if response.status_code != 200:
            return map_status_unknown_path_systemic(PROVIDER, response)
        try:
            status = self._http.parse(_Status, self._http.json(response))
        except ProviderError as exc:
            return exc
        return None if status.status == "success" else _api_error(status, response)

    async def verify(self, email: str) -> VerifyResult:
        """valid | invalid | disposable | catchall | unknown."""
        return (await self.check(email)).result

    async def check(self, email: str) -> SingleCheck:
        """The full single-check answer (flags, suggested correction)."""
        if not email or "@" not in email:
            raise ValueError("verify needs an email address")
        try:
            response = await self._request(
                "GET", "/v4/single/check", params={"email": email.strip()}
            )
            result = self._http.parse(SingleCheck, self._http.json(response))
        except ProviderError as exc:
            raise self._scrubbed(exc) from None
        self._charge(1, self.credit_price_usd)
        return result

    def _scrubbed(self, exc: ProviderError) -> ProviderError:
        # NOTE: the registry skips keys shorter than MIN_SECRET_LENGTH; this one travels in
        # the URL, which an error may quote, so it is hidden whatever its length.
        if self._key and self._key in exc.message:
            exc.message = exc.message.replace(self._key, MASK)
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
