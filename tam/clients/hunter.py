"""Hunter email finder: the most likely address of a person at a domain.

Wire facts (hunter.io/api-documentation/v2): the key goes in ``X-API-KEY`` (or ``api_key``);
errors are ``{"errors": [{"id", "code", "details"}]}``. Hunter inverts the usual statuses:
**403 is the rate limit** (retry later) and **429 the exhausted monthly quota** (stop).

"No email from Hunter" has three spellings, none of which fails the job: a 200 whose
``data.email`` is null (the documented miss, free), a 404 whose error id names the missing
email (``email_not_found``), and 451 — the person claimed their data or opted out, so Hunter
will not process them (raised as `NotFound`, so the waterfall records why). Any other 404 (an
unknown path, e.g. a wrong base URL: no Hunter error body, or a generic ``not_found`` id)
fails every call alike and stays a `SystemicError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict

from tam.clients._base import ProviderClient
from tam.clients._http import body_snippet, retry_after_seconds
from tam.errors import (
    AuthFailed,
    InvalidRequest,
    NotFound,
    OutOfCredits,
    ProviderError,
    RateLimited,
    SystemicError,
    Unavailable,
)
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "hunter"
# NOTE: Starter plan list price ($49 / 2,000 credits); override with the account's price.
DEFAULT_CREDIT_PRICE_USD = PROVIDERS[PROVIDER].prices["hunter_credit_usd"]
# Error ids of a 404 that is a miss for this person, not an unknown route.
MISS_ERROR_IDS = frozenset({"email_not_found", "person_not_found", "no_email_found"})


class HunterEmail(BaseModel):
    """A found address with Hunter's confidence and its own verification status."""

    email: str
    score: int | None = None
    verification_status: str | None = None  # valid | accept_all | unknown | ...
    verification_date: str | None = None
    position: str | None = None
    linkedin_url: str | None = None
    accept_all: bool | None = None


class _Verification(BaseModel):
    date: str | None = None
    status: str | None = None


class _FinderData(BaseModel):
    model_config = ConfigDict(extra="allow")

    email: str | None = None
    score: int | None = None
    position: str | None = None
    linkedin_url: str | None = None
    accept_all: bool | None = None
    verification: _Verification | None = None


class _FinderAnswer(BaseModel):
    data: _FinderData


class _ErrorItem(BaseModel):
    id: str | None = None
    code: int | None = None
    details: str | None = None


class _ErrorAnswer(BaseModel):
    errors: list[_ErrorItem]


class HunterClient(ProviderClient):
    """Hunter's email finder. The key goes in a header, out of URLs (which end up in logs
    and tracebacks)."""

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
        super().__init__(
            api_key=api_key, base_url=base_url, timeout=timeout, http_client=http_client
        )
        self.credit_price_usd = credit_price_usd

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:
        return {"credit_price_usd": block.prices["hunter_credit_usd"]}

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-API-KEY": api_key}, {}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """Hunter's inverted 403/429, and its 404 misses (an answer: no email)."""
        if response.status_code == 200 or (response.status_code == 404 and _is_miss(response)):
            return None
        return _error(response)

    async def find_email(
        self, *, domain: str, first_name: str, last_name: str
    ) -> HunterEmail | None:
        """The person's most likely address at `domain`, or None when Hunter has none."""
        if not (domain.strip() and first_name.strip() and last_name.strip()):
            raise ValueError("find_email needs a domain, a first name and a last name")
        params = {
            "domain": domain.strip(),
            "first_name": first_name.strip(),
            "last_name": last_name.strip(),
        }
        response = await self._request("GET", "/v2/email-finder", params=params)
        if response.status_code == 404:
            return None  # a miss (see `map_status`): nothing for this person, nothing billed
        answer = self._http.parse(_FinderAnswer, self._http.json(response))
        data = answer.data
        if not data.email:
            return None
        self._charge(1, self.credit_price_usd)
        verification = data.verification or _Verification()
        return HunterEmail(
            email=data.email,
            score=data.score,
            verification_status=verification.status,
            verification_date=verification.date,
            position=data.position,
            linkedin_url=data.linkedin_url,
            accept_all=data.accept_all,
        )


def _error(response: httpx.Response) -> ProviderError:
    """Hunter's status (and error id) → the error tree."""
    status = response.status_code
    detail = _details(response)
    kwargs: dict[str, Any] = {"provider": PROVIDER, "status_code": status}
    if status == 401:
        return AuthFailed(detail, **kwargs)
    if status == 403:
        return RateLimited(detail, retry_after=retry_after_seconds(response.headers), **kwargs)
    if status in (402, 429):
        return OutOfCredits(f"usage limit reached: {detail}", **kwargs)
    if status == 404:
        # Not a miss (see `_is_miss`): an unknown path, so a wrong base URL fails every call.
        return SystemicError(f"endpoint not found: {detail}", **kwargs)
    if status == 451:
        return NotFound(f"the person asked Hunter not to process their data: {detail}", **kwargs)
    if status in (408, 409, 425) or status >= 500 or 200 <= status < 300:
        # 2xx other than 200 (202/222) are "try again later" answers on Hunter's side.
        return Unavailable(detail, retry_after=retry_after_seconds(response.headers), **kwargs)
    return InvalidRequest(detail, **kwargs)


def _error_ids(response: httpx.Response) -> set[str]:
    try:
        parsed = _ErrorAnswer.model_validate(response.json())
    except ValueError:
        return set()
    return {e.id.lower() for e in parsed.errors if e.id}


def _is_miss(response: httpx.Response) -> bool:
    """A 404 in Hunter's error envelope that names the missing email, not the path."""
    return bool(_error_ids(response) & MISS_ERROR_IDS)


def _details(response: httpx.Response) -> str:
    try:
        parsed = _ErrorAnswer.model_validate(response.json())
    except ValueError:
        return body_snippet(response) or response.reason_phrase
    parts = [f"{e.id}: {e.details}" if e.id else str(e.details) for e in parsed.errors]
    return "; ".join(parts) or response.reason_phrase
