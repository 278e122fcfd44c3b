"""Prefect flows: one module per pipeline step, the whole pipeline, refine-all, the reaper.

`FLOWS` maps a job type (as the app names it) to its flow; `SERVED_FLOWS` lists what
`tam serve` and prefect.yaml deploy, with per-deployment extras. Schedules are prefect.yaml's
alone; `tam serve` reads them from there (deployments/serve.py).
"""

from __future__ import annotations

from typing import Any

# NOTE: Prefect imports FastAPI lazily the first time a flow is called (to serialize its
# parameters), about 0.3 s; importing it with the flows moves that to process start instead
# of the first job's start-up.
import fastapi.encoders  # noqa: F401

from flows.build_tam import build_tam
from flows.check_linkedin import check_linkedin
from flows.find_contacts import find_contacts
from flows.qualify import qualify_companies
from flows.reaper import reap_stale_jobs
from flows.refine_all import refine_all_projects
from flows.refine_discolike import refine_discolike
from flows.source_companies import source_companies

FLOWS: dict[str, Any] = {
    "source_companies": source_companies,
    "qualify": qualify_companies,
    "find_contacts": find_contacts,
    "check_linkedin": check_linkedin,
    "refine_discolike": refine_discolike,
    "build_tam": build_tam,
}

SERVED_FLOWS: list[tuple[Any, dict[str, Any]]] = [
    (source_companies, {}),
    (qualify_companies, {}),
    (find_contacts, {}),
    (check_linkedin, {}),
    (refine_discolike, {}),
    (build_tam, {}),
    (refine_all_projects, {}),
    (reap_stale_jobs, {}),
]
