"""Prospeo emulator: ``POST /search-person`` and ``POST /enrich-person``, real wire format.

Facts it follows (prospeo.io/api-docs): key in ``X-KEY``; every answer carries ``error``;
HTTP 400 for request-level failures (``NO_RESULTS``, ``NO_MATCH``, ``INVALID_FILTERS``,
``INVALID_DATAPOINTS``, ``INSUFFICIENT_CREDITS``), 401 ``INVALID_API_KEY``, 429
``RATE_LIMITED``; 25 results a page, at most 1,000 pages; a search page costs a credit only
when it returns someone; an enrichment costs a credit per match, nothing for a miss and
nothing for a person this account enriched before (``free_enrichment``).

People and emails come from :class:`~tam.emulators.world.World`: a person whose
``email_outcome`` is ``prospeo_verified`` has a VERIFIED email here, nobody else does.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.domains import normalize_domain
from tam.emulators.base import Call, Endpoint, ErrorReason, ProviderEmulator, register_provider
from tam.emulators.world import COUNTRY_NAMES, SENIORITIES

PER_PAGE = 25
MAX_PAGES = 1000
MAX_WEBSITES = 500
# Prospeo sits behind a proxy whose error page has a heading.
_BAD_GATEWAY_PAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"

_CODES = {
    ErrorReason.auth: (401, "INVALID_API_KEY"),
    ErrorReason.out_of_credits: (400, "INSUFFICIENT_CREDITS"),
    ErrorReason.rate_limited: (429, "RATE_LIMITED"),
    ErrorReason.permission: (403, "ACCOUNT_RESTRICTED"),
    ErrorReason.bad_request: (400, "INVALID_REQUEST"),
}


def _fail(code: str, status: int = 400, filter_error: str | None = None) -> Response:
    body: dict[str, Any] = {"error": True, "error_code": code}
    if filter_error:
        body["filter_error"] = filter_error
    return JSONResponse(body, status_code=status)


def _include(filters: dict[str, Any], *path: str) -> tuple[list[str], list[str]]:
    """(include, exclude) values of a nested include/exclude filter; malformed → ValueError."""
    node: Any = filters
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        return [], []
    if not isinstance(node, dict):
        raise ValueError(f"{'.'.join(path)} must be an object with include/exclude lists")
    lists = []
    for side in ("include", "exclude"):
        values = node.get(side) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{'.'.join(path)}.{side} must be a list of strings")
        lists.append(values)
    return lists[0], lists[1]


def location_matches(wanted: str, location: dict[str, Any]) -> bool:
    """Prospeo location strings: "United States #US", "Austin, TX, United States #US", "US"."""
    text, _, code = wanted.partition("#")
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    if code.strip() and code.strip().upper() != location["country_code"]:
        return False
    names = {str(location[k]).lower() for k in ("country", "country_code")}
    places = {str(location[k]).lower() for k in ("city", "state")}
    if not parts:
        return bool(code.strip())
    if len(parts) == 1:
        return parts[0] in names | places
    return parts[0] in places and (parts[-1] in names | places)


def _search_key(call: Call) -> str | None:
    if not isinstance(call.body, dict):
        return None
    canonical = json.dumps(call.body.get("filters"), sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return f"p{call.body.get('page', 1)}:{digest}"


def _enrich_key(call: Call) -> str | None:
    data = call.body.get("data") if isinstance(call.body, dict) else None
    if not isinstance(data, dict):
        return None
    if data.get("linkedin_url"):
        return str(data["linkedin_url"]).strip().rstrip("/").lower()
    name = data.get("full_name") or f"{data.get('first_name', '')} {data.get('last_name', '')}"
    return f"{' '.join(str(name).lower().split())}@{data.get('company_website', '')}"


@register_provider
class ProspeoEmulator(ProviderEmulator):
    name = "prospeo"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._enriched: set[str] = set()

    def reset(self, *, knobs: bool = False) -> None:
        super().reset(knobs=knobs)
        self._enriched.clear()

    def api_key(self, request: Request) -> str | None:
        return (request.headers.get("x-key") or "").strip() or None

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        status, code = _CODES.get(reason, (status, "INTERNAL_ERROR"))
        if reason == ErrorReason.not_found:
            return JSONResponse({"error": True, "error_code": "NOT_FOUND", "message": message}, 404)
        return _fail(code, status)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "/search-person", self.search_person, name="search_person", item_key=_search_key
            ),
            Endpoint(
                "/enrich-person", self.enrich_person, name="enrich_person", item_key=_enrich_key
            ),
        ]

    # --- search ----------------------------------------------------------------------------
    async def search_person(self, call: Call) -> Response:
        body = call.body
        if not isinstance(body, dict):
            return _fail("INVALID_REQUEST")
        page = body.get("page", 1)
        if not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= MAX_PAGES:
            return _fail("INVALID_REQUEST", filter_error=f"page must be 1..{MAX_PAGES}")
        filters = body.get("filters")
        if not isinstance(filters, dict) or not filters:
            return _fail("INVALID_FILTERS", filter_error="filters: at least one filter required")
        try:
            websites, _ = _include(filters, "company", "websites")
            seniorities, not_seniorities = _include(filters, "person_seniority")
            locations, not_locations = _include(filters, "person_location_search")
        except ValueError as exc:
            return _fail("INVALID_FILTERS", filter_error=str(exc))
        if len(websites) > MAX_WEBSITES:
            return _fail(
                "INVALID_FILTERS",
                filter_error=(
                    f"company.websites.include: at most {MAX_WEBSITES} values "
                    f"({len(websites)} sent)"
                ),
            )
        known = set(SENIORITIES)
        unknown = sorted(set(seniorities + not_seniorities) - known)
        if unknown:
            return _fail("INVALID_FILTERS", filter_error=f"person_seniority: unknown {unknown}")
        if not websites:
            # NOTE: the real API searches its whole database; the emulator's world is only
            # enumerable per company, and this product always filters by websites.
            return _fail("INVALID_FILTERS", filter_error="emulator: company.websites required")
        per_company = filters.get("max_person_per_company")
        matches: list[tuple[dict[str, Any], dict[str, Any]]] = []
        seen: set[str] = set()
        for website in websites:
            domain = normalize_domain(website)
            if domain is None or domain in seen:
                continue
            seen.add(domain)
            company = self.world.company_for(domain)
            taken = 0
            for person in self.world.people(domain):
                if seniorities and person["seniority"] not in seniorities:
                    continue
                if person["seniority"] in not_seniorities:
                    continue
                where = person["location"]
                if locations and not any(location_matches(w, where) for w in locations):
                    continue
                if any(location_matches(w, where) for w in not_locations):
                    continue
                if isinstance(per_company, int) and taken >= per_company:
                    break
                taken += 1
                matches.append((person, company))
        total_pages = math.ceil(len(matches) / PER_PAGE)
        if page > total_pages:
            return _fail("NO_RESULTS")
        self.counters.bump("credits")
        chunk = matches[(page - 1) * PER_PAGE : page * PER_PAGE]
        results = [
            {"person": _person_json(person, company), "company": _company_json(company)}
            for person, company in chunk
        ]
        if call.malformed:
            return self._malformed(results)
        return JSONResponse(
            {
                "error": False,
                "results": results,
                "pagination": {
                    "current_page": page,
                    "per_page": PER_PAGE,
                    "total_page": total_pages,
                    "total_count": len(matches),
                },
            }
        )

    # --- enrich ----------------------------------------------------------------------------
    async def enrich_person(self, call: Call) -> Response:
        body = call.body
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _fail("INVALID_DATAPOINTS")
        assert isinstance(body, dict)
        only_verified = bool(body.get("only_verified_email", False))
        person = self._resolve(data)
        if person is None:
            return _fail("NO_MATCH") if self._enough(data) else _fail("INVALID_DATAPOINTS")
        domain = person["domain"]
        verified = self.world.email_outcome(domain, person) == "prospeo_verified"
        if only_verified and not verified:
            return _fail("NO_MATCH")
        free = person["person_id"] in self._enriched
        self._enriched.add(person["person_id"])
        if not free:
            self.counters.bump("credits")
        record = _person_json(person, self.world.company_for(domain))
        if verified:
            record["email"] = {
                "status": "VERIFIED",
                "revealed": True,
                "email": person["email"],
                "verification_method": "SMTP",
                "email_mx_provider": "Google",
            }
        else:
            record["email"] = {"status": "UNVERIFIED", "revealed": False, "email": None}
        record["mobile"] = {"status": None, "revealed": False}
        if call.malformed:
            return self._malformed([record])
        return JSONResponse(
            {
                "error": False,
                "free_enrichment": free,
                "person": record,
                "company": _company_json(self.world.company_for(domain)),
            }
        )

    def _resolve(self, data: dict[str, Any]) -> dict[str, Any] | None:
        url = data.get("linkedin_url")
        if isinstance(url, str) and "/in/" in url:
            return self.world.person_by_linkedin(url)
        first, last = data.get("first_name"), data.get("last_name")
        if not (first and last) and isinstance(data.get("full_name"), str):
            first, _, last = data["full_name"].strip().partition(" ")
        domain = normalize_domain(str(data.get("company_website") or ""))
        if not (isinstance(first, str) and isinstance(last, str) and domain):
            return None
        return self.world.find_person(domain, first, last)

    @staticmethod
    def _enough(data: dict[str, Any]) -> bool:
        named = bool(data.get("full_name") or (data.get("first_name") and data.get("last_name")))
        company = any(
            data.get(k) for k in ("company_website", "company_name", "company_linkedin_url")
        )
        return bool(
            data.get("linkedin_url")
            or data.get("email")
            or data.get("person_id")
            or (named and company)
        )

    def _malformed(self, results: list[dict[str, Any]]) -> Response:
        return self.malformed_answer(
            {"error": False, "results": results},
            {
                "error": False,
                "results": "none",
                "person": {"first_name": 42},
                "pagination": {"total_page": "many"},
            },
            html=_BAD_GATEWAY_PAGE,
        )


def _person_json(person: dict[str, Any], company: dict[str, Any]) -> dict[str, Any]:
    location = person["location"]
    return {
        "person_id": person["person_id"],
        "first_name": person["first_name"],
        "last_name": person["last_name"],
        "full_name": person["full_name"],
        "linkedin_url": person["linkedin_url"],
        "current_job_title": person["title"],
        "current_job_key": None,
        "headline": f"{person['title']} at {company['name']}",
        "linkedin_member_id": None,
        "last_job_change_detected_at": None,
        "job_history": [
            {
                "title": person["title"],
                "company_name": company["name"],
                "current": True,
                "start_year": 2019 + int(person["person_id"][:2], 16) % 6,
                "start_month": 1,
                "end_year": None,
                "end_month": None,
                "departments": [],
                "seniority": person["seniority"],
            }
        ],
        "location": {
            "country": location["country"],
            "country_code": location["country_code"],
            "state": location["state"],
            "city": location["city"],
        },
        "skills": [],
    }


def _company_json(company: dict[str, Any]) -> dict[str, Any]:
    domain = company["domain"]
    return {
        "company_id": hashlib.sha256(f"company|{domain}".encode()).hexdigest()[:24],
        "name": company["name"],
        "website": f"https://{domain}",
        "domain": domain,
        "other_websites": [],
        "description": company["description"],
        "industry": company["industry"],
        "employee_count": company["employees"],
        "employee_range": company["employee_count"],
        "location": {
            "country": COUNTRY_NAMES.get(company["country"], company["country"]),
            "country_code": company["country"],
            "state": company["state"],
            "city": company["city"],
        },
        "linkedin_url": company.get("linkedin_url"),
        "sic_codes": [],
        "naics_codes": [],
        "keywords": [],
    }
