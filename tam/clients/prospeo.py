"""Prospeo: person search (who works where) and person enrichment (their verified email).

Wire facts (prospeo.io/api-docs): ``X-KEY`` header, POST only, every answer carries
``error``; 400 with an ``error_code`` for request failures, 401 ``INVALID_API_KEY``, 429
``RATE_LIMITED``. ``NO_RESULTS`` (search) and ``NO_MATCH`` (enrich) are answers, not errors.
A search page costs 1 credit when it returns someone; an enrichment 1 credit per match, none
for a miss or for a person this account enriched before (``free_enrichment``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from tam.clients._base import ProviderClient
from tam.clients._http import map_status, map_status_unknown_path_systemic, retry_after_seconds
from tam.errors import (
    AuthFailed,
    InvalidRequest,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Unavailable,
)
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "prospeo"
PER_PAGE = 25
MAX_WEBSITES = 500
# NOTE: Starter plan list price ($39 / 1,000 credits); override with the account's real price.
DEFAULT_CREDIT_PRICE_USD = PROVIDERS[PROVIDER].prices["prospeo_credit_usd"]

ICP_TO_PROSPEO_SENIORITY = {
    "C-Suite": "C-Suite",
    "VP": "Vice President",
    "Director": "Director",
    "Manager": "Manager",
    "Founder": "Founder/Owner",
}
# Prospeo's location filter takes "<Country name> #<ISO code>"; the ICP stores ISO codes.
_COUNTRY_NAMES = {
    "US": "United States",
    "GB": "United Kingdom",
    "UK": "United Kingdom",
    "CA": "Canada",
    "AU": "Australia",
    "DE": "Germany",
    "FR": "France",
    "NL": "Netherlands",
    "IE": "Ireland",
    "ES": "Spain",
    "IT": "Italy",
    "SE": "Sweden",
    "DK": "Denmark",
    "NO": "Norway",
    "FI": "Finland",
    "CH": "Switzerland",
    "AT": "Austria",
    "BE": "Belgium",
    "PT": "Portugal",
    "PL": "Poland",
    "IN": "India",
    "SG": "Singapore",
    "JP": "Japan",
    "BR": "Brazil",
    "MX": "Mexico",
    "NZ": "New Zealand",
    "IL": "Israel",
    "AE": "United Arab Emirates",
    "ZA": "South Africa",
}
# Error codes that are answers: nobody matched.
_ANSWER_CODES = {"NO_RESULTS", "NO_MATCH"}
_RATE_LIMIT_CODES = {"RATE_LIMITED", "RATE_LIMIT_EXCEEDED"}
_SYSTEMIC_CODES = {
    "INVALID_API_KEY": AuthFailed,
    "ACCOUNT_RESTRICTED": AuthFailed,
    "INSUFFICIENT_CREDITS": OutOfCredits,
}


def prospeo_seniorities(icp_seniorities: list[str]) -> list[str]:
    """ICP seniority names → Prospeo's (unknown names are dropped, order kept, no repeats)."""
    mapped = (ICP_TO_PROSPEO_SENIORITY.get(s) for s in icp_seniorities)
    return list(dict.fromkeys(m for m in mapped if m))


def prospeo_locations(countries: list[str]) -> list[str]:
    """ISO country codes → Prospeo location filter values ("United States #US")."""
    out: list[str] = []
    for raw in countries:
        code = raw.strip().upper()
        name = _COUNTRY_NAMES.get(code)
        out.append(f"{name} #{'GB' if code == 'UK' else code}" if name else raw.strip())
    return list(dict.fromkeys(v for v in out if v))


# --- answer models ------------------------------------------------------------------------
class _Open(BaseModel):
    # Prospeo adds fields over time; keep them (raw_data) without failing on them.
    model_config = ConfigDict(extra="allow")


class ProspeoLocation(_Open):
    country: str | None = None
    country_code: str | None = None
    state: str | None = None
    city: str | None = None


class ProspeoEmail(_Open):
    email: str | None = None
    status: str | None = None
    revealed: bool | None = None


class ProspeoPerson(_Open):
    person_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    linkedin_url: str | None = None
    current_job_title: str | None = None
    headline: str | None = None
    location: ProspeoLocation | None = None
    email: ProspeoEmail | None = None


class ProspeoCompany(_Open):
    company_id: str | None = None
    name: str | None = None
    website: str | None = None
    domain: str | None = None
    industry: str | None = None


class PersonHit(BaseModel):
    person: ProspeoPerson
    company: ProspeoCompany | None = None


class Pagination(BaseModel):
    current_page: int = Field(ge=0)
    per_page: int = Field(ge=0)
    total_page: int = Field(ge=0)
    total_count: int = Field(ge=0)


class PersonSearchPage(BaseModel):
    """One page of search results; an empty page (total_page 0) when nobody matched."""

    results: list[PersonHit]
    pagination: Pagination

    @property
    def has_next(self) -> bool:
        return self.pagination.current_page < self.pagination.total_page

    @classmethod
    def empty(cls, page: int) -> PersonSearchPage:
        return cls(
            results=[],
            pagination=Pagination(
                current_page=page, per_page=PER_PAGE, total_page=0, total_count=0
            ),
        )


class EnrichedPerson(BaseModel):
    """A matched person with a VERIFIED email."""

    person: ProspeoPerson
    company: ProspeoCompany | None = None
    email: str
    free_enrichment: bool = False


class _ErrorBody(BaseModel):
    error: bool
    error_code: str | None = None
    filter_error: str | None = None
    message: str | None = None


class _EnrichBody(BaseModel):
    error: bool
    free_enrichment: bool = False
    person: ProspeoPerson | None = None
    company: ProspeoCompany | None = None


# --- the client ---------------------------------------------------------------------------
class ProspeoClient(ProviderClient):
    """Prospeo's search-person and enrich-person."""

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
        return {"credit_price_usd": block.prices["prospeo_credit_usd"]}

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-KEY": api_key, "Content-Type": "application/json"}, {}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """Prospeo's ``error_code`` bodies; NO_RESULTS and NO_MATCH are answers."""
        if response.status_code >= 500:
            return map_status(PROVIDER, response)
        if response.status_code >= 300:
            try:
                parsed: Any = response.json()
            except ValueError:
                return map_status_unknown_path_systemic(PROVIDER, response)
            # A non-2xx answer is never data: without Prospeo's own error shape it is
            # mapped by its status (a proxy's page, another service's error body).
            if not isinstance(parsed, dict) or parsed.get("error") is not True:
                return map_status_unknown_path_systemic(PROVIDER, response)
            data: Any = parsed
        else:
            try:
                data = self._http.json(response)
            except ProviderError as exc:
                return exc
        if isinstance(data, dict) and data.get("error") is True:
            try:
                problem = self._http.parse(_ErrorBody, data)
            except ProviderError as exc:
                return exc
            if problem.error_code not in _ANSWER_CODES:
                return _code_error(problem, response)
        return None

    async def search_people(
        self,
        websites: list[str],
        *,
        seniorities: list[str] | None = None,
        locations: list[str] | None = None,
        page: int = 1,
    ) -> PersonSearchPage:
        """People at these company websites (≤ 500), filtered by Prospeo seniority names and
        location strings. NO_RESULTS, and a page past the last one, give an empty page."""
        if not websites:
            raise ValueError("search_people needs at least one company website")
        if len(websites) > MAX_WEBSITES:
            raise ValueError(
                f"Prospeo accepts at most {MAX_WEBSITES} websites per search "
                f"({len(websites)} given); split them into several searches"
            )
        if page < 1:
            raise ValueError("page starts at 1")
        filters: dict[str, Any] = {"company": {"websites": {"include": list(websites)}}}
        if seniorities:
            filters["person_seniority"] = {"include": list(seniorities)}
        if locations:
            filters["person_location_search"] = {"include": list(locations)}
        data = await self._post("/search-person", {"page": page, "filters": filters})
        if data is None:
            return PersonSearchPage.empty(page)
        result = self._http.parse(PersonSearchPage, data)
        if result.results:
            self._charge_credits(1)
        return result

    async def enrich_person(
        self,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        company_website: str | None = None,
        linkedin_url: str | None = None,
    ) -> EnrichedPerson | None:
        """The person's VERIFIED email, or None when Prospeo has none (NO_MATCH is free)."""
        fields = {
            "first_name": first_name,
            "last_name": last_name,
            "company_website": company_website,
            "linkedin_url": linkedin_url,
        }
        data_points = {k: v.strip() for k, v in fields.items() if v and v.strip()}
        named = "first_name" in data_points and "last_name" in data_points
        if "linkedin_url" not in data_points and not (named and "company_website" in data_points):
            raise ValueError(
                "enrich_person needs a linkedin_url, or first and last name with a company_website"
            )
        body = {"only_verified_email": True, "enrich_mobile": False, "data": data_points}
        data = await self._post("/enrich-person", body)
        if data is None:
            return None
        answer = self._http.parse(_EnrichBody, data)
        if answer.person is None:
            return None
        if not answer.free_enrichment:
            self._charge_credits(1)
        email = answer.person.email
        if email is None or not email.email or (email.status or "").upper() != "VERIFIED":
            return None  # only a verified email counts as found here
        return EnrichedPerson(
            person=answer.person,
            company=answer.company,
            email=email.email,
            free_enrichment=answer.free_enrichment,
        )

    # --- plumbing --------------------------------------------------------------------------
    def _charge_credits(self, credits: int) -> None:
        self._charge(credits, credits * self.credit_price_usd)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer, or None for NO_RESULTS / NO_MATCH; raises the error tree."""
        response = await self._request("POST", path, json_body=body)
        data = response.json()
        if isinstance(data, dict) and data.get("error") is True:
            return None  # `map_status` let only NO_RESULTS / NO_MATCH through
        return data


def _code_error(problem: _ErrorBody, response: httpx.Response) -> ProviderError:
    code = problem.error_code or "UNKNOWN"
    detail = (
        f"{code}: {problem.filter_error or problem.message}"
        if (problem.filter_error or problem.message)
        else code
    )
    status = response.status_code
    if code in _SYSTEMIC_CODES:
        return _SYSTEMIC_CODES[code](detail, provider=PROVIDER, status_code=status)
    if code in _RATE_LIMIT_CODES or status == 429:
        return RateLimited(
            detail,
            provider=PROVIDER,
            status_code=status,
            retry_after=retry_after_seconds(response.headers),
        )
    if code == "INTERNAL_ERROR":
        return Unavailable(detail, provider=PROVIDER, status_code=status)
    if status in (401, 403):
        return AuthFailed(detail, provider=PROVIDER, status_code=status)
    return InvalidRequest(detail, provider=PROVIDER, status_code=status)
