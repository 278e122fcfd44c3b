"""Shared pieces of the reliability cases: seeding, waiting, worker processes, row checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from tam.emulators import World, sample_companies
from tam.models import Company, Contact, Job, NewCompany, Project, ProjectStatus
from tam.stores.base import Store

ROOT = Path(__file__).resolve().parents[2]
WORLD = World(7)

CONTACTS_ICP: dict[str, Any] = {
    "industryKeywords": ["saas"],
    "geography": "us_only",
    "seniorityPreference": ["C-Suite", "VP", "Director"],
    "contactsPerCompany": 3,
}


async def wait_for_job(
    store: Store, job_id: UUID, predicate: Callable[[Job], bool], timeout: float = 90
) -> Job:
    deadline = time.monotonic() + timeout
    job = await store.get_job(job_id)
    while time.monotonic() < deadline:
        job = await store.get_job(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting; last job state: {job}")


async def seed_qualified(
    store: Store, n: int, *, icp: dict[str, Any] = CONTACTS_ICP, job_type: str = "find_contacts"
) -> tuple[UUID, UUID, list[Company]]:
    """A project whose first `n` sample companies are qualified, and a pending job."""
    project_id = uuid4()
    await store.create_project(
        Project(id=project_id, name="reliability", status=ProjectStatus.enriching, icp_profile=icp)
    )
    rows = await store.upsert_companies(
        [
            NewCompany(project_id=project_id, qualification_status="qualified", **c)
            for c in sample_companies(n)
        ]
    )
    job = await store.create_job(project_id, job_type)
    return project_id, job.id, rows


async def all_companies(store: Store, project_id: UUID) -> list[Company]:
    return [c async for page in store.iter_companies(project_id) for c in page]


async def all_contacts(store: Store, project_id: UUID) -> list[Contact]:
    return [c async for page in store.iter_contacts(project_id) for c in page]


def duplicates(keys: Iterable[str | None]) -> dict[str, int]:
    counts = Counter(k for k in keys if k)
    return {k: n for k, n in counts.items() if n > 1}


def paid_twice(success_by_item: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in success_by_item.items() if n > 1}


async def settle(control: Any, providers: Iterable[str], timeout: float = 10) -> None:
    """Wait until no request is in flight at these emulators.

    A hung request the client gave up on still completes on the emulator later, and its
    success would land in the next test's counters after the reset between tests.
    """
    deadline = time.monotonic() + timeout
    for provider in providers:
        while (await control.astats(provider, latencies=False))["in_flight"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{provider} still has requests in flight")
            await asyncio.sleep(0.1)


async def wait_until_held(control: Any, provider: str, n: int, timeout: float = 120) -> None:
    """Wait until `provider`, held with ``hold(after=n)``, let `n` requests through and
    holds a later one: the caller did that much work and cannot get further, however fast
    or slow this machine is."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await control.astats(provider, latencies=False)
        if stats["hold_passed"] >= n and stats["held"]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{provider}: {stats['hold_passed']} of {n} let through")
        await asyncio.sleep(0.05)


class FlowWorker:
    """A flow run in a worker process of its own, so a test can SIGKILL it mid-run."""

    def __init__(self, flow: str, **params: Any) -> None:
        module, name = flow.rsplit(".", 1)
        args = ", ".join(f"{k}=uuid.UUID('{v}')" for k, v in params.items())
        code = f"import asyncio, uuid; from {module} import {name}; asyncio.run({name}({args}))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL: no hook, no finally block, no flush runs; only the heartbeat stops."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
