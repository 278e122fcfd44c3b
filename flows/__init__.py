"""Prefect flows: one module per pipeline step, plus the reaper.

`FLOWS` maps a job type (as the app names it) to its flow; `SERVED_FLOWS` lists what
`tam serve` and prefect.yaml deploy, with per-deployment extras (schedules).
"""

from __future__ import annotations

from typing import Any

from flows.qualify import qualify_companies
from flows.reaper import reap_stale_jobs

FLOWS: dict[str, Any] = {
    "qualify": qualify_companies,
}

SERVED_FLOWS: list[tuple[Any, dict[str, Any]]] = [
    (qualify_companies, {}),
    (reap_stale_jobs, {"cron": "*/5 * * * *"}),
]
