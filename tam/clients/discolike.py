"""Discolike look-alikes: ``GET /v1/discover`` answers a BARE JSON array (not ``results``).

The API includes the searched domains themselves unless asked not to (and spells them as
stored, e.g. ``HTTPS://WWW.SEED.COM/``): every query sends ``include_search_domains=false``
and still drops any result whose normalized domain is one of its seeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from tam.clients._base import ProviderClient
from tam.clients._http import map_status
from tam.domains import normalize_domain
from tam.errors import BadResponse, InvalidRequest, OutOfCredits, ProviderError
from tam.models import NewCompany, Usage
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "discolike"
MAX_SEED_DOMAINS = 10  # the API's limit on `domain` values per query
# Starter-plan list prices (the table's); override per account.
DEFAULT_PRICE_PER_QUERY_USD = PROVIDERS[PROVIDER].prices["discolike_query_usd"]
DEFAULT_PRICE_PER_RECORD_USD = PROVIDERS[PROVIDER].prices["discolike_record_usd"]
_CREDIT_WORDS = ("credit", "spend", "balance", "billing", "payment")
_RANGE = re.compile(r"^\s*(\d[\d,]*)\s*(?:-|–|to|,)\s*(\d[\d,]*)\s*$")
_OPEN_RANGE = re.compile(r"^\s*(\d[\d,]*)\s*\+\s*$")
_ACRONYMS = {"SAAS": "SaaS", "IT": "IT", "HR": "HR", "AI": "AI"}


class DiscolikeAddress(BaseModel):
    model_config = ConfigDict(extra="allow")

    city: str | None = None
    state: str | None = None
    country: str | None = None


class DiscolikeCompany(BaseModel):
    """One BizData profile of a discover answer (unknown fields are kept)."""

    model_config = ConfigDict(extra="allow")

    domain: str = Field(min_length=1)
    name: str | None = None
    score: float | None = None  # digital footprint, 0..800
    similarity: float | None = None
    employees: str | None = None  # a bucket such as "51-200"
    address: DiscolikeAddress | None = None
    description: str | None = None
    industry_groups: dict[str, float] = Field(default_factory=dict)

    @field_validator("employees", mode="before")
    @classmethod
    def _count_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("industry_groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, list):  # a plain list of names: equal weights, in order
            return {str(name): 1.0 - index / 100 for index, name in enumerate(value)}
        return value

    @property
    def top_industry(self) -> str | None:
        if not self.industry_groups:
            return None
        return max(self.industry_groups.items(), key=lambda item: item[1])[0]

    @property
    def location(self) -> str | None:
        if self.address is None:
            return None
        parts = [self.address.city, self.address.state, self.address.country]
        return ", ".join(p for p in parts if p) or None


class DiscoverPage(BaseModel):
    """One discover answer: the companies (deduplicated), the total match count, the cost."""

    companies: list[DiscolikeCompany]
    total_count: int | None = None
    usage: Usage
    seeds_dropped: int = 0  # results that were the query's own seed domains


_COMPANIES = TypeAdapter(list[DiscolikeCompany])


def industry_label(category: str | None) -> str | None:
    """``FINANCIAL_SERVICES`` → ``Financial Services``; ``SAAS`` → ``SaaS``."""
    if not category:
        return None
    words = re.split(r"[_\s]+", category.strip())
    return " ".join(_ACRONYMS.get(w.upper(), w.capitalize()) for w in words if w) or None


def employee_range_param(ranges: Sequence[str] | None) -> str | None:
    """ICP size buckets (``11-50``, ``51-200``, ``10001+``) → one ``min,max`` span."""
    lows: list[int] = []
    highs: list[int] = []
    for raw in ranges or []:
        if match := _RANGE.match(raw):
            lows.append(int(match.group(1).replace(",", "")))
            highs.append(int(match.group(2).replace(",", "")))
        elif match := _OPEN_RANGE.match(raw):
            lows.append(int(match.group(1).replace(",", "")))
            highs.append(1_000_000)
    if not lows:
        return None
    return f"{min(lows)},{max(highs)}"


def to_new_company(project_id: UUID, item: DiscolikeCompany) -> NewCompany:
    """A discover result as a pending company of the project."""
    domain = normalize_domain(item.domain)
    return NewCompany(
        project_id=project_id,
        name=item.name or domain or item.domain,
        domain=domain,
        source=PROVIDER,
        industry=industry_label(item.top_industry),
        employee_count=item.employees,
        location=item.location,
        description=item.description,
        digital_footprint_score=item.score,
        similarity_score=item.similarity,
        raw_data=item.model_dump(mode="json", exclude_none=True),
    )


class DiscolikeClient(ProviderClient):
    """Look-alike discovery by seed domains and ICP text. Raises the `tam.errors` tree.

    Discolike bills per query plus per record returned; `usage` sums both.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        price_per_query_usd: float = DEFAULT_PRICE_PER_QUERY_USD,
        price_per_record_usd: float = DEFAULT_PRICE_PER_RECORD_USD,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key, base_url=base_url, timeout=timeout, http_client=http_client
        )
        self.price_per_query_usd = price_per_query_usd
        self.price_per_record_usd = price_per_record_usd

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:
        return {
            "price_per_query_usd": block.prices["discolike_query_usd"],
            "price_per_record_usd": block.prices["discolike_record_usd"],
        }

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"x-discolike-key": api_key}, {}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """FastAPI's ``detail`` as the message; credit words mean out of credits."""
        return None if response.status_code == 200 else _error(response)

    async def discover(
        self,
        *,
        domains: Sequence[str],
        country: str | Sequence[str] | None = None,
        max_records: int = 200,
        min_digital_footprint: int | None = None,
        icp_text: str | None = None,
        employee_ranges: Sequence[str] | None = None,
        exclude_domains: Sequence[str] | None = None,
        offset: int | None = None,
    ) -> list[DiscolikeCompany]:
        """Look-alikes of `domains` (and/or `icp_text`), one per normalized domain."""
        page = await self.discover_page(
            domains=domains,
            country=country,
            max_records=max_records,
            min_digital_footprint=min_digital_footprint,
            icp_text=icp_text,
            employee_ranges=employee_ranges,
            exclude_domains=exclude_domains,
            offset=offset,
        )
        return page.companies

    async def discover_page(
        self,
        *,
        domains: Sequence[str],
        country: str | Sequence[str] | None = None,
        max_records: int = 200,
        min_digital_footprint: int | None = None,
        icp_text: str | None = None,
        employee_ranges: Sequence[str] | None = None,
        exclude_domains: Sequence[str] | None = None,
        offset: int | None = None,
    ) -> DiscoverPage:
        """Like :meth:`discover`, with ``X-Total-Count`` and the call's cost."""
        params = _params(
            domains,
            country,
            max_records,
            min_digital_footprint,
            icp_text,
            employee_ranges,
            exclude_domains,
            offset,
        )
        response = await self._request("GET", "/v1/discover", params=params)
        data = self._http.json(response)
        if not isinstance(data, list):
            got = (
                f"an object with keys {sorted(data)[:8]}"
                if isinstance(data, dict)
                else type(data).__name__
            )
            raise BadResponse(
                f"expected a bare JSON array of companies, got {got}",
                provider=PROVIDER,
                status_code=response.status_code,
            )
        try:
            items = _COMPANIES.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadResponse(
                f"unexpected company at {where}: {first['msg']}", provider=PROVIDER
            ) from None
        usage = Usage(
            provider=PROVIDER,
            credits=len(items),
            cost_usd=round(self.price_per_query_usd + len(items) * self.price_per_record_usd, 6),
        )
        self.usage.credits += usage.credits
        self.usage.cost_usd = round(self.usage.cost_usd + usage.cost_usd, 6)
        seeds = set(_unique_domains(domains))
        companies = _dedup(items)
        kept = [c for c in companies if normalize_domain(c.domain) not in seeds]
        return DiscoverPage(
            companies=kept,
            total_count=_total(response),
            usage=usage,
            seeds_dropped=len(companies) - len(kept),
        )


def _params(
    domains: Sequence[str],
    country: str | Sequence[str] | None,
    max_records: int,
    min_digital_footprint: int | None,
    icp_text: str | None,
    employee_ranges: Sequence[str] | None,
    exclude_domains: Sequence[str] | None,
    offset: int | None,
) -> list[tuple[str, str]]:
    seeds = _unique_domains(domains)
    if len(seeds) > MAX_SEED_DOMAINS:
        raise InvalidRequest(
            f"at most {MAX_SEED_DOMAINS} seed domains per query, got {len(seeds)}",
            provider=PROVIDER,
        )
    params = [("domain", d) for d in seeds]
    if seeds:
        # NOTE: without it the answer starts with the seeds themselves.
        params.append(("include_search_domains", "false"))
    countries = [country] if isinstance(country, str) else list(country or [])
    params += [("country", c.strip().upper()) for c in countries if c and c.strip()]
    params.append(("max_records", str(max_records)))
    if min_digital_footprint is not None:
        params.append(("min_digital_footprint", str(min_digital_footprint)))
    if icp_text and icp_text.strip():
        params.append(("icp_text", icp_text.strip()))
    span = employee_range_param(employee_ranges)
    if span:
        params.append(("employee_range", span))
    params += [("exclude_domain", d) for d in _unique_domains(exclude_domains or [])]
    if offset:
        params.append(("offset", str(offset)))
    return params


def _unique_domains(values: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for raw in values:
        domain = normalize_domain(raw)
        if domain:
            seen.setdefault(domain, None)
    return list(seen)


def _dedup(items: list[DiscolikeCompany]) -> list[DiscolikeCompany]:
    """First (best ranked) record per normalized domain; records without a usable domain go."""
    seen: set[str] = set()
    kept = []
    for item in items:
        domain = normalize_domain(item.domain)
        if domain and domain not in seen:
            seen.add(domain)
            kept.append(item)
    return kept


def _total(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["x-total-count"])
    except (KeyError, ValueError):
        return None


def _error(response: httpx.Response) -> ProviderError:
    """Status → error class, with the FastAPI ``detail`` as the message."""
    detail = _detail(response)
    exc = map_status(PROVIDER, response, detail)
    if response.status_code in (400, 402, 403) and any(
        w in (detail or "").lower() for w in _CREDIT_WORDS
    ):
        return OutOfCredits(exc.message, provider=PROVIDER, status_code=response.status_code)
    return exc


def _detail(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None  # an HTML error page: map_status quotes the body instead
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # pydantic validation errors: "loc: msg; ..."
        return "; ".join(
            f"{'.'.join(str(x) for x in item.get('loc', []))}: {item.get('msg', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return None
