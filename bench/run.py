"""Run the benchmark scenarios against the emulators, the real flows and the real stores.

Each measured run happens in its own process (bench.worker) so peak RSS and timings are the
flow's own; the emulators run in another process so they do not share the GIL with it.
Ideals come from what the emulator actually did (Σ of the latencies it drew, its rate cap),
never from constants.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from local.postgres import PgServer, bin_dir, start_private_cluster
from local.prefect_server import LocalPrefectServer
from tam.emulators.server import EmulatorControl, EmulatorServer, env_for

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10


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


# --- scenarios ------------------------------------------------------------------------------
def qualify_throughput(ctx: BenchContext, n: int = 1000) -> dict[str, Any]:
    """Sliding window vs the old fixed batches, on the same per-company latency draws."""
    knobs = {"latency_median_s": 0.1, "latency_sigma": 0.5, "latency_mode": "per_item"}
    anthropic(ctx, **knobs)
    url = ctx.sqlite_url("qualify_throughput")
    project_id, job_id = asyncio.run(seed(url, n))
    flow = run_worker(
        {"mode": "flow", "step": "qualify", "project_id": str(project_id), "job_id": str(job_id)},
        ctx.env(url),
    )
    stats = ctx.control.stats("anthropic", latencies=False)
    ideal = float(stats["latency_sum_s"]) / LIMIT

    anthropic(ctx, **knobs)
    base_url = ctx.sqlite_url("qualify_baseline")
    base_project, _ = asyncio.run(seed(base_url, n))
    baseline = run_worker(
        {"mode": "fixed_batches", "project_id": str(base_project), "batch": LIMIT},
        ctx.env(base_url),
    )
    base_ideal = latency_sum(ctx) / LIMIT
    summary = flow["summary"]
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": ideal,
        "ratio": flow["wall_s"] / ideal,
        "items": n,
        "max_in_flight": stats["max_in_flight"],
        **timeline(stats, flow["started"], flow["ended"]),
        "baseline_batch_wall_s": baseline["wall_s"],
        "baseline_batch_ratio": baseline["wall_s"] / base_ideal,
        "db_round_trips": summary.get("dbRoundTrips"),
        "task_retries": flow["task_retries"],
        "status": flow["status"],
    }


def overhead_10k(ctx: BenchContext, n: int = 10_000) -> dict[str, Any]:
    """Zero provider latency. `overhead_ms_per_item` is what orchestration (Prefect tasks,
    job row, limiter, batched writes, paginated reads) adds per company over the bare SDK
    calls at the same concurrency against the same emulator; `wall_ms_per_item` is the
    flow's whole wall time per company, client included."""
    anthropic(ctx, latency_median_s=0.0)
    url = ctx.sqlite_url("overhead_10k")
    project_id, job_id = asyncio.run(seed(url, n))
    flow = run_worker(
        {"mode": "flow", "step": "qualify", "project_id": str(project_id), "job_id": str(job_id)},
        ctx.env(url),
    )
    ideal = latency_sum(ctx) / LIMIT
    bare_url = ctx.sqlite_url("overhead_10k_bare")
    bare_project, _ = asyncio.run(seed(bare_url, n))
    bare = run_worker(
        {"mode": "bare_client", "project_id": str(bare_project), "concurrency": LIMIT},
        ctx.env(bare_url),
    )
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": bare["wall_s"],
        "ratio": flow["wall_s"] / bare["wall_s"],
        "items": n,
        "overhead_ms_per_item": (flow["wall_s"] - bare["wall_s"]) * 1000 / n,
        "wall_ms_per_item": flow["wall_s"] * 1000 / n,
        "bare_client_ms_per_item": bare["wall_s"] * 1000 / n,
        "emulator_latency_ideal_s": ideal,
        "peak_rss_mb": flow["peak_rss_mb"],
        "task_runs": flow["task_runs"],
        "task_retries": flow["task_retries"],
        "status": flow["status"],
    }


def two_jobs_one_account(ctx: BenchContext, n: int = 500) -> dict[str, Any]:
    """Two qualify jobs in two processes share one account's 10 slots via Prefect leases."""
    anthropic(ctx, latency_median_s=0.1, latency_sigma=0.5, latency_mode="per_item")
    specs = []
    start_at = time.time() + 12  # both processes import Prefect first, then start together
    for name in ("two_jobs_a", "two_jobs_b"):
        url = ctx.sqlite_url(name)
        project_id, job_id = asyncio.run(seed(url, n))
        spec = {
            "mode": "flow",
            "step": "qualify",
            "project_id": str(project_id),
            "job_id": str(job_id),
            "start_at": start_at,
            "sample": True,
        }
        specs.append((spec, ctx.env(url, TAM_LIMITER_BACKEND="prefect")))
    results = start_workers(specs)
    (ctx.work_dir / "two_jobs_samples.json").write_text(
        json.dumps([r.pop("samples", []) for r in results])
    )
    stats = ctx.control.stats("anthropic", latencies=False)
    ideal = float(stats["latency_sum_s"]) / LIMIT
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    return {
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal,
        "items": 2 * n,
        "max_in_flight": stats["max_in_flight"],
        **timeline(stats, min(r["started"] for r in results), max(r["ended"] for r in results)),
        "per_job_start_s": [round(r["started"] - start_at, 2) for r in results],
        "per_job_wall_s": [round(r["wall_s"], 2) for r in results],
        "status": [r["status"] for r in results],
    }


def rate_limit_storm(
    ctx: BenchContext, n: int = 600, cap: int = 100, interval: float = 10.0
) -> dict[str, Any]:
    """The emulator caps requests per interval and answers 429 + retry-after above it; the
    pipeline is not told the cap."""
    median = 0.05
    anthropic(
        ctx,
        latency_median_s=median,
        latency_sigma=0.3,
        needs_review_pct=0,
        requests_per_interval=cap,
        interval_s=interval,
    )
    url = ctx.sqlite_url("rate_limit_storm")
    project_id, job_id = asyncio.run(seed(url, n))
    flow = run_worker(
        {"mode": "flow", "step": "qualify", "project_id": str(project_id), "job_id": str(job_id)},
        ctx.env(url),
    )
    stats = ctx.control.stats("anthropic", latencies=False)
    # The cap lets `cap` requests start per window: the last one can start no earlier than
    # after (n - 1) // cap full windows, and then takes one latency.
    ideal = ((n - 1) // cap) * interval + median
    summary = flow["summary"]
    judged = summary.get("total", 0) if flow["status"] == "completed" else 0
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": ideal,
        "ratio": flow["wall_s"] / ideal,
        "items": n,
        "failed_items": n - judged,
        "http_429_seen": stats["http_429"],
        "status": flow["status"],
    }


def db_round_trips(ctx: BenchContext, n: int = 1000) -> dict[str, Any]:
    """Round trips per 1,000 rows written, on SQLite and (when available) Postgres."""
    anthropic(ctx, latency_median_s=0.01)
    out: dict[str, Any] = {}
    walls = []
    for backend, url in (
        ("sqlite", ctx.sqlite_url("db_round_trips")),
        ("postgres", ctx.postgres_url("round_trips")),
    ):
        if url is None:
            out[f"qualify_{backend}_per_1000_rows"] = None
            continue
        project_id, job_id = asyncio.run(seed(url, n))
        flow = run_worker(
            {
                "mode": "flow",
                "step": "qualify",
                "project_id": str(project_id),
                "job_id": str(job_id),
            },
            ctx.env(url),
        )
        rows = flow["summary"]["total"]
        out[f"qualify_{backend}_per_1000_rows"] = flow["summary"]["dbRoundTrips"] * 1000 / rows
        walls.append(flow["wall_s"])
    worst = max(v for k, v in out.items() if v is not None)
    # ideal: the ≤ 1 round trip per 25 rows budget, i.e. 40 per 1,000 rows.
    return {
        "wall_s": sum(walls),
        "ideal_s": None,
        "ratio": worst / 40,
        **out,
        "round_trips_per_1000_rows": worst,
    }


def _account_bound(calls: int, latency: float, limit: Any) -> float:
    """The least time `calls` calls of `latency` need under one account's limit."""
    bound = calls * latency / limit.max_in_flight
    if limit.requests_per_interval and calls > limit.requests_per_interval:
        bound = max(bound, (calls - 1) // limit.requests_per_interval * limit.interval_s)
    return float(bound)


def contacts_and_linkedin(ctx: BenchContext, n: int = 500) -> dict[str, dict[str, Any]]:
    """find_contacts then check_linkedin on `n` qualified companies, default limits.

    ideal = the tightest single-account bound (Σ latency / in-flight, or the rate cap) over
    the accounts the step used — a lower bound that ignores the waterfall's dependencies
    (an email lookup can only start once its person is found)."""
    from tam.settings import get_settings

    latency = 0.05
    for provider in ("prospeo", "hunter", "neverbounce", "brightdata"):
        ctx.control.reset(provider, knobs=True)
        ctx.control.configure(provider, latency_median_s=latency, latency_sigma=0.0)
    ctx.control.configure("brightdata", snapshot_ready_s=2.0)
    url = ctx.sqlite_url("contacts")
    project_id, job_id = asyncio.run(seed(url, n, job_type="find_contacts", qualified=True))
    env = ctx.env(url, TAM_BRIGHTDATA_POLL_INTERVAL_S="0.25")
    contacts = run_worker(
        {
            "mode": "flow",
            "step": "find_contacts",
            "project_id": str(project_id),
            "job_id": str(job_id),
        },
        env,
    )
    limits = get_settings().limits
    prospeo = ctx.control.stats("prospeo", latencies=False)["calls_by_endpoint"]
    accounts = {
        "prospeo": (sum(v for k, v in prospeo.items() if "search" in k), limits["prospeo"]),
        "prospeo_enrich": (
            sum(v for k, v in prospeo.items() if "enrich" in k),
            limits["prospeo_enrich"],
        ),
        "hunter": (ctx.control.stats("hunter", latencies=False)["calls"], limits["hunter"]),
        "neverbounce": (
            ctx.control.stats("neverbounce", latencies=False)["calls"],
            limits["neverbounce"],
        ),
    }
    bounds = {a: _account_bound(calls, latency, lim) for a, (calls, lim) in accounts.items()}
    ideal = max(bounds.values())
    summary = contacts["summary"]
    found = summary.get("contactsFound", 0)
    result_contacts = {
        "wall_s": contacts["wall_s"],
        "ideal_s": ideal,
        "ratio": contacts["wall_s"] / ideal if ideal else None,
        "companies": n,
        "contacts_found": found,
        "emails_found": summary.get("emailsFound"),
        "calls": {a: calls for a, (calls, _) in accounts.items()},
        "binding_account": max(bounds, key=lambda a: bounds[a]),
        # Rows written: each contact is inserted, then updated with its email outcome.
        "db_round_trips_per_1000_rows": (
            summary["dbRoundTrips"] * 1000 / (2 * found) if found else None
        ),
        "status": contacts["status"],
    }

    linkedin_job = asyncio.run(_new_job(url, project_id, "check_linkedin"))
    linkedin = run_worker(
        {
            "mode": "flow",
            "step": "check_linkedin",
            "project_id": str(project_id),
            "job_id": str(linkedin_job),
        },
        env,
    )
    bd = ctx.control.stats("brightdata", latencies=False)
    snapshots = int(bd.get("snapshots", 0))
    waves = -(-snapshots // limits["brightdata"].max_in_flight) if snapshots else 0
    # Each wave: trigger, the snapshot's build time, one progress poll and the download.
    ideal_li = waves * (2.0 + 3 * latency)
    li_summary = linkedin["summary"]
    result_linkedin = {
        "wall_s": linkedin["wall_s"],
        "ideal_s": ideal_li,
        "ratio": linkedin["wall_s"] / ideal_li if ideal_li else None,
        "profiles": li_summary.get("total"),
        "active": li_summary.get("active"),
        "snapshots": snapshots,
        "status": linkedin["status"],
    }
    return {"contacts_throughput": result_contacts, "linkedin_throughput": result_linkedin}


async def _new_job(url: str, project_id: UUID, job_type: str) -> UUID:
    from tam.stores import open_store

    store = open_store(url)
    try:
        return (await store.create_job(project_id, job_type)).id
    finally:
        await store.close()


SCENARIOS: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "qualify_throughput": qualify_throughput,
    "overhead_10k": overhead_10k,
    "two_jobs_one_account": two_jobs_one_account,
    "rate_limit_storm": rate_limit_storm,
    "db_round_trips": db_round_trips,
}
# Scenarios that report several rows.
MULTI_SCENARIOS: dict[str, Callable[[BenchContext], dict[str, dict[str, Any]]]] = {
    "contacts_and_linkedin": contacts_and_linkedin,
}


def _merge_round_trips(results: dict[str, dict[str, Any]]) -> None:
    """db_round_trips covers qualify and find_contacts; the latter is measured in the
    contacts run, so its figure is folded in here."""
    rt, contacts = results.get("db_round_trips"), results.get("contacts_throughput")
    if rt is None or contacts is None or contacts.get("db_round_trips_per_1000_rows") is None:
        return
    rt["find_contacts_sqlite_per_1000_rows"] = contacts["db_round_trips_per_1000_rows"]
    worst = max(v for k, v in rt.items() if k.endswith("_per_1000_rows") and v is not None)
    rt["round_trips_per_1000_rows"] = worst
    rt["ratio"] = worst / 40


def _private_postgres(console: Console) -> PgServer | None:
    binaries = bin_dir()
    if binaries is None:
        console.print("[yellow]PostgreSQL binaries not found: Postgres runs skipped[/]")
        return None
    return start_private_cluster(binaries, PgServer)


def _prefect_database(pg: PgServer | None) -> str | None:
    """A fresh database on the private cluster for the bench's Prefect server (asyncpg)."""
    if pg is None:
        return None
    url = make_url(pg.create_database("bench_prefect")).set(drivername="postgresql+asyncpg")
    return url.render_as_string(hide_password=False)


def print_table(console: Console, results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="tam bench")
    for col in ("scenario", "wall_s", "ideal_s", "ratio", "figures"):
        table.add_column(col)
    for name, r in results.items():
        figures = {k: v for k, v in r.items() if k not in ("wall_s", "ideal_s", "ratio")}
        table.add_row(
            name,
            _fmt(r.get("wall_s")),
            _fmt(r.get("ideal_s")),
            _fmt(r.get("ratio")),
            ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()),
        )
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main(only: list[str] | None = None, out: Path = ROOT / "bench" / "results.json") -> int:
    console = Console()
    work_dir = ROOT / ".tam" / "bench"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    pg = _private_postgres(console)
    # A Prefect server shared by several processes runs on PostgreSQL in production; on
    # SQLite its write lock turns concurrent lease requests into 2 s client retries.
    prefect = LocalPrefectServer(work_dir / "prefect", ui=False, database_url=_prefect_database(pg))
    with console.status("Starting Prefect server and emulators..."):
        prefect.start()
        emulators = EmulatorServer(in_process=False).start()
    ctx = BenchContext(
        work_dir=work_dir,
        prefect=prefect,
        emulators=emulators,
        control=emulators.control,
        console=console,
        pg=pg,
        base_env={
            **env_for(emulators),
            **prefect.env(),
            "TAM_ENV_FILE": "",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "TAM_BENCH_WORK_DIR": str(work_dir),
        },
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            console.print(f"[bold]{name}[/] ...")
            started = time.monotonic()
            results[name] = scenario(ctx)
            console.print(f"  done in {time.monotonic() - started:.0f}s: {results[name]}")
        for name, multi in MULTI_SCENARIOS.items():
            if only and name not in only:
                continue
            console.print(f"[bold]{name}[/] ...")
            started = time.monotonic()
            rows = multi(ctx)
            results.update(rows)
            console.print(f"  done in {time.monotonic() - started:.0f}s: {rows}")
    finally:
        emulators.stop()
        prefect.stop()
        if pg is not None:
            pg.remove()
    _merge_round_trips(results)
    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "scenarios": [{"scenario": k, **v} for k, v in results.items()],
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print_table(console, results)
    console.print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or None))
