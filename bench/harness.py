"""What every scenario shares: the bench context (Prefect server, emulators, databases),
seeding, the worker processes that make the measured runs, and the emulator's view of a run.

Each measured run happens in its own process (bench.worker) so peak RSS and timings are the
flow's own; the emulators run in another process so they do not share the GIL with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from rich.console import Console

from local.postgres import PgServer
from local.prefect_server import LocalPrefectServer
from tam.emulators.server import EmulatorControl, EmulatorServer

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10  # the Anthropic account's max in flight (settings' default) the ideals divide by


@dataclass
class BenchContext:
    work_dir: Path
    prefect: LocalPrefectServer
    emulators: EmulatorServer
    control: EmulatorControl
    console: Console
    pg: PgServer | None = None
    base_env: dict[str, str] = field(default_factory=dict)

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.base_env,
            "TAM_DATABASE_URL": database_url,
            **extra,
        }

    def sqlite_url(self, name: str) -> str:
        path = self.work_dir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite+aiosqlite:///{path}"

    def postgres_url(self, name: str) -> str | None:
        """A new database on the private cluster, or None without PostgreSQL."""
        if self.pg is None:
            return None
        return self.pg.create_database(f"bench_{name}_{uuid4().hex[:6]}")


async def seed(
    database_url: str, n: int, *, job_type: str = "qualify", qualified: bool = False
) -> tuple[UUID, UUID]:
    """A project with `n` sample companies (pending, or already qualified) and a pending job
    of `job_type` (the demo's ICP)."""
    from local.demo import DEMO_ICP
    from tam.emulators.world import World
    from tam.models import NewCompany, Project, ProjectStatus
    from tam.stores import open_store

    store = open_store(database_url)
    try:
        await store.init_schema()
        project_id = uuid4()
        await store.create_project(
            Project(
                id=project_id,
                name=f"bench {n}",
                status=ProjectStatus.qualifying,
                icp_profile=DEMO_ICP,
            )
        )
        companies = World(7).companies(n)
        for i in range(0, len(companies), 1000):
            await store.upsert_companies(
                [
                    NewCompany(
                        project_id=project_id,
                        qualification_status="qualified" if qualified else "pending",
                        **c,
                    )
                    for c in companies[i : i + 1000]
                ]
            )
        job = await store.create_job(project_id, job_type)
        return project_id, job.id
    finally:
        await store.close()


async def new_job(url: str, project_id: UUID, job_type: str) -> UUID:
    from tam.stores import open_store

    store = open_store(url)
    try:
        return (await store.create_job(project_id, job_type)).id
    finally:
        await store.close()


def flow_spec(step: str, project_id: UUID, job_id: UUID, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "flow",
        "step": step,
        "project_id": str(project_id),
        "job_id": str(job_id),
        **extra,
    }


def run_worker(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return start_workers([(spec, env)])[0]


def start_workers(specs: list[tuple[dict[str, Any], dict[str, str]]]) -> list[dict[str, Any]]:
    """Run bench.worker processes at once; each one's log goes to `<work dir>/logs/`."""
    procs = []
    for spec, env in specs:
        log_dir = Path(env["TAM_BENCH_WORK_DIR"]) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{spec['mode']}-{spec.get('job_id') or spec.get('project_id')}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", json.dumps(spec)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        procs.append((proc, log))
    results = []
    for proc, log in procs:
        out, _ = proc.communicate(timeout=1800)
        line = next((x for x in reversed(out.splitlines()) if x.startswith("BENCH-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"worker failed ({proc.returncode}); its log: {log}")
        results.append(json.loads(line.removeprefix("BENCH-RESULT ")))
    return results


def anthropic(ctx: BenchContext, **knobs: Any) -> None:
    ctx.control.reset("anthropic", knobs=True)
    ctx.control.configure("anthropic", **knobs)


def latency_sum(ctx: BenchContext) -> float:
    return float(ctx.control.stats("anthropic", latencies=False)["latency_sum_s"])


def timeline(stats: dict[str, Any], started: float, ended: float) -> dict[str, Any]:
    """Where the wall time went, as the emulator saw it: before the first request arrived
    (flow start-up), after the last answer (writes, job row, flow end), and how full the
    account's window was in between."""
    first, last = stats.get("first_begin_at"), stats.get("last_end_at")
    if first is None or last is None:
        return {}
    busy = max(last - first, 1e-9)
    return {
        "startup_s": round(first - started, 3),
        "tail_s": round(ended - last, 3),
        "mean_in_flight": round(stats["in_flight_seconds"] / busy, 2),
    }


def target(measured: float | None, at_most: float) -> dict[str, Any]:
    """A measured figure beside its target, and whether this run met it."""
    return {
        "measured": measured,
        "at_most": at_most,
        "met": measured is not None and measured <= at_most,
    }


def bare_client(ctx: BenchContext, name: str, n: int) -> dict[str, Any]:
    """The same SDK calls on `n` companies at the account's concurrency with no
    orchestration at all (a database of its own: the bare run writes nothing)."""
    url = ctx.sqlite_url(name)
    project_id, _ = asyncio.run(seed(url, n))
    return run_worker(
        {"mode": "bare_client", "project_id": str(project_id), "concurrency": LIMIT},
        ctx.env(url),
    )
