"""Shared plumbing for the httpx-based provider clients: one status → error mapping."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    NotFound,
    OutOfCredits,
    ProviderError,
    RateLimited,
    SystemicError,
    Unavailable,
)
from tam.secrets import install_log_filter, register_secret

M = TypeVar("M", bound=BaseModel)
# A client's one status → error hook: None when the answer is one to read.
StatusCheck = Callable[[httpx.Response], "ProviderError | None"]


# httpx for our clients, httpx2 for the anthropic SDK.
install_log_filter("httpx", "httpx2")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the backoff default is good enough


_HTML_START = re.compile(r"^\s*(<!doctype html|<html|<head|<body)", re.I)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_HTML_NOISE = re.compile(r"<(script|style)[^>]*>.*?</\1>|<[^>]+>", re.I | re.S)


def tidy_text(text: str, limit: int = 200) -> str:
    """One line of an error body for a message; an HTML page becomes its title (a proxy's
    "502 Bad Gateway", a login page), not its markup."""
    if _HTML_START.match(text):
        title = _HTML_TITLE.search(text)
        text = "HTML page: " + (title.group(1) if title else _HTML_NOISE.sub(" ", text))
    return " ".join(text.split())[:limit]


def body_snippet(response: httpx.Response, limit: int = 200) -> str:
    """A short, single-line excerpt of an error body (HTML pages included)."""
    text = response.text if response.content else ""
    return tidy_text(text, limit)


def map_status(
    provider: str, response: httpx.Response, message: str | None = None
) -> ProviderError:
    """Default HTTP status → error class; clients refine it with their provider's codes."""
    status = response.status_code
    text = message or body_snippet(response) or response.reason_phrase
    kwargs: dict[str, Any] = {"provider": provider, "status_code": status}
    if status == 429:
        return RateLimited(text, retry_after=retry_after_seconds(response.headers), **kwargs)
    if status in (401, 403):
        return AuthFailed(text, **kwargs)
    if status == 402:
        return OutOfCredits(text, **kwargs)
    if status == 404:
        return NotFound(text, **kwargs)
    if status in (408, 409, 425) or status >= 500:
        return Unavailable(text, retry_after=retry_after_seconds(response.headers), **kwargs)
    return InvalidRequest(text, **kwargs)


def check_status(provider: str, response: httpx.Response) -> ProviderError | None:
    """The default hook: a 200 is the answer; anything else goes through `map_status`."""
    return None if response.status_code == 200 else map_status(provider, response)


def map_status_unknown_path_systemic(provider: str, response: httpx.Response) -> ProviderError:
    """`map_status`, except that a 404 is a wrong base URL or API path (for APIs that never
    answer 404 for a missing record): every call would fail alike, so fail the job."""
    if response.status_code == 404:
        return SystemicError(
            f"endpoint not found: {response.request.url.path}", provider=provider, status_code=404
        )
    return map_status(provider, response)


class ProviderHTTP:
    """An httpx.AsyncClient for one provider, raising the `tam.errors` tree.

    Keys go in headers or params set by the concrete client and are never put in messages.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        max_connections: int = 50,
        http_client: httpx.AsyncClient | None = None,
        secret: str | None = None,
    ) -> None:
        self.provider = provider
        register_secret(secret)
        self._params = dict(params or {})
        self._client = http_client or httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers or {}),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # NOTE: a proxy from the environment must never see provider keys in transit.
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        check: StatusCheck | None = None,
    ) -> httpx.Response:
        """Send; transport failures → Unavailable; the answer goes through `check` (the
        client's status → error hook; default `check_status`), which raises what it returns."""
        merged: list[tuple[str, Any]] = list(self._params.items())
        if isinstance(params, Mapping):
            merged.extend(params.items())
        elif params:
            merged.extend(params)
        failure: ProviderError | None = None
        try:
            response = await self._client.request(
                method, path, params=merged or None, json=json_body, headers=headers
            )
        except httpx.TimeoutException:
            failure = Unavailable("request timed out", provider=self.provider)
        except httpx.TransportError as exc:
            failure = Unavailable(
                f"connection failed: {type(exc).__name__}", provider=self.provider
            )
        if failure is not None:
            # NOTE: raised outside the `except`, so the httpx error (whose request URL may
            # hold a key) does not ride along as this error's __context__.
            raise failure
        error = check(response) if check else check_status(self.provider, response)
        if error is not None:
            raise error
        return response

    def json(self, response: httpx.Response) -> Any:
        """The body as JSON; an HTML error page or truncated body → BadResponse."""
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadResponse(
                f"expected JSON, got {response.headers.get('content-type', '?')}: "
                f"{body_snippet(response, 80)}",
                provider=self.provider,
                status_code=response.status_code,
            ) from None

    def parse(self, model: type[M], data: Any) -> M:
        """Validate into `model`; a schema mismatch → BadResponse naming the field."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadResponse(
                f"unexpected answer shape at {where}: {first['msg']}", provider=self.provider
            ) from None
