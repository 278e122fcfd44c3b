"""Seed projects and jobs for flow tests."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from tam.emulators.world import sample_companies
from tam.models import NewCompany, Project, ProjectStatus
from tam.stores.base import Store

ICP: dict[str, Any] = {
    "businessModel": "B2B SaaS",
    "whatYouSell": "Revenue analytics",
    "industryKeywords": ["saas", "software", "fintech"],
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP"],
    "contactsPerCompany": 2,
}


async def seed_project(
    store: Store, n: int, *, icp: dict[str, Any] | None = None, seed: int = 7
) -> tuple[UUID, UUID]:
    """A project with `n` pending sample companies and a pending qualify job."""
    project_id = uuid4()
    await store.create_project(
        Project(id=project_id, name="test", status=ProjectStatus.qualifying, icp_profile=icp or ICP)
    )
    await store.upsert_companies(
        [NewCompany(project_id=project_id, **c) for c in sample_companies(n, seed)]
    )
    job = await store.create_job(project_id, "qualify")
    return project_id, job.id
