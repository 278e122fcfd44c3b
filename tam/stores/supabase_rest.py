"""SupabaseRestStore: the Store protocol over Supabase's REST API (PostgREST), service role.

For hosts that can reach Supabase over HTTPS but not its Postgres ports. PostgREST has no
multi-row UPDATE with a value per row, so a batch that changes existing rows is one read
of the rows it touches plus one upsert (`Prefer: resolution=merge-duplicates`) carrying
their NOT NULL columns back: two round trips per batch, never one per row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from tam.job_transitions import JobGuard, RowCondition
from tam.models import (
    NEEDS_REVIEW_PREFIX,
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
from tam.stores.base import NotFoundInStore, StoreError
from tam.stores.sql_rows import company_key, contact_key, merge_in_batch
from tam.stores.sql_statements import COMPANY_FILL, CONTACT_FILL
from tam.stores.supabase_io import (
    PostgrestTables,
    as_json,
    coalesce,
    supabase_api_url,
    to_model,
    utc_iso,
)

PROJECTS, COMPANIES = "tam_projects", "tam_companies"
CONTACTS, JOBS = "tam_contacts", "tam_job_queue"

__all__ = ["SupabaseRestStore", "supabase_api_url"]


class SupabaseRestStore(PostgrestTables):
    """The Store on supabase-py's PostgREST client with the service-role key."""

    def __repr__(self) -> str:
        return f"SupabaseRestStore({self.url!r})"

    # --- lifecycle ------------------------------------------------------------------------
    async def init_schema(self) -> None:
        """Supabase's schema comes from supabase/migrations; check that it is there."""
        try:
            await self.rows(self.table(JOBS).select("id,flow_run_id,heartbeat_at").limit(1))
        except StoreError as exc:
            raise StoreError(
                f"{exc}. Apply supabase/migrations first (supabase db push, or psql -f)."
            ) from exc

    async def close(self) -> None:
        await self._http.aclose()

    # --- projects -------------------------------------------------------------------------
    async def create_project(self, project: Project) -> Project:
        row = as_json(project, created_at=utc_iso(project.created_at or datetime.now(UTC)))
        if project.user_id is None:
            del row["user_id"]  # NOTE: so the column's default (auth.uid()) applies
        inserted = await self.upsert(PROJECTS, [row], "id", ignore=True)
        return to_model(Project, inserted[0]) if inserted else await self.get_project(project.id)

    async def get_project(self, project_id: UUID) -> Project:
        rows = await self.rows(self.table(PROJECTS).select("*").eq("id", str(project_id)))
        if not rows:
            raise NotFoundInStore(f"project {project_id} not found")
        return to_model(Project, rows[0])

    async def _update_project(self, project_id: UUID, values: dict[str, Any]) -> None:
        query = self.table(PROJECTS).update(values).eq("id", str(project_id))
        if not await self.rows(query):
            raise NotFoundInStore(f"project {project_id} not found")

    async def set_project_status(self, project_id: UUID, status: ProjectStatus) -> None:
        await self._update_project(project_id, {"status": status.value})

    async def set_auto_refine(self, project_id: UUID, enabled: bool) -> None:
        await self._update_project(project_id, {"auto_refine": enabled})

    async def iter_projects(self, *, page_size: int = 500) -> AsyncIterator[list[Project]]:
        async for rows in self.pages(lambda: self.table(PROJECTS).select("*"), page_size):
            yield [to_model(Project, row) for row in rows]

    async def iter_auto_refine_projects(
        self, *, page_size: int = 500
    ) -> AsyncIterator[list[Project]]:
        build = lambda: self.table(PROJECTS).select("*").eq("auto_refine", True)  # noqa: E731
        async for rows in self.pages(build, page_size):
            yield [to_model(Project, row) for row in rows]

    # --- companies ------------------------------------------------------------------------
    async def upsert_companies(self, companies: Sequence[NewCompany]) -> list[Company]:
        items = merge_in_batch(companies, company_key)
        now = utc_iso(datetime.now(UTC))
        rows = [as_json(c, id=str(uuid4()), created_at=now) for c in items]
        inserted = await self.upsert(COMPANIES, rows, "project_id,domain", ignore=True)
        new_ids = {row["id"] for row in inserted}
        # Rows without a domain never conflict; the others were taken by an existing row.
        taken = [row for row in rows if row["id"] not in new_ids and row["domain"]]
        if taken:
            await self._fill_companies(taken)
        proposed = {row["id"] for row in rows}
        return [to_model(Company, row) for row in inserted if row["id"] in proposed]

    async def _fill_companies(self, incoming: list[dict[str, Any]]) -> None:
        """Existing (project, domain) rows take the descriptive fields they lack."""

        def merge(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
            return coalesce(stored, new, COMPANY_FILL)

        columns = ("project_id", "domain", "name", *COMPANY_FILL)
        await self.fill(COMPANIES, "domain", incoming, columns, merge)

    def _companies(self, project_id: UUID) -> Any:
        return self.table(COMPANIES).select("*").eq("project_id", str(project_id))

    async def iter_companies(
        self,
        project_id: UUID,
        *,
        status: QualificationStatus | None = None,
        feedback: str | None = None,
        with_domain: bool = False,
        ids: Sequence[UUID] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Company]]:
        def build() -> Any:
            query = self._companies(project_id)
            if status is not None:
                query = query.eq("qualification_status", status.value)
            if feedback is not None:
                query = query.eq("feedback", feedback)
            if with_domain:
                query = query.not_.is_("domain", "null").neq("domain", "")
            return query

        async for rows in self.pages_by_ids(build, "id", ids, page_size):
            yield [to_model(Company, row) for row in rows]

    async def existing_domains(self, project_id: UUID) -> set[str]:
        build = (  # noqa: E731
            lambda: (
                self.table(COMPANIES)
                .select("id,domain")
                .eq("project_id", str(project_id))
                .not_.is_("domain", "null")
            )
        )
        return {row["domain"] async for rows in self.pages(build, self.max_rows) for row in rows}

    async def save_qualifications(self, results: Sequence[QualificationResult]) -> None:
        latest = {str(r.company_id): r for r in results}
        if not latest:
            return
        stored = await self.read_by_ids(COMPANIES, "id,project_id,name,raw_data", list(latest))
        rows = []
        for row in stored:
            result = latest[row["id"]]
            raw = {**(row.get("raw_data") or {}), "qualification": result.raw}
            rows.append(
                {
                    **row,
                    "qualification_status": result.status.value,
                    "qualification_reason": result.reason,
                    "raw_data": raw,
                }
            )
        await self.upsert(COMPANIES, rows, "id")

    async def count_companies(self, project_id: UUID) -> dict[str, int]:
        """One exact count per figure (HEAD requests): PostgREST has no GROUP BY by default."""

        def of_project() -> Any:
            return self.counting(COMPANIES).eq("project_id", str(project_id))

        counts = {
            status.value: await self.count(of_project().eq("qualification_status", status.value))
            for status in QualificationStatus
        }
        pending = of_project().eq("qualification_status", QualificationStatus.pending.value)
        needs_review = pending.like("qualification_reason", f"{NEEDS_REVIEW_PREFIX}*")
        counts["needs_review"] = await self.count(needs_review)
        counts["total"] = await self.count(of_project())
        return counts

    # --- contacts -------------------------------------------------------------------------
    async def upsert_contacts(self, contacts: Sequence[NewContact]) -> list[Contact]:
        items = merge_in_batch(contacts, contact_key)
        now = utc_iso(datetime.now(UTC))
        rows = [as_json(c, id=str(uuid4()), created_at=now) for c in items]
        inserted = await self.upsert(CONTACTS, rows, "project_id,linkedin_url", ignore=True)
        new_ids = {row["id"] for row in inserted}
        taken = [row for row in rows if row["id"] not in new_ids]
        if taken:
            await self._fill_contacts(taken)
        proposed = {row["id"] for row in rows}
        return [to_model(Contact, row) for row in inserted if row["id"] in proposed]

    async def _fill_contacts(self, incoming: list[dict[str, Any]]) -> None:
        """Existing (project, linkedin_url) rows take what they lack; a found email stays,
        with its status (it may have been paid for)."""

        def merge(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
            merged = coalesce(stored, new, (*CONTACT_FILL, "email"))
            if stored["email"] is not None:
                merged["email_status"] = stored["email_status"]
            else:
                merged["email_status"] = new["email_status"] or stored["email_status"]
            return merged

        columns = ("project_id", "company_id", "linkedin_url", "email", *CONTACT_FILL)
        await self.fill(CONTACTS, "linkedin_url", incoming, columns, merge)

    async def update_contacts(self, updates: Sequence[ContactUpdate]) -> None:
        """Set the fields that are not None; one upsert per set of fields being changed."""
        values = {
            str(u.contact_id): u.model_dump(mode="json", exclude_none=True, exclude={"contact_id"})
            for u in updates
        }
        values = {cid: fields for cid, fields in values.items() if fields}
        if not values:
            return
        stored = await self.read_by_ids(CONTACTS, "id,company_id,project_id", list(values))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in stored:
            fields = values[row["id"]]
            groups.setdefault(tuple(sorted(fields)), []).append({**row, **fields})
        for rows in groups.values():
            await self.upsert(CONTACTS, rows, "id")

    def _contacts(self, project_id: UUID) -> Any:
        return self.table(CONTACTS).select("*").eq("project_id", str(project_id))

    async def iter_contacts(
        self,
        project_id: UUID,
        *,
        company_ids: Sequence[UUID] | None = None,
        with_linkedin: bool = False,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]:
        def build() -> Any:
            query = self._contacts(project_id)
            if with_linkedin:
                query = query.not_.is_("linkedin_url", "null").neq("linkedin_url", "")
            return query

        async for rows in self.pages_by_ids(build, "company_id", company_ids, page_size):
            yield [to_model(Contact, row) for row in rows]

    async def iter_contacts_to_check(
        self,
        project_id: UUID,
        *,
        checked_before: datetime | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]:
        def build() -> Any:
            query = self._contacts(project_id).not_.is_("linkedin_url", "null")
            query = query.neq("linkedin_url", "")
            if checked_before is None:
                return query.is_("linkedin_checked_at", "null")
            cutoff = utc_iso(checked_before)
            return query.or_(f'linkedin_checked_at.is.null,linkedin_checked_at.lt."{cutoff}"')

        async for rows in self.pages(build, page_size):
            yield [to_model(Contact, row) for row in rows]

    # --- jobs -----------------------------------------------------------------------------
    async def create_job(
        self, project_id: UUID, job_type: str, *, job_id: UUID | None = None
    ) -> Job:
        job_id = job_id or uuid4()
        row = {
            "id": str(job_id),
            "project_id": str(project_id),
            "job_type": str(job_type),
            "status": JobStatus.pending.value,
            "progress": 0,
            "attempt": 0,
            "created_at": utc_iso(datetime.now(UTC)),
        }
        inserted = await self.upsert(JOBS, [row], "id", ignore=True)
        return to_model(Job, inserted[0]) if inserted else await self.get_job(job_id)

    async def get_job(self, job_id: UUID) -> Job:
        rows = await self.rows(self.table(JOBS).select("*").eq("id", str(job_id)))
        if not rows:
            raise NotFoundInStore(f"job {job_id} not found")
        return to_model(Job, rows[0])

    async def update_job(
        self,
        job_id: UUID,
        update: JobUpdate,
        *,
        only_if_status: Sequence[JobStatus] = (),
        guard: JobGuard | None = None,
    ) -> bool:
        values = update.changes(mode="json")
        if not values:
            return False
        query = self.table(JOBS).update(values).eq("id", str(job_id))
        if only_if_status:
            guard = guard or JobGuard.statuses(only_if_status)
        if guard is not None:
            # One conditional PATCH: the check and the write cannot be interleaved.
            query = query.or_(",".join(_row_condition(c) for c in guard.any_of) or "id.is.null")
        return bool(await self.rows(query))

    async def clear_job_result(self, job_id: UUID) -> None:
        await self.update_job(job_id, JobUpdate(clear_result=True))

    async def list_jobs(
        self,
        *,
        status: Sequence[JobStatus] = (),
        heartbeat_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Job]:
        def build() -> Any:
            query = self.table(JOBS).select("*")
            if status:
                query = query.in_("status", [JobStatus(s).value for s in status])
            if heartbeat_before is not None:
                at = utc_iso(heartbeat_before)
                query = query.or_(
                    # NOTE: quoted: a timestamp holds ':' and '.', reserved in PostgREST's
                    # logic-tree syntax.
                    f'heartbeat_at.lt."{at}",'
                    f'and(heartbeat_at.is.null,started_at.lt."{at}"),'
                    f'and(heartbeat_at.is.null,started_at.is.null,created_at.lt."{at}")'
                )
            return query.order("created_at").order("id")

        jobs: list[Job] = []
        # Offset pages (`.range`) are fine here: a bounded list in a fixed order.
        while len(jobs) < limit:
            size = min(self.max_rows, limit - len(jobs))
            rows = await self.rows(build().range(len(jobs), len(jobs) + size - 1))
            jobs += [to_model(Job, row) for row in rows]
            if len(rows) < size:
                break
        return jobs


def _row_condition(condition: RowCondition) -> str:
    """One guard condition as a PostgREST logic tree, `and(...)`."""
    statuses = ",".join(sorted(s.value for s in condition.statuses))
    parts = [f"status.in.({statuses})"]
    if condition.check_run:
        run = condition.flow_run_id
        parts.append("flow_run_id.is.null" if run is None else f"flow_run_id.eq.{run}")
    if condition.started is not None:
        parts.append("started_at.not.is.null" if condition.started else "started_at.is.null")
    if condition.dispatch_failed:
        parts.append("result_summary->>dispatch.eq.true")
    if condition.stale_before is not None:
        at = utc_iso(condition.stale_before)
        # NOTE: quoted: a timestamp holds ':' and '.', reserved in the logic-tree syntax.
        parts.append(
            f'or(heartbeat_at.lt."{at}",and(heartbeat_at.is.null,started_at.lt."{at}"),'
            f'and(heartbeat_at.is.null,started_at.is.null,created_at.lt."{at}"))'
        )
    return f"and({','.join(parts)})"
