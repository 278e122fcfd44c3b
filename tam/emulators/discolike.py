"""Discolike discover API emulator (``GET /v1/discover``), real wire format.

The answer is a BARE JSON array of company profiles with an ``X-Total-Count`` header. Look-alikes
are the world's companies sharing the seeds' industries (and/or words of ``icp_text``), filtered
by country, digital footprint and employee range, ranked by similarity. Like the real API,
the seeds themselves come back first (as stored, e.g. ``HTTPS://WWW.SEED.COM/``) unless the
query says ``include_search_domains=false``. Errors are FastAPI-style ``{"detail": ...}`` bodies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.emulators.base import (
    Call,
    EmulatedError,
    Endpoint,
    ErrorReason,
    ProviderEmulator,
    register_provider,
)
from tam.emulators.knobs import Knobs
from tam.emulators.world import World

# World industry → (Discolike category, secondary category).
CATEGORIES: dict[str, tuple[str, str]] = {
    "SaaS": ("SAAS", "SOFTWARE"),
    "Software Development": ("SOFTWARE", "IT_SERVICES"),
    "Fintech": ("FINANCIAL_SERVICES", "SAAS"),
    "Manufacturing": ("MANUFACTURING", "ENGINEERING"),
    "Retail": ("RETAIL", "E-COMMERCE"),
    "Hospital & Health Care": ("HEALTHCARE", "WELLNESS_AND_LIFESTYLE"),
    "Construction": ("CONSTRUCTION", "REAL_ESTATE"),
    "Logistics": ("SUPPLY_CHAIN_AND_PROCUREMENT", "BUSINESS_PRODUCTS_AND_SERVICES"),
    "Restaurants": ("RESTAURANTS", "FOOD_AND_BEVERAGE"),
    "Real Estate": ("REAL_ESTATE", "BUSINESS_PRODUCTS_AND_SERVICES"),
    "Legal Services": ("LEGAL", "BUSINESS_PRODUCTS_AND_SERVICES"),
}
MAX_SEED_DOMAINS = 10
DEFAULT_MAX_RECORDS = 100
FOOTPRINT_SCALE = 8  # the world scores 0..100; Discolike's digital footprint runs 0..800
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = set(
    "and the for with that our who are companies company businesses business teams team from "
    "into their sell sells".split()
)
_MESSAGES = {
    ErrorReason.auth: "Invalid or missing API key",
    ErrorReason.permission: "Your plan does not include this endpoint",
    ErrorReason.out_of_credits: "Monthly spend limit reached: insufficient credits",
    ErrorReason.rate_limited: "Rate limit exceeded",
    ErrorReason.server_error: "Internal Server Error",
    ErrorReason.unavailable: "Service Unavailable",
}


class DiscolikeKnobs(Knobs):
    # The universe look-alikes are drawn from (a prefix of the world's companies).
    pool_size: int = Field(default=5000, ge=10, le=10_000)
    # Share of results followed by a second record for the same company under a `www.` /
    # upper-case domain variant (the client must dedup by normalized domain).
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    # Whether the seeds come back as results: "auto" as the real API (unless the query sends
    # include_search_domains=false), "always" as an API that ignores the flag, or "never".
    echo_seeds: Literal["auto", "always", "never"] = "auto"
    # How an echoed seed's domain is spelled: "url" as BizData stores some (scheme, www,
    # upper case, trailing slash), "plain" as the query gave it.
    seed_echo_style: Literal["url", "plain"] = "url"


def discolike_record(company: Mapping[str, Any], *, world: World) -> dict[str, Any]:
    """A world company as Discolike's BizData profile (without similarity)."""
    domain = str(company["domain"])
    primary, secondary = CATEGORIES.get(
        str(company["industry"]), ("BUSINESS_PRODUCTS_AND_SERVICES", "CONSULTING")
    )
    weight = round(0.6 + 0.35 * world.unit(domain, "discolike_weight"), 2)
    start_year = 1995 + int(28 * world.unit(domain, "discolike_start"))
    return {
        "domain": domain,
        "name": company["name"],
        "status": {"status": "active", "confidence": 1.0},
        "score": int(company["digital_footprint_score"]) * FOOTPRINT_SCALE,
        "start_date": f"{start_year}-0{1 + int(9 * world.unit(domain, 'month'))}-15",
        "address": {
            "city": company["city"],
            "state": company["state"],
            "country": company["country"],
        },
        "description": company["description"],
        "industry_groups": {primary: weight, secondary: round(1 - weight, 2)},
        "employees": company["employee_count"],
        "social_urls": [company["linkedin_url"]] if company.get("linkedin_url") else [],
    }


@register_provider
class DiscolikeEmulator(ProviderEmulator):
    name = "discolike"
    knobs_model = DiscolikeKnobs

    def __init__(self, world: World, knobs: Mapping[str, Any] | None = None) -> None:
        super().__init__(world, knobs)
        self._pool: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def api_key(self, request: Request) -> str | None:
        key = request.headers.get("x-discolike-key")
        return key.strip() if key else None

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("/v1/discover", self.discover, ("GET",), name="discover", item_key=_seed_key)
        ]

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        return JSONResponse({"detail": _MESSAGES.get(reason, message)}, status_code=status)

    def pool(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(world company, Discolike record) for every company look-alikes come from."""
        size = self._knobs.pool_size
        if len(self._pool) != size:
            self._pool = [
                (c, discolike_record(c, world=self.world)) for c in self.world.companies(size)
            ]
        return self._pool

    @property
    def _knobs(self) -> DiscolikeKnobs:
        return self.typed_knobs(DiscolikeKnobs)

    async def discover(self, call: Call) -> Response:
        query = _Query.parse(call.request)
        ranked = self._ranked(query)
        total = len(ranked)
        page = ranked[query.offset : query.offset + query.max_records]
        records = self._with_duplicates(page)
        self.counters.bump("records_returned", len(records))
        headers = {"X-Total-Count": str(total)}
        if call.malformed:
            # The shape the old implementation wrongly expected: never the real one.
            return JSONResponse({"results": records, "total": total}, headers=headers)
        return JSONResponse(records, headers=headers)

    def _ranked(self, query: _Query) -> list[dict[str, Any]]:
        seeds = [self.world.company_for(d) for d in query.domains]
        seed_domains = {s["domain"] for s in seeds}
        seed_industries = [str(s["industry"]) for s in seeds]
        words = _words(query.icp_text)
        echoed = self._echoed_seeds(query, seeds)
        scored: list[tuple[int, str, dict[str, Any]]] = []
        for company, record in self.pool():
            domain = str(company["domain"])
            if domain in query.excluded or domain in seed_domains:
                continue
            if not query.accepts(company, record):
                continue
            similarity = self._similarity(company, seed_industries, words, query)
            if similarity is None:
                continue
            scored.append((similarity, domain, {**record, "similarity": similarity}))
        scored.sort(key=lambda row: (-row[0], row[1]))
        return echoed + [row[2] for row in scored]

    def _echoed_seeds(self, query: _Query, seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The seeds as results of their own search, most similar of all (no filters: the
        API answers for what it was asked about)."""
        mode = self._knobs.echo_seeds
        if mode == "never" or (mode == "auto" and not query.include_seeds):
            return []
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for seed in seeds:
            domain = str(seed["domain"])
            if domain in seen or domain in query.excluded:
                continue
            seen.add(domain)
            record = {**discolike_record(seed, world=self.world), "similarity": 100}
            if self._knobs.seed_echo_style == "url":
                record["domain"] = f"HTTPS://WWW.{domain.upper()}/"
            out.append(record)
        self.counters.bump("seeds_echoed", len(out))
        return out

    def _similarity(
        self,
        company: Mapping[str, Any],
        seed_industries: list[str],
        words: set[str],
        query: _Query,
    ) -> int | None:
        domain = str(company["domain"])
        noise = self.world.unit(query.vector_key, domain, "discolike_similarity")
        share = (
            seed_industries.count(str(company["industry"])) / len(seed_industries)
            if seed_industries
            else 0.0
        )
        text = " ".join(str(company[k]) for k in ("name", "industry", "description")).lower()
        hits = len(words & set(_WORD.findall(text))) / len(words) if words else 0.0
        if seed_industries or words:
            if share == 0 and hits == 0:
                return None
            return min(99, round(35 + 40 * share + 20 * hits + 9 * noise))
        return round(20 * noise)  # filters only: no search vector to be similar to

    def _with_duplicates(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rate = self._knobs.duplicate_rate
        if rate <= 0:
            return records
        out: list[dict[str, Any]] = []
        for record in records:
            out.append(record)
            if self.world.unit(record["domain"], "discolike_duplicate") < rate:
                out.append(
                    {
                        **record,
                        "domain": "www." + record["domain"].upper(),
                        "similarity": max(0, record["similarity"] - 1),
                    }
                )
        return out


class _Query:
    """The discover query string, validated the way the real API validates it (422)."""

    def __init__(self) -> None:
        self.domains: list[str] = []
        self.excluded: set[str] = set()
        self.countries: set[str] = set()
        self.icp_text = ""
        self.max_records = DEFAULT_MAX_RECORDS
        self.offset = 0
        self.min_footprint: int | None = None
        self.max_footprint: int | None = None
        self.employee_range: tuple[int, int] | None = None
        self.include_seeds = True

    @property
    def vector_key(self) -> str:
        return "|".join(sorted(self.domains)) + "#" + self.icp_text.lower()

    @classmethod
    def parse(cls, request: Request) -> _Query:
        params = request.query_params
        query = cls()
        query.domains = [_domain(d) for d in _multi(params, "domain")]
        if len(query.domains) > MAX_SEED_DOMAINS:
            raise EmulatedError(422, f"domain: at most {MAX_SEED_DOMAINS} domains")
        query.excluded = {
            _domain(d) for d in _multi(params, "exclude_domain") + _multi(params, "negate_domain")
        }
        query.countries = {c.upper() for c in _multi(params, "country")}
        query.icp_text = (params.get("icp_text") or params.get("nl_match") or "").strip()
        query.max_records = _int(params, "max_records", DEFAULT_MAX_RECORDS, 1, 10_000)
        query.offset = _int(params, "offset", 0, 0, 1_000_000)
        query.min_footprint = _opt_int(params, "min_digital_footprint", "min_score")
        query.max_footprint = _opt_int(params, "max_digital_footprint", "max_score")
        # NOTE: the real API includes the searched domains unless told not to.
        query.include_seeds = params.get("include_search_domains", "").strip().lower() not in (
            "0",
            "false",
        )
        raw_range = params.get("employee_range")
        if raw_range:
            low, _, high = raw_range.replace("-", ",").partition(",")
            try:
                query.employee_range = (int(low), int(high) if high.strip() else 10**9)
            except ValueError:
                raise EmulatedError(422, "employee_range: expected 'min,max'") from None
        return query

    def accepts(self, company: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        if self.countries and str(company["country"]) not in self.countries:
            return False
        score = int(record["score"])
        if self.min_footprint is not None and score < self.min_footprint:
            return False
        if self.max_footprint is not None and score > self.max_footprint:
            return False
        if self.employee_range is not None:
            low, _, high = str(company["employee_count"]).partition("-")
            bucket_low, bucket_high = int(low), int(high or 10**9)
            # Buckets inside the range count, as "50,500" selects 51-200 and 201-500.
            if bucket_low < self.employee_range[0] or bucket_high > self.employee_range[1]:
                return False
        return True


def _seed_key(call: Call) -> str | None:
    domains = sorted(_domain(d) for d in _multi(call.request.query_params, "domain"))
    return ",".join(domains) or None


def _multi(params: Any, name: str) -> list[str]:
    values: list[str] = []
    for raw in params.getlist(name):
        values.extend(part.strip() for part in str(raw).split(",") if part.strip())
    return values


def _domain(value: str) -> str:
    text = value.strip().lower()
    text = re.sub(r"^[a-z]+://", "", text).split("/", 1)[0]
    return text[4:] if text.startswith("www.") else text


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EmulatedError(422, f"{name}: Input should be a valid integer") from None
    if not low <= value <= high:
        raise EmulatedError(422, f"{name}: must be between {low} and {high}")
    return value


def _opt_int(params: Any, name: str, legacy: str) -> int | None:
    if params.get(name) not in (None, ""):
        return _int(params, name, 0, 0, 1000)
    if params.get(legacy) not in (None, ""):
        return _int(params, legacy, 0, 0, 1000)
    return None


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}
