"""Hunter emulator: ``GET /v2/email-finder``, real wire format.

Facts it follows (hunter.io/api-documentation/v2): the key comes as the ``api_key`` query
parameter, the ``X-API-KEY`` header or a bearer token; answers are ``{"data", "meta"}``;
errors are ``{"errors": [{"id", "code", "details"}]}`` with 401 for a bad key, **403 for the
rate limit** and **429 for the exhausted monthly quota** (inverted from most APIs); a miss
is a 200 whose ``data.email`` is null and costs nothing (knob ``miss_status=404``: a 404 whose
error id is ``email_not_found``, as some accounts see); a person who claimed their data or
opted out answers 451 (knob ``claimed_rate``); an unknown path is a 404 ``not_found``.

So the framework's knobs keep their meaning: an injected or rate-cap 429 ("slow down")
answers Hunter's 403, and ``out_of_credits`` answers Hunter's 429.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.domains import normalize_domain
from tam.emulators.base import Call, Endpoint, ErrorReason, ProviderEmulator, register_provider
from tam.emulators.knobs import Knobs

_ERRORS = {
    ErrorReason.auth: (401, "authentication_failed", "No user found for the API key supplied"),
    ErrorReason.out_of_credits: (
        429,
        "too_many_requests",
        "You have reached your monthly quota of requests. Upgrade your plan to continue.",
    ),
    ErrorReason.rate_limited: (403, "too_many_requests", "You have reached the rate limit."),
    ErrorReason.permission: (403, "too_many_requests", "You have reached the rate limit."),
    ErrorReason.bad_request: (400, "wrong_params", "Your request was not valid."),
    ErrorReason.not_found: (404, "not_found", "The requested resource couldn't be found."),
}
_CLAIMED = (
    "The person behind this email address asked us directly or indirectly to stop the "
    "processing of their personal data. For this reason, you shouldn't process it yourself."
)
_SCORES = {"valid": (90, 99), "accept_all": (60, 80), "unknown": (40, 70)}


def _errors(status: int, error_id: str, details: str) -> Response:
    body = {"errors": [{"id": error_id, "code": status, "details": details}]}
    return JSONResponse(body, status_code=status)


def _finder_key(call: Call) -> str | None:
    q = call.request.query_params
    domain = normalize_domain(q.get("domain") or "") or q.get("company") or ""
    name = q.get("full_name") or f"{q.get('first_name', '')} {q.get('last_name', '')}"
    return f"{' '.join(name.lower().split())}@{domain.lower()}"


class HunterKnobs(Knobs):
    # How a miss is answered: 200 with data.email null, or 404 ``email_not_found``.
    miss_status: Literal[200, 404] = 200
    # Share of the world's people who claimed their data (answered 451, never an email).
    claimed_rate: float = Field(default=0.0, ge=0, le=1)


@register_provider
class HunterEmulator(ProviderEmulator):
    name = "hunter"
    knobs_model = HunterKnobs
    # Hunter refuses bursts with its rate-limit answer.
    concurrency_status = 403

    def api_key(self, request: Request) -> str | None:
        key = request.query_params.get("api_key") or request.headers.get("x-api-key")
        return key.strip() or None if key else super().api_key(request)

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        if reason in _ERRORS:
            return _errors(*_ERRORS[reason])
        return _errors(status, "server_error", f"Something went wrong on Hunter's end ({message}).")

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "/v2/email-finder",
                self.email_finder,
                ("GET",),
                name="email_finder",
                item_key=_finder_key,
            )
        ]

    async def email_finder(self, call: Call) -> Response:
        q = call.request.query_params
        domain = normalize_domain(q.get("domain") or "")
        first, last = q.get("first_name") or "", q.get("last_name") or ""
        if not (first and last) and q.get("full_name"):
            first, _, last = q["full_name"].strip().partition(" ")
        if domain is None:
            return _errors(400, "wrong_params", "You are missing the domain parameter")
        if not (first.strip() and last.strip()):
            return _errors(
                400,
                "wrong_params",
                "You are missing the first_name and last_name or full_name parameter",
            )
        knobs = self.knobs
        assert isinstance(knobs, HunterKnobs)
        person = self.world.find_person(domain, first, last)
        claimed_key = f"{first.strip().lower()} {last.strip().lower()}"
        if self.world.unit(domain, "hunter_claimed", claimed_key) < knobs.claimed_rate:
            self.counters.bump("claimed")
            return _errors(451, "claimed_email", _CLAIMED)
        status = self.world.hunter_status(domain, person) if person else None
        if status is None and knobs.miss_status == 404:
            self.counters.bump("misses")
            return _errors(404, "email_not_found", "No email address was found for this person.")
        data: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "email": None,
            "score": None,
            "domain": domain,
            "accept_all": None,
            "position": None,
            "twitter": None,
            "linkedin_url": None,
            "phone_number": None,
            "company": self.world.company_for(domain)["name"],
            "sources": [],
            "verification": {"date": None, "status": None},
        }
        if person is not None and status is not None:
            self.counters.bump("credits")
            low, high = _SCORES[status]
            unit = self.world.unit(domain, "hunter_score", person["linkedin_url"])
            data.update(
                email=person["email"],
                score=low + int(unit * (high - low + 1)),
                accept_all=status == "accept_all",
                position=person["title"],
                linkedin_url=person["linkedin_url"],
                verification={"date": date.today().isoformat(), "status": status},
                sources=[
                    {
                        "domain": domain,
                        "uri": f"https://{domain}/team",
                        "extracted_on": "2025-01-15",
                        "last_seen_on": "2025-06-01",
                        "still_on_page": True,
                    }
                ],
            )
        body = {
            "data": data,
            "meta": {
                "params": {
                    "first_name": q.get("first_name"),
                    "last_name": q.get("last_name"),
                    "full_name": q.get("full_name"),
                    "domain": q.get("domain"),
                    "company": q.get("company"),
                    "max_duration": q.get("max_duration"),
                }
            },
        }
        if call.malformed:
            return self.malformed_answer(
                body, {"data": {"email": ["not", "a", "string"], "score": "high"}}
            )
        return JSONResponse(body)
