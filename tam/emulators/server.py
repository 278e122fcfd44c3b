"""Run the emulators (in a background thread or a subprocess) and steer them over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tam.emulators.base import EmulatorApp, ProviderEmulator, build_app
from tam.emulators.world import World
from tam.providers import PROVIDER_NAMES, PROVIDERS

EMULATOR_KEY = "emulator-key"
# Provider → the variable of its key (tam.providers' table).
KEY_ENV = {name: row.key_env for name, row in PROVIDERS.items()}


def base_url_env(provider: str) -> str:
    return PROVIDERS[provider].base_url_env


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    # h11 + asyncio, no access log: thousands of concurrent sleeping requests cost one
    # coroutine each. A short graceful shutdown, so hung requests do not stall stop().
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmulatorServer:
    """Every provider emulator behind one HTTP server, as a context manager.

    ``in_process=True`` (default) serves from a daemon thread of this process, and
    :meth:`emulator` gives direct access to knobs and counters. ``in_process=False`` runs
    ``python -m tam.emulators`` in a subprocess (no shared GIL with the code under test);
    steer it through :attr:`control`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        providers: Iterable[str] | None = None,
        world_seed: int = 7,
        in_process: bool = True,
        startup_timeout_s: float = 20.0,
    ) -> None:
        self.host = host
        self._port = port
        self.config = {name: dict(knobs) for name, knobs in (config or {}).items()}
        self._requested = list(providers) if providers is not None else None
        # The mounted provider names, known once started.
        self.providers: list[str] = list(self._requested or [])
        self.world_seed = world_seed
        self.in_process = in_process
        self.startup_timeout_s = startup_timeout_s
        self.app: EmulatorApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        if self._server is not None or self._process is not None:
            return self
        if self.in_process:
            self._start_thread()
        else:
            self._start_subprocess()
        return self

    def _start_thread(self) -> None:
        self.app = build_app(self.config, providers=self._requested, world=World(self.world_seed))
        self.providers = list(self.app.emulators)
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it Nagle + delayed ACK add ~40 ms to every response.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(self.app.asgi, self.host, self._port))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="tam-emulators", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("emulator server did not start")
            time.sleep(0.01)

    def _start_subprocess(self) -> None:
        if not self._port:
            self._port = free_port(self.host)
        args = [
            sys.executable,
            "-m",
            "tam.emulators",
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--seed",
            str(self.world_seed),
        ]
        if self.config:
            args += ["--config", json.dumps(self.config)]
        if self._requested is not None:
            args += ["--providers", ",".join(self._requested)]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"emulator process exited with {self._process.returncode}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=1.0, trust_env=False)
                if health.is_success:
                    self.providers = list(health.json()["providers"])
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("emulator process did not answer /healthz in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
            self._thread = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmulatorServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # --- addresses and access ----------------------------------------------------------------
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider: str) -> str:
        """What a client uses as the provider's base URL, e.g. ANTHROPIC_BASE_URL."""
        return f"{self.url}/{provider}"

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url)

    def emulator(self, provider: str) -> ProviderEmulator:
        """The live provider object (in-process mode only)."""
        if self.app is None:
            raise RuntimeError("emulator objects are only reachable in in-process mode")
        return self.app.emulators[provider]

    def env(self) -> dict[str, str]:
        return env_for(self)


def env_for(server: EmulatorServer | str) -> dict[str, str]:
    """Every provider's ``*_BASE_URL`` pointing at `server` (or a root URL), plus dummy keys."""
    root = server.url if isinstance(server, EmulatorServer) else server.rstrip("/")
    env = {}
    for name in PROVIDER_NAMES:
        row = PROVIDERS[name]
        env[row.base_url_env] = f"{root}{row.emulator_path}"
        env[row.key_env] = EMULATOR_KEY
    return env


class EmulatorControl:
    """Read counters and turn knobs of a running emulator server, sync or async."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _url(self, provider: str, action: str) -> str:
        return f"{self.base_url}/{provider}/_emulator/{action}"

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        # trust_env=False: the emulator is local; a proxy from the environment must not
        # intercept it.
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
            return self._json(client.request(method, url, **kwargs))

    async def _arequest(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            return self._json(await client.request(method, url, **kwargs))

    def stats(self, provider: str, *, latencies: bool = True) -> dict[str, Any]:
        params = {"latencies": str(latencies).lower()}
        return self._request("GET", self._url(provider, "stats"), params=params)

    def configure(self, provider: str, **knobs: Any) -> dict[str, Any]:
        """Partial knob update; returns the provider's knobs after it."""
        return self._request("POST", self._url(provider, "config"), json=knobs)

    def reset(self, provider: str, *, knobs: bool = False) -> dict[str, Any]:
        params = {"knobs": str(knobs).lower()}
        return self._request("POST", self._url(provider, "reset"), params=params)

    def hold(self, provider: str, *, after: int = 0) -> dict[str, Any]:
        """Answer `after` more requests, then hold the rest unanswered until :meth:`release`
        (or another hold). Wait for ``stats()["held"]`` to see requests waiting."""
        return self.configure(provider, hold_after=after)

    def release(self, provider: str) -> dict[str, Any]:
        """Answer every held request, and all later ones."""
        return self.configure(provider, hold_after=None)

    def health(self) -> dict[str, Any]:
        return self._request("GET", f"{self.base_url}/healthz")

    async def astats(self, provider: str, *, latencies: bool = True) -> dict[str, Any]:
        params = {"latencies": str(latencies).lower()}
        return await self._arequest("GET", self._url(provider, "stats"), params=params)

    async def aconfigure(self, provider: str, **knobs: Any) -> dict[str, Any]:
        return await self._arequest("POST", self._url(provider, "config"), json=knobs)

    async def areset(self, provider: str, *, knobs: bool = False) -> dict[str, Any]:
        params = {"knobs": str(knobs).lower()}
        return await self._arequest("POST", self._url(provider, "reset"), params=params)

    async def ahold(self, provider: str, *, after: int = 0) -> dict[str, Any]:
        return await self.aconfigure(provider, hold_after=after)

    async def arelease(self, provider: str) -> dict[str, Any]:
        return await self.aconfigure(provider, hold_after=None)

    async def ahealth(self) -> dict[str, Any]:
        return await self._arequest("GET", f"{self.base_url}/healthz")


def running_env(server: EmulatorServer) -> dict[str, str]:
    """`os.environ` overlaid with :func:`env_for` (for launching a demo subprocess)."""
    return {**os.environ, **env_for(server)}
