"""Anthropic Messages API emulator (``POST /v1/messages``), real wire format.

The "model" judges a company by a fixed rule (see :func:`expected_verdict`), so tests and
benchmarks can predict every answer. It reads the company from the JSON object the user
message holds and the ICP's industry keywords from the system prompt only, as the real
prompt declares; a prompt without a JSON company falls back to labelled lines.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

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
from tam.emulators.knobs import Knobs, unit_hash

# The labels the qualifier's prompt carries, one field per line.
COMPANY_LABELS = {
    "name": "Company name",
    "domain": "Domain",
    "description": "Description",
    "industry": "Industry",
    "employee_count": "Employee count",
    "location": "Location",
}
KEYWORDS_LABEL = "Industry keywords"
VERDICTS = ("qualified", "disqualified", "needs_review")
DEFAULT_RATE_LIMIT = 4000  # what the headers report when no requests_per_interval is set

_CREDITS_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
_ERROR_TYPES = {
    ErrorReason.bad_request: "invalid_request_error",
    ErrorReason.out_of_credits: "invalid_request_error",
    ErrorReason.auth: "authentication_error",
    ErrorReason.permission: "permission_error",
    ErrorReason.not_found: "not_found_error",
    ErrorReason.rate_limited: "rate_limit_error",
    ErrorReason.server_error: "api_error",
    ErrorReason.unavailable: "api_error",
    ErrorReason.overloaded: "overloaded_error",
}
_MESSAGES = {
    ErrorReason.auth: "invalid x-api-key",
    ErrorReason.out_of_credits: _CREDITS_MESSAGE,
    ErrorReason.rate_limited: "This request would exceed the rate limit for your organization "
    "of requests per minute. Please retry after the time given in the retry-after header.",
    ErrorReason.overloaded: "Overloaded",
    ErrorReason.server_error: "Internal server error",
}
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _field(text: str, label: str) -> str | None:
    # First occurrence wins: the company block comes before anything the data could add.
    match = re.search(rf"^[ \t>*-]*{re.escape(label)}[ \t]*:[ \t]*(.*)$", text, re.M | re.I)
    return match.group(1).strip() if match else None


def company_json(text: str) -> dict[str, Any] | None:
    """The company object of a user message: the whole text, or its first line that is a
    JSON object naming a domain or a name."""
    candidates = [text.strip(), *(line.strip() for line in text.splitlines())]
    for candidate in candidates:
        if not candidate.startswith("{"):
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and ("domain" in value or "name" in value):
            return value
    return None


def parse_prompt(text: str, system: str | None = None) -> dict[str, Any]:
    """The company fields and the ICP keywords of a qualify prompt.

    With a JSON company, the keywords come from `system` (or, for one combined text, from
    its labelled lines, which a one-line JSON object cannot contain).
    """
    company = company_json(text)
    if company is not None:
        fields: dict[str, Any] = {
            key: None if company.get(key) is None else str(company[key]) for key in COMPANY_LABELS
        }
        icp_text = system if system is not None else text
    else:
        labelled = text if system is None else f"{text}\n{system}"
        fields = {key: _field(labelled, label) for key, label in COMPANY_LABELS.items()}
        icp_text = labelled
    raw_keywords = _field(icp_text, KEYWORDS_LABEL) or ""
    fields["keywords"] = [k.strip() for k in raw_keywords.split(",") if k.strip()]
    return fields


def needs_review_bucket(domain: str, seed: int) -> int:
    """0..99 for `domain`; below ``needs_review_pct`` the model asks for a human."""
    digest = hashlib.sha256(f"{domain.strip().lower()}{seed}".encode()).hexdigest()
    return int(digest, 16) % 100


def judge(
    text: str, *, seed: int, needs_review_pct: int, system: str | None = None
) -> tuple[str, str]:
    """(verdict, reason) for a qualify prompt. Only the company's fields and the ICP's
    keywords count, so instructions hidden in a description change nothing."""
    fields = parse_prompt(text, system)
    domain = fields["domain"] or ""
    if needs_review_bucket(domain, seed) < needs_review_pct:
        return "needs_review", "Not enough information to judge"
    keywords: list[str] = fields["keywords"]
    if not keywords:
        # An ICP without industry keywords constrains nothing this rule can check.
        return "qualified", "The ICP names no industry keywords; nothing rules this company out"
    for keyword in keywords:
        for key in ("name", "description", "industry"):
            value = fields[key] or ""
            if keyword.lower() in value.lower():
                return "qualified", f"Matches ICP industry keyword '{keyword}' in its {key}"
    listed = ", ".join(keywords)
    return "disqualified", f"None of the ICP industry keywords ({listed}) fit this company"


def expected_verdict(text: str, *, seed: int, needs_review_pct: int) -> str:
    """The verdict the emulator gives for a prompt with this text (system + user text)."""
    return judge(text, seed=seed, needs_review_pct=needs_review_pct)[0]


def request_text(body: dict[str, Any]) -> tuple[str, str]:
    """(user-side text, system text) of a Messages request body."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(_content_text(message.get("content")))
    return "\n".join(parts), _content_text(body.get("system"))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


def _item_key(call: Call) -> str | None:
    if not isinstance(call.body, dict):
        return None
    user_text = request_text(call.body)[0]
    company = company_json(user_text)
    if company is not None:
        domain = company.get("domain")
        domain = str(domain) if domain else None
    else:
        domain = _field(user_text, COMPANY_LABELS["domain"])
    return domain.lower() if domain else None


class AnthropicKnobs(Knobs):
    needs_review_pct: int = Field(default=5, ge=0, le=100)
    # Appended to every reason: a real model echoes what it read, scraped control
    # characters (NUL) included, and the store must survive that.
    reason_suffix: str = ""


@register_provider
class AnthropicEmulator(ProviderEmulator):
    name = "anthropic"
    knobs_model = AnthropicKnobs

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("/v1/messages", self.messages, name="messages", item_key=_item_key),
            Endpoint("/v1/messages/count_tokens", self.count_tokens, name="count_tokens"),
        ]

    def api_key(self, request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key:
            return key.strip()
        return super().api_key(request)

    def check_request(self, call: Call) -> Response | None:
        version = call.request.headers.get("anthropic-version")
        if not version:
            return self.error_response(
                400, ErrorReason.bad_request, "anthropic-version: header is required"
            )
        if not _VERSION.match(version):
            return self.error_response(
                400, ErrorReason.bad_request, f"anthropic-version: invalid version {version!r}"
            )
        return None

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        if reason == ErrorReason.out_of_credits:
            status = 400  # Anthropic reports an empty balance as a bad request
        body = {
            "type": "error",
            "error": {
                "type": _ERROR_TYPES.get(reason, "api_error"),
                "message": _MESSAGES.get(reason, message),
            },
        }
        return JSONResponse(body, status_code=status)

    def response_headers(self, call: Call) -> dict[str, str]:
        knobs = self.knobs
        limit = knobs.requests_per_interval or DEFAULT_RATE_LIMIT
        used = self.window.used(knobs.interval_s, time.monotonic())
        reset = datetime.now(UTC) + timedelta(seconds=knobs.interval_s)
        return {
            "request-id": f"req_{call.request_id}",
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(max(0, limit - used)),
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def stats_extra(self) -> dict[str, Any]:
        extra = self.counters.extra
        return {
            "input_tokens": int(extra.get("input_tokens", 0)),
            "output_tokens": int(extra.get("output_tokens", 0)),
        }

    # --- endpoints -----------------------------------------------------------------------
    async def count_tokens(self, call: Call) -> Response:
        body = _validated(call.body, need_max_tokens=False)
        return JSONResponse({"input_tokens": _input_tokens(body)})

    async def messages(self, call: Call) -> Response:
        body = _validated(call.body, need_max_tokens=True)
        if body.get("stream"):
            raise EmulatedError(400, "stream: the emulator does not stream; send stream=false")
        knobs = self.knobs
        assert isinstance(knobs, AnthropicKnobs)
        user_text, system_text = request_text(body)
        verdict, reason = judge(
            user_text, system=system_text, seed=knobs.seed, needs_review_pct=knobs.needs_review_pct
        )
        key = call.item_key or ""
        confidence = {"qualified": 0.7, "disqualified": 0.7, "needs_review": 0.2}[verdict]
        answer = {
            "verdict": verdict,
            "reason": reason + knobs.reason_suffix,
            "confidence": round(confidence + 0.25 * unit_hash("confidence", knobs.seed, key), 2),
        }
        tool = _forced_tool(body)
        if call.malformed:
            block = self._malformed_block(tool, answer)
        elif tool is not None:
            block = {"type": "tool_use", "id": _tool_id(call), "name": tool, "input": answer}
        else:
            block = {"type": "text", "text": json.dumps(answer)}
        input_tokens = _input_tokens(body)
        output_tokens = 40 + int(41 * unit_hash("output", knobs.seed, key, call.request_id))
        self.counters.bump("input_tokens", input_tokens)
        self.counters.bump("output_tokens", output_tokens)
        return JSONResponse(
            {
                "id": f"msg_{call.request_id}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [block],
                "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        )

    def _malformed_block(self, tool: str | None, answer: dict[str, Any]) -> dict[str, Any]:
        rng = self.faults.content_rng
        choice = rng.choice(["no_verdict", "maybe", "prose"] if tool else ["maybe", "prose"])
        if choice == "prose":
            text = "I think this company could be a reasonable fit, but it is hard to say."
            return {"type": "text", "text": text}
        bad = {k: v for k, v in answer.items() if k != "verdict"}
        if choice == "maybe":
            bad["verdict"] = "maybe"
        if tool is None:
            return {"type": "text", "text": json.dumps(bad)}
        return {
            "type": "tool_use",
            "id": f"toolu_{rng.getrandbits(96):024x}",
            "name": tool,
            "input": bad,
        }


def _validated(body: Any, *, need_max_tokens: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EmulatedError(400, "There was an error parsing the body: expected a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise EmulatedError(400, "model: Field required")
    if need_max_tokens and (not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1):
        raise EmulatedError(400, "max_tokens: Field required (a positive integer)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EmulatedError(400, "messages: Field required (at least one message)")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise EmulatedError(
                400, f"messages.{index}.role: Input should be 'user' or 'assistant'"
            )
    return body


def _forced_tool(body: dict[str, Any]) -> str | None:
    """The tool the answer must call, or None for a text answer."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice") or {}
    names = [t["name"] for t in tools]
    if choice.get("type") == "tool":
        if choice.get("name") not in names:
            raise EmulatedError(400, f"tool_choice.name: no tool named {choice.get('name')!r}")
        return str(choice["name"])
    if choice.get("type") == "none" or not names:
        return None
    # "auto"/"any": a model given one verdict tool uses it.
    return str(names[0])


def _input_tokens(body: dict[str, Any]) -> int:
    user_text, system_text = request_text(body)
    tools = json.dumps(body.get("tools") or [])
    return max(1, (len(user_text) + len(system_text) + len(tools)) // 4)


def _tool_id(call: Call) -> str:
    return f"toolu_{call.request_id}"
