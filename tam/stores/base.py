"""The one store protocol every backend (SQLite, Postgres, Supabase REST) implements.

Rules every backend keeps:
- reads are paginated (keyset on id, `page_size` rows per round trip), never one unbounded
  select: Supabase's REST API silently caps an unpaginated read at 1,000 rows;
- writes take lists and cost one round trip per batch, not per row;
- inserts are upserts on the unique keys — (project_id, domain) for companies,
  (project_id, linkedin_url) for contacts — so a re-run never duplicates a row;
- `round_trips` counts statements/requests sent, so benchmarks can check the above.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable
from uuid import UUID

from tam.job_transitions import JobGuard
from tam.models import (
    Company,
    Contact,
    ContactUpdate,
    Job,
    JobStatus,
    JobUpdate,
    NewCompany,
    NewContact,
    Project,
    ProjectStatus,
    QualificationResult,
    QualificationStatus,
)


class StoreError(Exception):
    """The database could not be reached or refused a statement."""


class NotFoundInStore(StoreError):
    pass


class RowRejected(StoreError):
    """The database refused the data itself (SQLSTATE class 22 data exception or 23
    integrity violation): sending the same rows again fails the same way, so this is never
    an outage. A batch writer isolates the offending row(s) and writes the rest.

    `reason` is short and holds no row values (fit for a company's qualification_reason);
    `code` is the SQLSTATE when the database gave one.
    """

    def __init__(self, message: str, *, reason: str, code: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code


# SQLSTATE classes of errors that depend on the data sent, not on the database's health.
ROW_REJECTED_CLASSES = ("22", "23")


def short_reason(message: str, limit: int = 160) -> str:
    """The first line of a database message, without its DETAIL (which quotes the row)."""
    first = message.strip().splitlines()[0] if message.strip() else "rejected by the database"
    first = first.split(" DETAIL:", 1)[0].strip()
    return first if len(first) <= limit else first[: limit - 1] + "…"


@runtime_checkable
class Store(Protocol):
    round_trips: int

    async def init_schema(self) -> None:
        """Create the tables/indexes if missing (no-op for Supabase REST)."""

    async def close(self) -> None: ...

    # --- projects -------------------------------------------------------------------------
    async def create_project(self, project: Project) -> Project: ...

    async def get_project(self, project_id: UUID) -> Project:
        """Raises NotFoundInStore."""
        ...

    async def set_project_status(self, project_id: UUID, status: ProjectStatus) -> None: ...

    def iter_projects(self, *, page_size: int = 500) -> AsyncIterator[list[Project]]: ...

    async def set_auto_refine(self, project_id: UUID, enabled: bool) -> None:
        """Opt the project in or out of the scheduled refine (`tam_projects.auto_refine`).
        Raises NotFoundInStore."""

    def iter_auto_refine_projects(self, *, page_size: int = 500) -> AsyncIterator[list[Project]]:
        """Projects with `auto_refine = true`, paginated."""
        ...

    # --- companies ------------------------------------------------------------------------
    async def upsert_companies(self, companies: Sequence[NewCompany]) -> list[Company]:
        """Insert new companies; a (project, domain) that exists keeps its row, id,
        qualification and feedback (only empty descriptive fields are filled in).
        Returns the rows that were newly inserted."""
        ...

    def iter_companies(
        self,
        project_id: UUID,
        *,
        status: QualificationStatus | None = None,
        feedback: str | None = None,
        with_domain: bool = False,
        ids: Sequence[UUID] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Company]]: ...

    async def existing_domains(self, project_id: UUID) -> set[str]: ...

    async def save_qualifications(self, results: Sequence[QualificationResult]) -> None:
        """Write status + reason (+ raw_data.qualification) for many companies at once."""

    async def count_companies(self, project_id: UUID) -> dict[str, int]:
        """{'pending': n, 'qualified': n, 'disqualified': n, 'needs_review': n, 'total': n}."""
        ...

    # --- contacts -------------------------------------------------------------------------
    async def upsert_contacts(self, contacts: Sequence[NewContact]) -> list[Contact]:
        """Insert contacts; an existing (project, linkedin_url) keeps its row and any email
        already found. Returns the newly inserted rows."""
        ...

    async def update_contacts(self, updates: Sequence[ContactUpdate]) -> None: ...

    def iter_contacts(
        self,
        project_id: UUID,
        *,
        company_ids: Sequence[UUID] | None = None,
        with_linkedin: bool = False,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]: ...

    def iter_contacts_to_check(
        self,
        project_id: UUID,
        *,
        checked_before: datetime | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]:
        """Contacts with a linkedin_url whose LinkedIn activity was never checked, or (with
        `checked_before`) last checked before that time."""
        ...

    # --- jobs -----------------------------------------------------------------------------
    async def create_job(
        self, project_id: UUID, job_type: str, *, job_id: UUID | None = None
    ) -> Job: ...

    async def get_job(self, job_id: UUID) -> Job:
        """Raises NotFoundInStore."""
        ...

    async def update_job(
        self,
        job_id: UUID,
        update: JobUpdate,
        *,
        only_if_status: Sequence[JobStatus] = (),
        guard: JobGuard | None = None,
    ) -> bool:
        """Apply the set fields. With `guard` (tam.job_transitions), only when the row meets
        it; `only_if_status` is the plain guard "status is one of them". Either is a
        compare-and-set in the same statement, so a late writer cannot overwrite a state
        another writer set meanwhile. Returns whether a row changed."""
        ...

    async def clear_job_result(self, job_id: UUID) -> None:
        """Set result_summary and completed_at back to NULL (a re-run starts clean)."""

    async def list_jobs(
        self,
        *,
        status: Sequence[JobStatus] = (),
        heartbeat_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Job]: ...
