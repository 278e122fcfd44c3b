"""A private PostgreSQL cluster on loopback, for the test session and the benchmark.

`start_private_cluster(bin_dir(), PgServer)` initdb's a throwaway cluster (durability off) on a free
port and returns a `PgServer` to create databases on; `remove()` stops it and deletes it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url

from local.prefect_server import free_port

ROLE = "tam"
PASSWORD = "tam"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are, or None."""
    candidates = ["/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def run_as_postgres(args: list[str]) -> None:
    """Run a server binary; as root, as the `postgres` OS user (initdb refuses root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise RuntimeError(f"{' '.join(args)} exited with {done.returncode}: {output}")


class NotOwned(RuntimeError):
    """The server was not started by this process, so it is not ours to stop or start."""


class PgServer:
    """A PostgreSQL server to create databases on; one this process started (`owned`) can
    also be stopped, started and removed."""

    def __init__(self, admin_url: str, *, data_dir: Path | None, bin_dir: Path | None) -> None:
        self.admin_url = admin_url
        self.port = int(make_url(admin_url).port or 5432)
        self.data_dir = data_dir
        self._bin_dir = bin_dir

    @property
    def owned(self) -> bool:
        """Whether this session started the server (only then may a test stop it)."""
        return self.data_dir is not None

    def _pg_ctl(self, *args: str) -> None:
        if not self.owned or self._bin_dir is None or self.data_dir is None:
            raise NotOwned("this server was not started here: it cannot be stopped or started")
        run_as_postgres([str(self._bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        log = str(self.data_dir / "server.log") if self.data_dir else "/dev/null"
        self._pg_ctl("start", "-w", "-t", "60", "-l", log)

    def start_if_stopped(self) -> None:
        """For a test's cleanup: bring the server back if the test left it down."""
        if self.owned and self._bin_dir is not None and self.data_dir is not None:
            try:
                run_as_postgres([str(self._bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"])
            except RuntimeError:
                self.start()

    def url_for(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def admin_sql(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        self.admin_sql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        """Stop an owned cluster and delete its files."""
        if not self.owned or self.data_dir is None:
            return
        with contextlib.suppress(RuntimeError):
            self.stop()  # may be down already
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


S = TypeVar("S", bound=PgServer)


def start_private_cluster(binaries: Path, cls: type[S]) -> S:
    """initdb a throwaway cluster on 127.0.0.1 and a free port, start it as a `cls`, and
    create the `tam` superuser role; durability is off (fsync, synchronous_commit)."""
    data_dir = Path(tempfile.mkdtemp(prefix="tam-pg-")) / "data"
    data_dir.parent.chmod(0o755)
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data_dir.parent, "postgres", "postgres")
        shutil.chown(data_dir, "postgres", "postgres")
    run_as_postgres(
        [
            str(binaries / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    port = free_port()
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{data_dir}'",
        "max_connections": "200",
        # A throwaway cluster: durability costs time and buys nothing.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    server = cls(
        f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/postgres",
        data_dir=data_dir,
        bin_dir=binaries,
    )
    server.start()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
        c.execute(f"CREATE ROLE {ROLE} WITH LOGIN SUPERUSER PASSWORD '{PASSWORD}'".encode())
    return server
