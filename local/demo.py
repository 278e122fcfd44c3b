"""`tam demo`: the whole pipeline on a fresh machine — no API key, nothing pre-installed.

Starts the emulators, a local Prefect server (unless PREFECT_API_URL points at a healthy
one), creates a sample project in the embedded SQLite database, runs build-tam (source →
qualify → find contacts → LinkedIn, each a subflow on its own job row) with a progress bar
per step, and prints what each step did and where to look in the Prefect UI.
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

from local.prefect_server import (
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
    "sourcingLimits": {"discolikeMaxRecords": 150, "placesMaxResults": 25},
    # Local businesses too: the software shops qualify, the accountants do not.
    "placesQueries": ["software companies in Austin", "accounting firms in Austin"],
}

# Realistic but quick: lognormal latency everywhere, a few 429s and 529s so retries show
# in the UI, snapshots that take a couple of seconds like the real thing.
DEMO_KNOBS: dict[str, dict[str, Any]] = {
    "anthropic": {
        "latency_median_s": 0.12,
        "latency_sigma": 0.5,
        "error_rates": {"429": 0.02, "529": 0.02},
    },
    "discolike": {"latency_median_s": 0.5, "latency_sigma": 0.3},
    "google_places": {"latency_median_s": 0.15, "latency_sigma": 0.4},
    "prospeo": {"latency_median_s": 0.15, "latency_sigma": 0.5, "error_rates": {"429": 0.02}},
    "hunter": {"latency_median_s": 0.1, "latency_sigma": 0.5, "error_rates": {"429": 0.02}},
    "neverbounce": {"latency_median_s": 0.08, "latency_sigma": 0.4},
    "brightdata": {"latency_median_s": 0.05, "snapshot_ready_s": 2.0},
}
# Settings the demo needs quicker than production's defaults (a shell's own value wins).
DEMO_ENV = {"TAM_BRIGHTDATA_POLL_INTERVAL_S": "0.5", "TAM_PROGRESS_INTERVAL_S": "0.3"}
STEP_LABELS = {
    "source_companies": "source",
    "qualify": "qualify",
    "find_contacts": "contacts",
    "check_linkedin": "linkedin",
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


def demo_icp(companies: int) -> dict[str, Any]:
    """The demo ICP sized to source about `companies` companies (a quarter from Places)."""
    from tam.emulators.world import sample_companies

    queries = len(DEMO_ICP["placesQueries"])
    places = max(1, min(60, companies // (4 * queries)))
    # Two SaaS companies of the world as the user's seed domains ("more like these").
    seeds = [c["domain"] for c in sample_companies(60) if c["industry"] == "SaaS"][:2]
    return {
        **DEMO_ICP,
        "seedCompanyDomains": seeds,
        "sourcingLimits": {
            "discolikeMaxRecords": max(1, companies - places * queries),
            "placesMaxResults": places,
        },
    }


async def _seed(project_id: UUID, companies: int) -> UUID:
    from tam.models import Project, ProjectStatus
    from tam.settings import get_settings
    from tam.stores import open_store

    store = open_store(settings=get_settings())
    try:
        await store.init_schema()
        await store.create_project(
            Project(
                id=project_id,
                name=f"Demo project {time.strftime('%Y-%m-%d %H:%M:%S')}",
                status=ProjectStatus.sourcing,
                icp_profile=demo_icp(companies),
            )
        )
        job = await store.create_job(project_id, "build_tam")
        return job.id
    finally:
        await store.close()


async def _run_pipeline(console: Console, project_id: UUID, job_id: UUID) -> Any:
    """Run build-tam, with one progress bar per step read from the steps' job rows."""
    from flows.build_tam import STEPS, build_tam, step_job_id
    from tam.settings import get_settings
    from tam.stores import NotFoundInStore, open_store

    store = open_store(settings=get_settings())
    # NOTE: ensure_future, not create_task: a flow call is an awaitable, not a coroutine.
    run = asyncio.ensure_future(build_tam(project_id=project_id, job_id=job_id, return_state=True))
    columns = (
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as progress:
            bars = {
                step: progress.add_task(STEP_LABELS[step.value], total=100, detail="waiting")
                for step, _ in STEPS
            }
            started: set[Any] = set()
            while True:
                done = run.done()
                for step, bar in bars.items():
                    try:
                        job = await store.get_job(step_job_id(job_id, step))
                    except NotFoundInStore:
                        continue
                    if step not in started:
                        started.add(step)
                        progress.start_task(bar)
                    detail = job.current_step or job.status.value
                    if job.total_count and not job.status.is_final:
                        detail = f"{job.done_count}/{job.total_count} · {detail}"
                    elif job.status.is_final:
                        detail = job.status.value
                    progress.update(bar, completed=job.progress, detail=detail)
                    if job.status.is_final:
                        progress.stop_task(bar)
                if done:
                    break
                await asyncio.wait({run}, timeout=0.3)
        jobs = {}
        for step, _ in STEPS:
            try:
                jobs[step.value] = await store.get_job(step_job_id(job_id, step))
            except NotFoundInStore:
                continue
        return run.result(), await store.get_job(job_id), jobs
    finally:
        await store.close()


def _elapsed(job: Any) -> str:
    if job.started_at and job.completed_at:
        return f"{(job.completed_at - job.started_at).total_seconds():.1f}"
    return "-"


def _steps_table(jobs: dict[str, Any]) -> Table:
    table = Table(title="Pipeline steps (one tam_job_queue row each)")
    for column in ("step", "status", "result", "cost (USD)", "seconds"):
        table.add_column(column, justify="right" if column in ("cost (USD)", "seconds") else "left")
    shown = {
        "source_companies": ("companiesFound", "inserted", "placesWithoutDomain"),
        "qualify": ("qualified", "disqualified", "needsReview", "total"),
        "find_contacts": ("contactsFound", "emailsFound", "totalCompanies"),
        "check_linkedin": ("active", "inactive", "total"),
    }
    for step, job in jobs.items():
        summary = job.result_summary or {}
        if "error" in summary:
            result = f"[red]{summary['error']}[/]"
        else:
            result = ", ".join(f"{k} {summary[k]}" for k in shown[step] if k in summary)
        cost = summary.get("costUsd")
        table.add_row(
            STEP_LABELS[step],
            job.status.value,
            result,
            f"{cost:.4f}" if cost is not None else "-",
            _elapsed(job),
        )
    return table


async def _database_table(project_id: UUID) -> Table:
    """What the pipeline left in the database, counted from the rows themselves."""
    from tam.settings import get_settings
    from tam.stores import open_store

    store = open_store(settings=get_settings())
    try:
        counts = await store.count_companies(project_id)
        contacts = [c async for page in store.iter_contacts(project_id) for c in page]
    finally:
        await store.close()
    with_email = [c for c in contacts if c.email]
    by_source: dict[str, int] = {}
    for contact in with_email:
        source = str(contact.raw_data.get("email_source") or "unknown")
        by_source[source] = by_source.get(source, 0) + 1
    table = Table(title="In the database now")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("companies", counts["total"]),
        ("  qualified", counts["qualified"]),
        ("  disqualified", counts["disqualified"]),
        ("  still pending (needs review)", counts["pending"]),
        ("contacts", len(contacts)),
        ("  with an email", len(with_email)),
        *((f"    found by {s}", n) for s, n in sorted(by_source.items())),
        ("  LinkedIn checked", sum(1 for c in contacts if c.linkedin_checked_at)),
        ("  active on LinkedIn (30 days)", sum(1 for c in contacts if c.linkedin_active)),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def run_demo(console: Console, *, companies: int, wait: bool, data_dir: Path) -> int:
    from tam.emulators.server import EmulatorServer, env_for

    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TAM_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'tam.db'}")
    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
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
            console.print(
                f"Sample project [bold]{project_id}[/]: sourcing about {companies} companies"
            )
            started = time.monotonic()
            state, job, jobs = asyncio.run(_run_pipeline(console, project_id, job_id))
            wall = time.monotonic() - started
            console.print(_steps_table(jobs))
            console.print(asyncio.run(_database_table(project_id)))
            cost = (job.result_summary or {}).get("costUsd")
            console.print(
                f"Pipeline {job.status.value} in {wall:.1f} s"
                + (f", {cost:.4f} USD at list prices" if cost is not None else "")
            )
            ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
            if job.flow_run_id:
                console.print(
                    f"See the run in the Prefect UI: {ui}/runs/flow-run/{job.flow_run_id}"
                )
            if not state.is_completed() or job.status.value != "completed":
                console.print(f"[red]Pipeline ended {job.status.value}: {job.result_summary}[/]")
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
