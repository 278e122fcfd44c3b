"""Start and stop a local Prefect server.

The reliable default: see docs/performance.md, "Measured facts about Prefect".
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def drain_prefect_clients(timeout: float = 5.0) -> None:
    """Ship queued logs and events now, while the server is still up.

    Prefect sends them from background workers at interpreter exit; if the server is
    already stopped by then, the workers retry for about a minute before giving up.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception:  # noqa: BLE001,S110 - best effort at shutdown
            pass


class LocalPrefectServer:
    """`prefect server start` in a subprocess with its own PREFECT_HOME.

    Its database is SQLite in PREFECT_HOME unless `database_url` names a PostgreSQL
    database (`postgresql+asyncpg://...`): under concurrent writers (two flow runs, their
    events and leases) SQLite's write lock makes the server answer 503 and the client retry
    2 s later, measured; a server shared by several workers belongs on PostgreSQL.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        ui: bool = True,
        log_file: Path | None = None,
        database_url: str | None = None,
    ) -> None:
        self.home = home
        self.host = host
        self.port = port or free_port()
        self.ui = ui
        self.log_file = log_file or home / "server.log"
        self.database_url = database_url
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = 90.0) -> LocalPrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if self.ui else "false",
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            # NOTE: this server's own client settings must not point at another server.
            "PREFECT_API_URL": self.api_url,
        }
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        log = self.log_file.open("ab")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Prefect server exited with {self._proc.returncode}; see {self.log_file}"
                )
            if is_healthy(self.api_url):
                self._warm_up()
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Prefect server did not become healthy in {timeout:.0f}s")

    def _warm_up(self) -> None:
        # The server's first API request pays a one-off lazy initialisation (~0.5 s, measured);
        # pay it here rather than in the first flow run's start-up.
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{self.api_url}/admin/version", timeout=10)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
