"""The provider-emulator framework: fault pipeline, control endpoints, registry, app.

Adding a provider is one module ``tam/emulators/<name>.py`` (name as in
``tam.settings.PROVIDERS``) holding a subclass decorated with :func:`register_provider`::

    @register_provider
    class HunterEmulator(ProviderEmulator):
        name = "hunter"

        def api_key(self, request: Request) -> str | None:
            return request.query_params.get("api_key") or request.headers.get("x-api-key")

        def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
            return JSONResponse({"errors": [{"id": reason.value, "details": message}]}, status)

        def endpoints(self) -> list[Endpoint]:
            return [Endpoint("/v2/email-finder", self.email_finder, ("GET",),
                             item_key=lambda call: call.request.query_params.get("domain"))]

        async def email_finder(self, call: Call) -> Response:
            ...  # from self.world; when call.malformed, answer self.malformed_answer(...)

:func:`build_app` imports ``tam.emulators.<name>`` for every provider name, so the new
module is picked up without touching any other file. Holding (``hold_after``), auth,
credits, rate caps, injected errors, hangs, latency and every counter are handled here,
before the handler runs.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from tam.emulators.knobs import Counters, FaultPlan, Gate, Knobs, RateWindow
from tam.emulators.world import World
from tam.settings import PROVIDERS as PROVIDER_NAMES

# What a proxy in front of a provider answers when the provider behind it is down.
BAD_GATEWAY_HTML = "<html><body>Bad Gateway</body></html>"

_K = TypeVar("_K", bound=Knobs)


class ErrorReason(StrEnum):
    """Why the framework (or a handler) refuses a request; providers map it to their body."""

    bad_request = "bad_request"
    auth = "auth"
    permission = "permission"
    not_found = "not_found"
    out_of_credits = "out_of_credits"
    rate_limited = "rate_limited"
    server_error = "server_error"
    overloaded = "overloaded"
    unavailable = "unavailable"

    @classmethod
    def for_status(cls, status: int) -> ErrorReason:
        return {
            400: cls.bad_request,
            401: cls.auth,
            402: cls.out_of_credits,
            403: cls.permission,
            404: cls.not_found,
            429: cls.rate_limited,
            503: cls.unavailable,
            529: cls.overloaded,
        }.get(status, cls.server_error if status >= 500 else cls.bad_request)


class EmulatedError(Exception):
    """Raised by a handler to answer with the provider's error body (e.g. a 400)."""

    def __init__(self, status: int, message: str, reason: ErrorReason | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or ErrorReason.for_status(status)


@dataclass
class Call:
    """One request as a handler sees it, after the framework let it through."""

    request: Request
    endpoint: str
    body: Any  # parsed JSON, or None when absent / not JSON
    item_key: str | None
    request_id: str
    api_key: str | None = None
    malformed: bool = False
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """A provider route. `item_key` names the item a call is about (None: not per item)."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("POST",)
    name: str | None = None
    item_key: Callable[[Call], str | None] | None = None


class ProviderEmulator:
    """Base class: subclasses set `name`, and implement `endpoints` and `error_response`."""

    name: ClassVar[str]
    knobs_model: ClassVar[type[Knobs]] = Knobs
    # What the provider answers when more requests are in flight than `max_concurrency`.
    concurrency_status: ClassVar[int] = 429

    def __init__(self, world: World, knobs: Mapping[str, Any] | None = None) -> None:
        self.world = world
        self.initial_knobs = self.knobs_model.model_validate(dict(knobs or {}))
        self.knobs = self.initial_knobs
        self.counters = Counters()
        self.window = RateWindow()
        self.faults = FaultPlan(self.knobs.seed)
        self.gate = Gate(self.knobs.hold_after)

    # --- provider hooks ------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        raise NotImplementedError

    def api_key(self, request: Request) -> str | None:
        """The credential the request carries (override for query-string keys etc.)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def check_request(self, call: Call) -> Response | None:  # noqa: ARG002 - a hook
        """Provider header checks after auth (e.g. a required version header)."""
        return None

    def response_headers(self, call: Call) -> dict[str, str]:  # noqa: ARG002 - a hook
        """Headers every answer carries (request ids, rate-limit budget...)."""
        return {}

    def stats_extra(self) -> dict[str, Any]:
        return {}

    # --- knobs and counters --------------------------------------------------------------
    def configure(self, patch: Mapping[str, Any]) -> Knobs:
        new = self.knobs.updated(dict(patch))
        if "error_first_n" in patch:
            self.faults.first_n_seen = 0
        if "fail_keys" in patch:
            self.faults.failed_keys.clear()
        if new.seed != self.knobs.seed:
            self.faults.reseed(new.seed)
        self.knobs = new
        if "hold_after" in patch:
            self.gate.set_limit(new.hold_after)
        return new

    def reset(self, *, knobs: bool = False) -> None:
        if knobs:
            self.knobs = self.initial_knobs
            # Requests a finished test left held are answered, not abandoned.
            self.gate.set_limit(self.knobs.hold_after)
        self.counters.reset()
        self.window.clear()
        self.faults = FaultPlan(self.knobs.seed)

    def stats(self, *, latencies: bool = True) -> dict[str, Any]:
        data = {"provider": self.name, **self.counters.snapshot(latencies=latencies)}
        data.update(self.stats_extra())
        # Requests waiting at the gate now, and those let through since hold_after was set.
        data["held"] = self.gate.held
        data["hold_passed"] = self.gate.passed
        data["knobs"] = self.knobs.model_dump(mode="json")
        return data

    def malformed_answer(
        self, body: Any, wrong_types: Any, *, html: str = BAD_GATEWAY_HTML
    ) -> Response:
        """A 200 that a client must not trust: an HTML error page, `body` cut in half, or a
        JSON document of the right keys with the wrong types (`wrong_types`).

        The kind comes from the content RNG, so a seeded run answers the same way again."""
        kind = self.faults.content_rng.choice(["truncated", "wrong_types", "html"])
        if kind == "html":
            return Response(html, 200, media_type="text/html")
        if kind == "truncated":
            text = json.dumps(body)
            return Response(text[: max(1, len(text) // 2)], 200, media_type="application/json")
        return JSONResponse(wrong_types)

    def typed_knobs(self, model: type[_K]) -> _K:
        """`self.knobs` as the provider's own knobs model (its `knobs_model`)."""
        knobs = self.knobs
        assert isinstance(knobs, model)
        return knobs

    def retry_after_header(self, seconds: float) -> dict[str, str]:
        # Integer seconds, rounded up: a client that waits exactly this long gets a slot.
        return {"retry-after": str(max(1, math.ceil(seconds)))}

    # --- the request pipeline ------------------------------------------------------------
    def _wrap(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        label = endpoint.name or endpoint.path

        async def run(request: Request) -> Response:
            call = Call(
                request=request,
                endpoint=label,
                body=await _json_body(request),
                item_key=None,
                request_id=uuid.uuid4().hex[:24],
            )
            if endpoint.item_key is not None:
                call.item_key = endpoint.item_key(call)
            self.counters.begin(label, call.item_key)
            status = 500
            try:
                response = await self._process(call, endpoint)
                response.headers.update(self.response_headers(call))
                status = response.status_code
                return response
            finally:
                self.counters.end(status, call.item_key)

        return run

    async def _process(self, call: Call, endpoint: Endpoint) -> Response:
        knobs = self.knobs
        call.api_key = self.api_key(call.request)
        if not knobs.key_accepted(call.api_key):
            return self.error_response(401, ErrorReason.auth, "invalid api key")
        refused = self.check_request(call)
        if refused is not None:
            return refused
        if knobs.out_of_credits:
            return self.error_response(402, ErrorReason.out_of_credits, "out of credits")
        wait = self.window.try_acquire(
            knobs.requests_per_interval, knobs.interval_s, time.monotonic()
        )
        if wait is not None:
            self.counters.bump("rate_cap_429")
            return self._refuse(429, "rate limit exceeded", wait)
        if knobs.max_concurrency is not None and self.counters.in_flight > knobs.max_concurrency:
            return self._refuse(self.concurrency_status, "too many concurrent requests", 1)
        # Held once admitted (a held request counts as in flight, as a slow answer does);
        # faults and latency then follow the knobs in force when it is let go.
        if await self.gate.wait():
            knobs = self.knobs
        injected = self.faults.injected_status(knobs, call.item_key)
        if injected is not None:
            return self._refuse(injected, "injected error", knobs.retry_after_s)
        if self.faults.hangs(knobs):
            self.counters.bump("hangs")
            await asyncio.sleep(knobs.hang_s)
        call.latency_s = self.faults.latency(knobs, call.item_key)
        self.counters.add_latency(call.latency_s)
        if call.latency_s > 0:
            await asyncio.sleep(call.latency_s)
        call.malformed = self.faults.malformed(knobs)
        if call.malformed:
            self.counters.bump("malformed")
        try:
            return await endpoint.handler(call)
        except EmulatedError as exc:
            return self.error_response(exc.status, exc.reason, exc.message)

    def _refuse(self, status: int, message: str, retry_after: float) -> Response:
        response = self.error_response(status, ErrorReason.for_status(status), message)
        if status == 429 and "retry-after" not in response.headers:
            response.headers.update(self.retry_after_header(retry_after))
        return response

    # --- the ASGI app ----------------------------------------------------------------------
    def app(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route(ep.path, self._wrap(ep), methods=list(ep.methods)) for ep in self.endpoints()
        ]
        routes += [
            Route("/_emulator/stats", self._stats_route, methods=["GET"]),
            Route("/_emulator/config", self._config_route, methods=["GET", "POST"]),
            Route("/_emulator/reset", self._reset_route, methods=["POST"]),
        ]

        async def http_error(_request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            return self.error_response(status, ErrorReason.for_status(status), str(exc))

        return Starlette(routes=routes, exception_handlers={404: http_error, 405: http_error})

    async def _stats_route(self, request: Request) -> Response:
        latencies = request.query_params.get("latencies", "true").lower() != "false"
        return JSONResponse(self.stats(latencies=latencies))

    async def _config_route(self, request: Request) -> Response:
        if request.method == "POST":
            patch = await _json_body(request)
            if not isinstance(patch, dict):
                return JSONResponse({"error": "body must be a JSON object"}, 400)
            try:
                self.configure(patch)
            except ValidationError as exc:
                return JSONResponse({"error": json.loads(exc.json())}, 422)
        return JSONResponse(self.knobs.model_dump(mode="json"))

    async def _reset_route(self, request: Request) -> Response:
        self.reset(knobs=request.query_params.get("knobs", "").lower() in ("1", "true", "yes"))
        return JSONResponse({"reset": True, "knobs": self.knobs.model_dump(mode="json")})


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --- registry ------------------------------------------------------------------------------
PROVIDERS: dict[str, type[ProviderEmulator]] = {}


_E = TypeVar("_E", bound=type[ProviderEmulator])


def register_provider(cls: _E) -> _E:
    """Class decorator: make `cls` mountable under ``/<cls.name>``."""
    PROVIDERS[cls.name] = cls
    return cls


def load_providers() -> dict[str, type[ProviderEmulator]]:
    """Import ``tam.emulators.<name>`` for every known provider that has a module yet."""
    for name in PROVIDER_NAMES:
        module = f"tam.emulators.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return PROVIDERS


@dataclass
class EmulatorApp:
    """The ASGI app hosting every provider, and the provider objects behind it."""

    asgi: Starlette
    emulators: dict[str, ProviderEmulator]
    world: World


def build_app(
    config: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    providers: Iterable[str] | None = None,
    world: World | None = None,
) -> EmulatorApp:
    """One app: ``/<provider>/...`` per provider, plus ``/healthz`` and ``/_emulator/stats``.

    `config` maps a provider name to its initial knobs (unknown names raise ValueError).
    """
    available = load_providers()
    world = world or World()
    config = dict(config or {})
    unknown = set(config) - set(available)
    if unknown:
        raise ValueError(f"no emulator for {sorted(unknown)}; have {sorted(available)}")
    names = list(providers) if providers is not None else list(available)
    emulators = {name: available[name](world, config.get(name)) for name in names}

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True, "providers": list(emulators)})

    async def all_stats(request: Request) -> Response:
        latencies = request.query_params.get("latencies", "true").lower() != "false"
        return JSONResponse({n: e.stats(latencies=latencies) for n, e in emulators.items()})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/_emulator/stats", all_stats, methods=["GET"]),
    ]
    routes += [Mount(f"/{name}", app=emulator.app()) for name, emulator in emulators.items()]
    return EmulatorApp(asgi=Starlette(routes=routes), emulators=emulators, world=world)
