"""`tam demo`: the pipeline end to end on a fresh machine — no API key, nothing pre-installed.

Starts the emulators, a local Prefect server (unless PREFECT_API_URL points at a healthy
one), creates a sample project in the embedded SQLite database, runs the flows with a progress
bar, and prints what happened and where to look in the Prefect UI.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from deployments.prefect_server import (
    LocalPrefectServer,
    drain_prefect_clients,
    free_port,
    is_healthy,
)

DEMO_ICP: dict[str, Any] = {
    "businessModel": "B2B SaaS",
    "whatYouSell": "Revenue analytics for finance and RevOps teams",
    "industryKeywords": ["saas", "software", "fintech"],
    "employeeSizeRanges": ["11-50", "51-200", "201-500"],
    "geography": "us_only",
    "specialCriteria": "Sells to other businesses; has a finance team",
    "seniorityPreference": ["C-Suite", "VP"],
    "contactsPerCompany": 2,
    "sourcingLimits": {"discolikeMaxRecords": 100},
}

# Realistic but quick: lognormal latency, a few 429s and 529s so retries show in the UI.
DEMO_KNOBS: dict[str, dict[str, Any]] = {
    "anthropic": {
        "latency_median_s": 0.12,
        "latency_sigma": 0.5,
        "error_rates": {"429": 0.02, "529": 0.02},
    },
}


def _prefect(console: Console, data_dir: Path) -> LocalPrefectServer | None:
    """Use the configured Prefect API if it answers, else start a local server."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured and is_healthy(configured):
        console.print(f"Using the Prefect server at {configured}")
        return None
    port = 4200 if not is_healthy("http://127.0.0.1:4200/api") else free_port()
    try:
        server = LocalPrefectServer(data_dir / "prefect", port=port)
    except OSError:
        server = LocalPrefectServer(data_dir / "prefect")
    with console.status("Starting a local Prefect server (first start takes ~15 s)..."):
        server.start()
    os.environ.update(server.env())
    console.print(f"Prefect server up: UI at [link]{server.ui_url}[/link]")
    return server


async def _seed(project_id: UUID, companies: int) -> UUID:
    from tam.emulators.world import sample_companies
    from tam.models import NewCompany, Project, ProjectStatus
    from tam.settings import get_settings
    from tam.stores import open_store

    store = open_store(get_settings().database_url)
    try:
        await store.init_schema()
        await store.create_project(
            Project(
                id=project_id,
                name=f"Demo project {time.strftime('%Y-%m-%d %H:%M:%S')}",
                status=ProjectStatus.qualifying,
                icp_profile=DEMO_ICP,
            )
        )
        rows = [
            NewCompany(project_id=project_id, source="manual", raw_data={"demo": True}, **c)
            for c in sample_companies(companies)
        ]
        await store.upsert_companies(rows)
        job = await store.create_job(project_id, "qualify")
        return job.id
    finally:
        await store.close()


async def _run_step(console: Console, step: str, project_id: UUID, job_id: UUID) -> Any:
    from flows import FLOWS
    from tam.settings import get_settings
    from tam.stores import open_store

    store = open_store(get_settings().database_url)
    run = asyncio.create_task(FLOWS[step](project_id=project_id, job_id=job_id))
    columns = (
        TextColumn(f"[bold]{step:<15}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task(step, total=100, detail="starting")
            while not run.done():
                await asyncio.wait({run}, timeout=0.3)
                job = await store.get_job(job_id)
                detail = job.current_step or ""
                if job.total_count:
                    detail = f"{job.done_count}/{job.total_count} · {detail}"
                progress.update(bar, completed=job.progress, detail=detail)
            job = await store.get_job(job_id)
            progress.update(bar, completed=job.progress, detail=job.status.value)
        return run.result(), job
    finally:
        await store.close()


def _summary_table(step: str, summary: dict[str, Any], wall_s: float) -> Table:
    table = Table(title=f"{step} result", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    labels = {
        "qualified": "qualified",
        "disqualified": "disqualified",
        "needsReview": "needs review (still pending)",
        "total": "companies judged",
        "inputTokens": "input tokens",
        "outputTokens": "output tokens",
        "costUsd": "cost (USD, list prices)",
    }
    for key, label in labels.items():
        if key in summary:
            table.add_row(label, str(summary[key]))
    table.add_row("wall time (s)", f"{wall_s:.1f}")
    return table


def run_demo(console: Console, *, companies: int, wait: bool, data_dir: Path) -> int:
    from tam.emulators.server import EmulatorServer, env_for

    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TAM_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'tam.db'}")
    prefect = _prefect(console, data_dir)
    try:
        with EmulatorServer(config=DEMO_KNOBS) as emulators:
            # The demo always talks to the emulators, whatever keys the shell has.
            os.environ.update(env_for(emulators))
            from tam.settings import get_settings

            get_settings.cache_clear()
            console.print(f"Emulators on {emulators.url}; database {get_settings().database_url}")
            project_id = uuid4()
            job_id = asyncio.run(_seed(project_id, companies))
            console.print(f"Sample project [bold]{project_id}[/] with {companies} companies")
            started = time.monotonic()
            summary, job = asyncio.run(_run_step(console, "qualify", project_id, job_id))
            wall = time.monotonic() - started
            console.print(_summary_table("qualify", summary, wall))
            ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
            if job.flow_run_id:
                console.print(
                    f"See the run in the Prefect UI: {ui}/runs/flow-run/{job.flow_run_id}"
                )
            if job.status.value != "completed":
                console.print(f"[red]Job ended {job.status.value}: {job.result_summary}[/]")
                return 1
        if wait and prefect is not None:
            console.print(f"Serving the Prefect UI at {prefect.ui_url} — Ctrl+C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if prefect is not None:
            drain_prefect_clients()
            prefect.stop()
