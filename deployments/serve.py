"""`tam serve`: every flow as a deployment served from this process (local development).

Prefect's `serve` runs each flow run in a subprocess and watches for cancellation, so the
UI's Cancel and Retry work as they do under a worker. The schedules are prefect.yaml's (the
deployments named `DEPLOYMENT_NAME`), read when serving starts: one place says when the
scheduled flows run, whether a worker or `tam serve` runs them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEPLOYMENT_NAME = "tam"


def prefect_yaml_path() -> Path:
    """prefect.yaml sits beside the `flows` package, whose paths its entrypoints name."""
    import flows

    return Path(flows.__file__).resolve().parent.parent / "prefect.yaml"


def entrypoint_of(flow: Any) -> str:
    """The flow's entrypoint as prefect.yaml writes it: `flows/reaper.py:reap_stale_jobs`."""
    module = flow.fn.__module__.replace(".", "/")
    return f"{module}.py:{flow.fn.__name__}"


def yaml_schedules(
    path: Path | None = None, deployment_name: str = DEPLOYMENT_NAME
) -> dict[str, list[dict[str, Any]]]:
    """Entrypoint → the schedules prefect.yaml gives the deployment of that name (only the
    entrypoints that have any)."""
    import yaml  # type: ignore[import-untyped]

    path = path or prefect_yaml_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `tam serve` takes the flows' schedules from prefect.yaml and "
            "runs from a checkout of the repository"
        )
    # NOTE: safe_load resolves the file's anchors and `<<` merges, as Prefect's loader does.
    document = yaml.safe_load(path.read_text())
    found: dict[str, list[dict[str, Any]]] = {}
    for config in document.get("deployments") or []:
        if config.get("name") == deployment_name and config.get("schedules"):
            found[config["entrypoint"]] = list(config["schedules"])
    return found


def cron_schedules(schedules: list[dict[str, Any]]) -> list[Any]:
    """prefect.yaml's cron entries as the Schedule objects `to_deployment` takes."""
    from prefect.schedules import Cron

    unknown = [s for s in schedules if "cron" not in s]
    if unknown:
        raise ValueError(f"prefect.yaml: only cron schedules are served, not {unknown}")
    return [
        Cron(
            s["cron"],
            timezone=s.get("timezone"),
            day_or=s.get("day_or", True),
            active=s.get("active", True),
            slug=s.get("slug"),
        )
        for s in schedules
    ]


def runner_deployments(only: list[str] | None = None) -> list[Any]:
    from flows import SERVED_FLOWS

    schedules = yaml_schedules()
    return [
        flow.to_deployment(
            name=DEPLOYMENT_NAME,
            tags=["tam", flow.name],
            description=(flow.description or "").strip().splitlines()[0],
            schedules=cron_schedules(schedules.get(entrypoint_of(flow), [])),
            **extra,
        )
        for flow, extra in SERVED_FLOWS
        if not only or flow.name in only
    ]


def serve(only: list[str] | None = None, limit: int | None = None) -> None:
    from prefect import serve as prefect_serve

    # Each served run is its own process: only leased budgets hold across them (an explicit
    # TAM_LIMITER_BACKEND wins). The runs inherit this environment.
    os.environ.setdefault("TAM_LIMITER_BACKEND", "prefect")
    prefect_serve(*runner_deployments(only), limit=limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flow", action="append", help="serve only this flow (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    args = parser.parse_args()
    serve(args.flow, args.limit)


if __name__ == "__main__":
    main()
