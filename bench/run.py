"""`tam bench [scenario ...]`: run the benchmark scenarios (bench/scenarios/) against the
emulators, the real flows and the real stores; print a table and write bench/results.json.

Ideals come from what the emulator actually did (Σ of the latencies it drew, its rate cap)
or from the bare client on the same calls, never from constants.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from bench.harness import ROOT, BenchContext
from bench.scenarios import MULTI_SCENARIOS, SCENARIOS, merge_round_trips
from local.postgres import PgServer, bin_dir, start_private_cluster
from local.prefect_server import LocalPrefectServer
from tam.emulators.server import EmulatorServer, env_for


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
        figures["targets"] = " ".join(_met(k, t) for k, t in r.get("targets", {}).items())
        table.add_row(
            name,
            _fmt(r.get("wall_s")),
            _fmt(r.get("ideal_s")),
            _fmt(r.get("ratio")),
            ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()),
        )
    console.print(table)


def _met(name: str, check: dict[str, Any]) -> str:
    mark = "met" if check["met"] else "MISSED"
    return f"{name} {_fmt(check['measured'])} ≤ {_fmt(check['at_most'])} {mark}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main(only: list[str] | None = None, out: Path = ROOT / "bench" / "results.json") -> int:
    console = Console()
    unknown = sorted(set(only or ()) - set(SCENARIOS) - set(MULTI_SCENARIOS))
    if unknown:
        known = ", ".join([*SCENARIOS, *MULTI_SCENARIOS])
        console.print(f"[red]Unknown scenario {', '.join(unknown)}[/]; one of: {known}")
        return 2
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
    merge_round_trips(results)
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
