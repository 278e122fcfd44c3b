"""The `tam` command line. Prefect is imported inside commands, after the API URL is known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="TAM pipeline on Prefect.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
limits_app = typer.Typer(help="Per-account API limits (Prefect global concurrency limits).")
app.add_typer(db_app, name="db")
app.add_typer(limits_app, name="limits")
console = Console()


@db_app.command("init")
def db_init(
    url: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
) -> None:
    """Create the tables and indexes if they are missing."""
    from tam.settings import get_settings
    from tam.stores import open_store, redact_url

    # The same choice the flows and the webhook make (an explicit URL, else the settings').
    store = open_store(url) if url else open_store(settings=get_settings())

    async def main() -> None:
        try:
            await store.init_schema()
        finally:
            await store.close()

    asyncio.run(main())
    console.print(f"[green]Schema ready[/] at {redact_url(url) if url else store!r}")


def _limits_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "name", k))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    console.print(table)


@limits_app.callback(invoke_without_command=True)
def limits_show(ctx: typer.Context) -> None:
    """Show each limit's configuration and current use on the Prefect server."""
    if ctx.invoked_subcommand is not None:
        return
    from cli.limits import show_limits
    from tam.settings import get_settings

    _limits_table(asyncio.run(show_limits(get_settings())), "API account limits")


@limits_app.command("apply")
def limits_apply() -> None:
    """Create or update the Prefect global concurrency limits from settings (idempotent)."""
    from cli.limits import apply_limits
    from tam.settings import get_settings

    _limits_table(asyncio.run(apply_limits(get_settings())), "Applied limits")


@app.command()
def emulators(
    host: str = "127.0.0.1",
    port: int = 8787,
    config: Annotated[str | None, typer.Option(help="JSON knobs per provider")] = None,
) -> None:
    """Serve every provider emulator on one port until Ctrl+C."""
    from tam.emulators.server import EmulatorServer, env_for

    knobs = json.loads(config) if config else None
    with EmulatorServer(host=host, port=port, config=knobs) as server:
        console.print("[bold]Emulators up.[/] Point the pipeline at them with:")
        for key, value in env_for(server).items():
            console.print(f"  export {key}={value}")
        try:
            asyncio.run(_forever())
        except KeyboardInterrupt:
            pass


async def _forever() -> None:
    while True:
        await asyncio.sleep(3600)


def _run_flow(step: str, **params: Any) -> None:
    from flows import FLOWS

    result = asyncio.run(FLOWS[step](**params))
    console.print_json(data=result)


def _fail(message: str, code: int = 1) -> typer.Exit:
    """One clear line on stderr, no traceback."""
    typer.echo(f"tam run: {message}", err=True)
    return typer.Exit(code)


def _parse_id(option: str, value: str) -> UUID:
    try:
        return UUID(value.strip())
    except ValueError:
        raise _fail(f"{option} {value!r} is not a valid id (expected a UUID)", 2) from None


def _check_ids(project_id: UUID, job_id: UUID | None) -> None:
    """The project must exist, and a given job must be that project's (a job id that does
    not exist yet is created by the run, as the app's own rows are)."""
    from tam.settings import get_settings
    from tam.stores import open_store
    from tam.stores.base import NotFoundInStore, StoreError

    async def main() -> str | None:
        store = open_store(get_settings().database_url)
        try:
            try:
                await store.get_project(project_id)
            except NotFoundInStore:
                return f"project {project_id} does not exist"
            if job_id is None:
                return None
            try:
                job = await store.get_job(job_id)
            except NotFoundInStore:
                return None
            if job.project_id != project_id:
                return f"job {job_id} belongs to project {job.project_id}, not {project_id}"
            return None
        except StoreError as exc:
            # NOTE: a fresh database without tables has no projects either.
            return f"project {project_id} not found ({type(exc).__name__}: run `tam db init`?)"
        finally:
            await store.close()

    problem = asyncio.run(main())
    if problem:
        raise _fail(problem)


@app.command("run")
def run_step(
    step: Annotated[str, typer.Argument(help="Job type, e.g. qualify, find_contacts")],
    project: Annotated[str, typer.Option("--project", help="tam_projects.id")],
    job: Annotated[
        str | None, typer.Option("--job", help="tam_job_queue.id (created if missing)")
    ] = None,
) -> None:
    """Run STEP for a project now, in this process (job types as the app names them)."""
    from flows import FLOWS

    if step not in FLOWS:
        raise _fail(f"unknown step {step!r}; one of: {', '.join(FLOWS)}", 2)
    project_id = _parse_id("--project", project)
    job_id = _parse_id("--job", job) if job is not None else None
    _check_ids(project_id, job_id)
    try:
        _run_flow(step, project_id=project_id, job_id=job_id)
    except Exception as exc:  # noqa: BLE001 - the job row and the run's log carry the detail
        from tam.failures import describe_failure
        from tam.settings import get_settings

        detail = describe_failure(exc, get_settings().secret_values())
        raise _fail(f"{step} failed: {detail}") from None


@app.command()
def serve(
    flow: Annotated[list[str] | None, typer.Option(help="Serve only these flows")] = None,
    limit: Annotated[int | None, typer.Option(help="Max concurrent flow runs")] = None,
) -> None:
    """Serve every flow as a Prefect deployment from this process (Ctrl+C to stop)."""
    from deployments.serve import serve as serve_all

    serve_all(flow, limit)


@app.command()
def webhook(
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Run the dispatch webhook the Edge Function calls (needs a SERVICE_API_KEY of 32+
    characters). For local development, TAM_WEBHOOK_DOCS=true serves /docs and /redoc."""
    from deployments.webhook import run

    run(host=host, port=port)


@app.command()
def sample(
    companies: Annotated[int, typer.Option(help="Sample companies to create")] = 50,
    job: Annotated[str, typer.Option(help="Job type of the pending job row")] = "qualify",
) -> None:
    """Create a sample project (the demo's ICP), its companies and a pending job row, and
    print the ids as shell exports — for dispatching through the webhook by hand."""
    from uuid import uuid4

    from local.demo import DEMO_ICP
    from tam.emulators.world import sample_companies
    from tam.models import NewCompany, Project, ProjectStatus
    from tam.settings import get_settings
    from tam.stores import open_store

    async def main() -> tuple[UUID, UUID]:
        store = open_store(settings=get_settings())
        try:
            await store.init_schema()
            project = await store.create_project(
                Project(
                    id=uuid4(),
                    name="Sample project",
                    status=ProjectStatus.qualifying,
                    icp_profile=DEMO_ICP,
                )
            )
            await store.upsert_companies(
                [NewCompany(project_id=project.id, **c) for c in sample_companies(companies)]
            )
            return project.id, (await store.create_job(project.id, job)).id
        finally:
            await store.close()

    project_id, job_id = asyncio.run(main())
    typer.echo(f"export PROJECT_ID={project_id} JOB_ID={job_id}")


@app.command()
def reap(
    stale_after: Annotated[float | None, typer.Option(help="Seconds without heartbeat")] = None,
) -> None:
    """Mark running jobs whose heartbeat stopped as failed."""
    from flows.reaper import reap_stale_jobs

    console.print_json(data=asyncio.run(reap_stale_jobs(stale_after_s=stale_after)))


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None, typer.Argument(help="Scenarios to run (default: all)")
    ] = None,
) -> None:
    """Run the performance scenarios; prints a table and writes bench/results.json."""
    from bench.run import main

    raise typer.Exit(main(scenario or None))


@app.command()
def demo(
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Exit when the run ends")] = False,
    companies: Annotated[int, typer.Option(help="Sample companies to create")] = 200,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its files")] = Path(".tam"),
) -> None:
    """Run the pipeline on a sample project: SQLite, local Prefect server, emulators, no key."""
    from local.demo import run_demo

    raise typer.Exit(run_demo(console, companies=companies, wait=not no_wait, data_dir=data_dir))


if __name__ == "__main__":
    app()
