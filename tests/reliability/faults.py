"""Fault injectors the emulators' knobs cannot provide: a socket that goes away, a provider
that answers garbage, a provider that echoes the caller's key in its error body."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tam.emulators.server import uvicorn_config


class TcpProxy:
    """A TCP relay in front of a server that can be switched off and on mid-run.

    `down()` stops listening (new connections are refused) and resets every open
    connection, as when a provider's load balancer goes away; `up()` listens again on the
    same port.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.outages = 0
        self.connections_cut = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def down(self) -> None:
        self.outages += 1
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._relay, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._open):
            self.connections_cut += 1
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close with a RST, as a vanished peer looks to the client.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._open.update((client_w, upstream_w))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self._open.discard(writer)
                writer.transport.abort()

        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))


# --- a provider that answers garbage ------------------------------------------------------
_KEY_HEADERS = (
    "x-api-key",
    "x-key",
    "x-discolike-key",
    "x-goog-api-key",
)
GARBAGE_KINDS = ("html_502", "html_200", "truncated_json", "wrong_types", "empty_200")
ECHO_KINDS = ("echo_key_401", "echo_key_400", "echo_key_500")

_HTML = (
    "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
    "<p>The upstream server is temporarily unable to service your request.</p>"
    "<script>window.location='/login'</script></body></html>"
)
# Every provider's top-level keys with the wrong type, so each client's parser meets
# its own fields holding nonsense (an array where an object goes, a number for a list...).
_WRONG_TYPES: dict[str, Any] = {
    "id": 7,
    "type": ["message"],
    "role": None,
    "model": {"name": 1},
    "content": 42,
    "stop_reason": [],
    "usage": "lots",
    "error": "no",
    "results": "none",
    "pagination": [1, 2],
    "person": "someone",
    "data": [None],
    "status": 3.5,
    "result": {"valid": True},
    "snapshot_id": {"id": None},
    "places": {"first": "place"},
    "nextPageToken": 12,
}


def caller_key(request: Request) -> str:
    """Whatever credential the request carries, in any provider's place for it."""
    for name in _KEY_HEADERS:
        if request.headers.get(name):
            return request.headers[name]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if token:
        return token
    return request.query_params.get("key") or request.query_params.get("api_key") or ""


class HostileProvider:
    """An HTTP server answering every path and method with the current `kind` of garbage."""

    def __init__(self, kind: str = "html_502") -> None:
        self.kind = kind
        self.served: Counter[str] = Counter()
        self.keys_seen: set[str] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def url(self, provider: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{provider}".rstrip("/")

    def app(self) -> Starlette:
        async def answer(request: Request) -> Response:
            self.served[self.kind] += 1
            key = caller_key(request)
            if key:
                self.keys_seen.add(key)
            return self.respond(self.kind, key)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", answer, methods=methods)])

    @staticmethod
    def respond(kind: str, key: str) -> Response:
        if kind == "html_502":
            return Response(_HTML.format(title="502 Bad Gateway"), 502, media_type="text/html")
        if kind == "html_200":
            return Response(_HTML.format(title="Sign in"), 200, media_type="text/html")
        if kind == "truncated_json":
            text = '{"results": [{"person": {"first_name": "Ada", "linkedin_url": "https://'
            return Response(text, 200, media_type="application/json")
        if kind == "wrong_types":
            return JSONResponse(_WRONG_TYPES)
        if kind == "empty_200":
            return Response(b"", 200, media_type="application/json")
        status = int(kind.rsplit("_", 1)[1])
        # A provider that quotes the request back, key included, in its error.
        message = f"Invalid request with api key {key}: check key={key} and try again"
        body = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
            "message": message,
            "errors": [{"id": "invalid", "details": message}],
            "error_code": "INVALID_REQUEST",
            "status": "general_failure",
            "message_detail": message,
        }
        return JSONResponse(body, status)

    def start(self) -> HostileProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(self.app(), "127.0.0.1", self.port))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("hostile provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
