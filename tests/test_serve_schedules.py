"""`tam serve` schedules exactly what prefect.yaml schedules: prefect.yaml is the one source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployments.serve import (
    DEPLOYMENT_NAME,
    cron_schedules,
    entrypoint_of,
    prefect_yaml_path,
    runner_deployments,
    yaml_schedules,
)

ROOT = Path(__file__).resolve().parent.parent


def served_schedules(deployment: Any) -> list[tuple[str, str | None, str | None]]:
    return [(s.schedule.cron, s.schedule.timezone, s.slug) for s in deployment.schedules or []]


def test_prefect_yaml_is_found_beside_the_flows_package() -> None:
    assert prefect_yaml_path() == ROOT / "prefect.yaml"


def test_every_served_flow_carries_prefect_yamls_schedules_and_only_those() -> None:
    from flows import SERVED_FLOWS

    in_yaml = yaml_schedules()
    pairs = zip(SERVED_FLOWS, runner_deployments(), strict=True)
    served = {entrypoint_of(flow): deployment for (flow, _), deployment in pairs}
    # Every entrypoint prefect.yaml schedules is served, and nothing else is scheduled.
    assert set(in_yaml) <= set(served)
    for entrypoint, deployment in served.items():
        expected = [
            (s["cron"], s.get("timezone"), s.get("slug")) for s in in_yaml.get(entrypoint, [])
        ]
        assert served_schedules(deployment) == expected, entrypoint


def test_the_scheduled_flows_are_refine_all_daily_and_the_reaper_every_five_minutes() -> None:
    crons = {ep.rsplit(":", 1)[1]: [s["cron"] for s in v] for ep, v in yaml_schedules().items()}
    assert crons == {"refine_all_projects": ["0 6 * * *"], "reap_stale_jobs": ["*/5 * * * *"]}


def test_both_flavours_schedule_alike() -> None:
    assert yaml_schedules(deployment_name="tam-process") == yaml_schedules(
        deployment_name=DEPLOYMENT_NAME
    )


def test_a_schedule_serve_cannot_honour_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="only cron"):
        cron_schedules([{"interval": 300}])


def test_serving_without_prefect_yaml_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prefect.yaml"):
        yaml_schedules(tmp_path / "prefect.yaml")
