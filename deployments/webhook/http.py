"""HTTP plumbing of the webhook: the error shape, request ids and the body size guard."""

from __future__ import annotations

import hmac
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.webhook.audit import audit_refused
from tam.failures import redact
from tam.settings import Settings
from tam.stores.base import StoreError

logger = logging.getLogger("tam.webhook")

# The real body is three UUIDs and a word; 64 KB leaves room and bounds what we parse.
MAX_BODY_BYTES = 64 * 1024
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LOCATIONS = ("body", "path", "query", "header")


class ApiError(Exception):
    """An error answer: status code and a message safe to show the caller."""

    def __init__(self, status_code: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field


class BodyTooLarge(StarletteHTTPException):
    """Raised from inside `receive`; an HTTPException so FastAPI passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than {limit} bytes")


def error_response(
    status_code: int, message: str, *, field: str | None = None, request_id: str | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    if request_id is not None:
        body["requestId"] = request_id
    return JSONResponse(body, status_code=status_code)


def request_id(request: Request) -> str:
    state = request.scope.get("state") or {}
    return str(state.get("request_id") or uuid4().hex)


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """`<field>: <what is wrong>` for the first error, and the field's name."""
    errors = list(exc.errors())
    if not errors:
        return "Invalid request", None
    first = errors[0]
    where = [str(part) for part in first.get("loc", ()) if str(part) not in _LOCATIONS]
    field = ".".join(where) or None
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return "body: not valid JSON", "body"
    message = str(first.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if field is None:
        return f"body: {message}", "body"
    return f"{field}: {message}", field


class RequestGuard:
    """Pure ASGI middleware: a request id on every answer; 413 for an oversized body before
    any of it is parsed (by Content-Length, or while a chunked body streams in); and the
    catch-all 500, answered and logged here with secrets redacted.

    NOTE: the catch-all lives here rather than in an `Exception` handler because Starlette
    re-raises after such a handler, and the server would then log the raw exception text.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_REQUEST_ID.match(given) else uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append("x-request-id", rid)
            await send(message)

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(send_with_id)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge:
            if not started:
                await self._too_large(send_with_id)
        except Exception as exc:  # noqa: BLE001 - the one place that turns any error into a 500
            trace = "".join(traceback.format_exception(exc))
            logger.error(
                "Unhandled error in %s %s [request %s]\n%s",
                scope.get("method"),
                scope.get("path"),
                rid,
                redact(trace, self.secrets()),
            )
            if not started:
                await self._send_json(
                    send_with_id, 500, {"error": "Internal error", "requestId": rid}
                )

    async def _too_large(self, send: Send) -> None:
        error = f"Request body larger than {self.max_body_bytes} bytes"
        await self._send_json(send, 413, {"error": error})

    @staticmethod
    async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so response timing tells nothing about the key."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    assert settings.service_api_key is not None
    service_key = settings.service_api_key.get_secret_value()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status_code == 401:
            audit_refused(request)
        # NOTE: the Edge Function writes a failed dispatch's answer into the job row, which
        # the app shows its user: a reason quoting a URL or a key must not carry it there.
        message = redact(exc.message, settings.secret_values())
        return error_response(exc.status_code, message, field=exc.field)

    @app.exception_handler(StoreError)
    async def _database(request: Request, exc: StoreError) -> JSONResponse:
        rid = request_id(request)
        # StoreError messages carry no password (redacted at the source); still log only.
        logger.error(
            "Database error [request %s]: %s", rid, redact(str(exc), settings.secret_values())
        )
        return error_response(503, "Database unavailable", request_id=rid)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # NOTE: FastAPI answers a body it cannot decode (bad UTF-8, say) with a 400 before
        # any dependency runs; an anonymous caller learns nothing but 401 from the API.
        # Only the size guard (413) speaks first, as it must not read the body.
        if (
            exc.status_code != 413
            and request.url.path.startswith("/api/")
            and not key_matches(service_key, request.headers.get("x-api-key"))
        ):
            audit_refused(request)
            return error_response(401, "Unauthorized")
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # NOTE: FastAPI parses the body before dependencies run; a caller without the key
        # must learn nothing from body errors, so the key is checked first here too.
        if request.url.path.startswith("/api/") and not key_matches(
            service_key, request.headers.get("x-api-key")
        ):
            audit_refused(request)
            return error_response(401, "Unauthorized")
        message, field = validation_message(exc)
        return error_response(400, message, field=field)


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, minus the 422 it documents by default: this API answers 400."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema
