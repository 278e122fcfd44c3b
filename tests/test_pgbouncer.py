"""The Postgres store through pgbouncer in transaction mode, as Supabase's pooler on port 6543.

In transaction mode each transaction may run on a different server connection, so a named
prepared statement made on one is missing on the next. The store must work with the plain
`postgresql://` URL the dashboard shows. Skipped when the pgbouncer binary is missing
(CI installs it: `apt-get install -y pgbouncer`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tam.models import (
    JobStatus,
    JobUpdate,
    NewCompany,
    Project,
    QualificationResult,
    QualificationStatus,
)
from tam.stores import open_store
from tests.fixtures.postgres import PgServer, free_port, run_as_postgres

pytestmark = pytest.mark.postgres


class Bouncer:
    def __init__(self, port: int, pidfile: Path) -> None:
        self.port = port
        self.pidfile = pidfile

    def url_for(self, direct_url: str) -> str:
        return make_url(direct_url).set(port=self.port).render_as_string(hide_password=False)


def _wait_for_port(port: int, *, open_: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if (sock.connect_ex(("127.0.0.1", port)) == 0) == open_:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not {'open' if open_ else 'close'}")


@pytest.fixture(scope="module")
def bouncer(pg_server: PgServer) -> Iterator[Bouncer]:
    binary = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
    workdir = Path(tempfile.mkdtemp(prefix="tam-pgbouncer-"))
    workdir.chmod(0o755)
    port = free_port()
    server = make_url(pg_server.admin_url)
    (workdir / "userlist.txt").write_text(f'"{server.username}" "{server.password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""
[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {workdir}/userlist.txt
pool_mode = transaction
; Two server connections, handed out in turn: consecutive transactions of one client land
; on different servers, which is what breaks named prepared statements.
default_pool_size = 2
server_round_robin = 1
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""
    )
    if os.geteuid() == 0:
        for path in [workdir, *workdir.iterdir()]:
            shutil.chown(path, "postgres", "postgres")
    run_as_postgres([binary, "-d", str(workdir / "pgbouncer.ini")])
    _wait_for_port(port, open_=True)
    try:
        yield Bouncer(port, workdir / "pgbouncer.pid")
    finally:
        os.kill(int((workdir / "pgbouncer.pid").read_text().strip()), signal.SIGTERM)
        _wait_for_port(port, open_=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _warm_two_server_connections(url: str) -> None:
    # Two overlapping transactions make pgbouncer open both server connections.
    # Committed before closing: pgbouncer drops a server left mid-transaction.
    conns = [psycopg.connect(url) for _ in range(2)]
    try:
        for conn in conns:
            conn.execute("select 1")
        for conn in conns:
            conn.commit()
    finally:
        for conn in conns:
            conn.close()


def test_named_prepared_statements_break_behind_the_bouncer(bouncer: Bouncer, pg_url: str) -> None:
    """The control: without prepare_threshold=None this setup does fail, so the test below
    proves something."""
    url = bouncer.url_for(pg_url)
    _warm_two_server_connections(url)
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        with pytest.raises(psycopg.Error, match="prepared statement"):
            for n in range(10):
                conn.execute("select %s::int + 1", (n,))


async def test_store_works_through_the_transaction_pooler(bouncer: Bouncer, pg_url: str) -> None:
    url = bouncer.url_for(pg_url)
    assert url.startswith("postgresql://") and f":{bouncer.port}/" in url
    _warm_two_server_connections(url)
    store = open_store(url)
    try:
        await store.init_schema()
        project = await store.create_project(Project(id=uuid4(), name="Pooled"))
        inserted = await store.upsert_companies(
            [
                NewCompany(project_id=project.id, name=f"C{n}", domain=f"c{n}.com")
                for n in range(1200)
            ]
        )
        assert len(inserted) == 1200
        assert (
            await store.upsert_companies(
                [NewCompany(project_id=project.id, name="C1", domain="c1.com")]
            )
            == []
        )

        # The same statement many times over, one after another (one pooled connection) and
        # concurrently: past psycopg's default prepare threshold (5) on every connection.
        for _ in range(12):
            assert (await store.get_project(project.id)).name == "Pooled"
        for _ in range(4):
            counts = await asyncio.gather(*(store.count_companies(project.id) for _ in range(8)))
            assert {c["total"] for c in counts} == {1200}

        await store.save_qualifications(
            [
                QualificationResult(
                    company_id=c.id, status=QualificationStatus.qualified, reason="ok", raw={"n": i}
                )
                for i, c in enumerate(inserted[:700])
            ]
        )
        pages = [
            page
            async for page in store.iter_companies(
                project.id, status=QualificationStatus.qualified, page_size=100
            )
        ]
        assert sum(len(p) for p in pages) == 700 and len(pages) == 7

        job = await store.create_job(project.id, "qualify")
        assert await store.update_job(
            job.id, JobUpdate(status=JobStatus.running), only_if_status=[JobStatus.pending]
        )
        assert not await store.update_job(
            job.id, JobUpdate(status=JobStatus.running), only_if_status=[JobStatus.pending]
        )
    finally:
        await store.close()
