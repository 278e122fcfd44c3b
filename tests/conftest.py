"""Test session wiring: a real Prefect server, the emulators, and per-test databases.

PREFECT_API_URL is fixed here, before anything imports Prefect, because Prefect reads its
settings once at import; the server itself starts only when a test asks for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from local.prefect_server import LocalPrefectServer, drain_prefect_clients, free_port

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="tam-prefect-"))
_PREFECT_PORT = free_port()
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PREFECT_PORT}/api"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Expired concurrency leases are reclaimed by this loop; 15 s by default.
os.environ.setdefault("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS", "1")
os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "false"
# Tests must never read the developer's .env.
os.environ["TAM_ENV_FILE"] = ""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.supabase", "tests.reliability.plugin"]

from tam.settings import get_settings  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[LocalPrefectServer]:
    """A real Prefect server for the whole session (flows run against it)."""
    server = LocalPrefectServer(_PREFECT_HOME / "server", port=_PREFECT_PORT, ui=False)
    server.start()
    yield server
    # Logs and events still queued (a failed run's last lines) go out while the server is
    # up; otherwise Prefect's workers retry them for about a minute at interpreter exit.
    drain_prefect_clients()
    server.stop()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def emulators() -> Iterator[object]:
    """All provider emulators in one server on a loopback port (real sockets)."""
    from tam.emulators.server import EmulatorServer

    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator_control(emulators: object) -> Iterator[object]:
    """Control client; every provider's counters and knobs are reset after the test."""
    from tam.emulators.server import EmulatorControl

    control = EmulatorControl(emulators.url)  # type: ignore[attr-defined]
    yield control
    for provider in emulators.providers:  # type: ignore[attr-defined]
        control.reset(provider, knobs=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tam.db'}"


@pytest.fixture
def tam_env(
    monkeypatch: pytest.MonkeyPatch, emulators: object, sqlite_url: str
) -> Iterator[dict[str, str]]:
    """Settings pointing at the emulators and a fresh SQLite database."""
    from tam.emulators.server import env_for

    env = {
        **env_for(emulators),  # type: ignore[arg-type]
        "TAM_DATABASE_URL": sqlite_url,
        "TAM_DATA_DIR": str(Path(sqlite_url.split(":///", 1)[1]).parent / "data"),
        "TAM_MAX_ATTEMPTS": "4",
        "ANTHROPIC_API_KEY": "test-key",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
async def store(tam_env: dict[str, str]) -> AsyncIterator[object]:
    from tam.stores import open_store

    s = open_store(tam_env["TAM_DATABASE_URL"])
    await s.init_schema()
    yield s
    await s.close()
