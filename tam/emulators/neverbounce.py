"""NeverBounce emulator: ``/v4/single/check`` (and ``/v4.2/...``), real wire format.

Facts it follows (developers.neverbounce.com): the key is the ``key`` parameter, sent in
the query string, a urlencoded form or a JSON body; API errors come back as **HTTP 200**
with ``status`` ≠ ``success`` (``auth_failure``, ``general_failure``, ``temp_unavail``,
``throttle_triggered``, ``bad_referrer``) and a ``message``; throttling carries no
Retry-After. Results: ``valid``, ``invalid``, ``disposable``, ``catchall``, ``unknown``.

So the framework's knobs map onto those bodies: a 429 → ``throttle_triggered``, out of
credits → ``general_failure`` with a credits message, 503/529 → ``temp_unavail``, a bad key
→ ``auth_failure``; a plain 5xx stays an HTTP 5xx (an infrastructure failure, not an API one).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.emulators.base import Call, Endpoint, ErrorReason, ProviderEmulator, register_provider

CREDITS_MESSAGE = "Insufficient credit balance"
_DISPOSABLE = {"mailinator.com", "guerrillamail.com", "10minutemail.com", "trashmail.com"}
_FREE_HOSTS = {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com"}
_SYNTAX = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)
_FLAGS = {
    "valid": ["has_dns", "has_dns_mx", "smtp_connectable"],
    "catchall": ["has_dns", "has_dns_mx", "accepts_all"],
    "invalid": ["has_dns", "has_dns_mx"],
    "disposable": ["has_dns", "has_dns_mx", "disposable_email"],
    "unknown": ["has_dns", "has_dns_mx", "free_email_host"],
}
_ERRORS = {
    ErrorReason.auth: ("auth_failure", "Invalid API key"),
    ErrorReason.out_of_credits: ("general_failure", CREDITS_MESSAGE),
    ErrorReason.rate_limited: ("throttle_triggered", "Rate limit reached, try again shortly"),
    ErrorReason.permission: ("bad_referrer", "The referrer for this request is not trusted"),
    ErrorReason.bad_request: ("general_failure", "Bad request"),
    ErrorReason.unavailable: ("temp_unavail", "Service temporarily unavailable"),
    ErrorReason.overloaded: ("temp_unavail", "Service temporarily unavailable"),
}


def request_params(request: Request, body: Any = None) -> dict[str, str]:
    """Parameters from the query string, then a urlencoded form or JSON body (POST)."""
    params = dict(request.query_params)
    if isinstance(body, dict):
        params.update({k: str(v) for k, v in body.items() if v is not None})
        return params
    # NOTE: the framework has already read the body (and starlette cached it); this hook is
    # synchronous, so read the cache rather than await request.form().
    raw = getattr(request, "_body", b"") or b""
    if raw and "form" in request.headers.get("content-type", ""):
        form = parse_qs(raw.decode(errors="replace"))
        params.update({k: v[-1] for k, v in form.items() if v})
    return params


def _check_key(call: Call) -> str | None:
    email = request_params(call.request, call.body).get("email")
    return email.strip().lower() if email else None


@register_provider
class NeverBounceEmulator(ProviderEmulator):
    name = "neverbounce"

    def api_key(self, request: Request) -> str | None:
        raw = getattr(request, "_body", b"") or b""
        body: Any = None
        if raw and "json" in request.headers.get("content-type", ""):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        return (request_params(request, body).get("key") or "").strip() or None

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        if reason in _ERRORS:
            code, text = _ERRORS[reason]
            return JSONResponse({"status": code, "message": text, "execution_time": 12})
        if reason == ErrorReason.not_found:
            return JSONResponse({"status": "general_failure", "message": message}, 404)
        return Response(
            f"<html><body><h1>{status} Server Error</h1></body></html>",
            status,
            media_type="text/html",
        )

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                path, self.single_check, ("GET", "POST"), name="single_check", item_key=_check_key
            )
            for path in ("/v4/single/check", "/v4.2/single/check", "/v4.1/single/check")
        ]

    async def single_check(self, call: Call) -> Response:
        params = request_params(call.request, call.body)
        email = (params.get("email") or "").strip()
        if not email:
            return JSONResponse(
                {
                    "status": "general_failure",
                    "message": "Missing required parameter 'email'",
                    "execution_time": 3,
                }
            )
        result = self.verdict(email)
        self.counters.bump(f"result_{result}")
        self.counters.bump("credits")
        body: dict[str, Any] = {
            "status": "success",
            "result": result,
            "flags": ["bad_syntax"]
            if result == "invalid" and not _SYNTAX.match(email)
            else _FLAGS[result],
            "suggested_correction": "",
            "execution_time": max(1, round(call.latency_s * 1000)),
        }
        if params.get("credits_info") in ("1", "true", "True"):
            body["credits_info"] = {
                "paid_credits_used": 1,
                "free_credits_used": 0,
                "paid_credits_remaining": 100_000,
                "free_credits_remaining": 0,
            }
        if params.get("address_info") in ("1", "true", "True"):
            local, _, host = email.partition("@")
            body["address_info"] = {
                "original_email": email,
                "normalized_email": email.lower(),
                "addr": local,
                "alias": "",
                "host": host,
                "fqdn": host,
                "domain": host.split(".", 1)[0],
                "subdomain": "",
                "tld": host.rsplit(".", 1)[-1],
            }
        if call.malformed:
            return self.malformed_answer(
                body, {"status": "success", "result": "probably", "flags": "none"}
            )
        return JSONResponse(body)

    def verdict(self, email: str) -> str:
        """The result this emulator gives `email` (deterministic, from the world)."""
        if not _SYNTAX.match(email):
            return "invalid"
        host = email.rsplit("@", 1)[1].lower()
        if host in _DISPOSABLE:
            return "disposable"
        if host in _FREE_HOSTS:
            return "unknown"
        for person in self.world.people(host):
            if person["email"] == email.lower():
                return self.world.neverbounce_result(host, person)
        return "invalid"
