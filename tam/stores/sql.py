"""SqlStore: the Store protocol on SQLAlchemy async, for a SQLite file or any Postgres.

Round trips are the cost that matters on Supabase (every one crosses the internet), so:
- a write that is one statement runs in autocommit (no BEGIN/COMMIT around it);
- several statements or an executemany run in one transaction, committed once;
- reads run in autocommit and page by id, one statement per page.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa

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
from tam.schema import companies as company_table
from tam.schema import contacts as contact_table
from tam.schema import ensure_schema, jobs, projects
from tam.stores import sql_statements as sql
from tam.stores.base import NotFoundInStore
from tam.stores.sql_engine import ErrorMapper, count_round_trips, engine_spec, redact_url
from tam.stores.sql_rows import (
    chunked,
    company_key,
    company_rows,
    contact_key,
    contact_rows,
    merge_in_batch,
    plain,
    to_model,
    utcnow,
)

# NOTE: 500 rows x 17 columns stays far below SQLite's 32,766 bound parameters and
# Postgres's 65,535, and keeps one statement's payload modest over a slow link.
WRITE_CHUNK_ROWS = 500
MAX_IDS_PER_QUERY = 1000

# pg_advisory_xact_lock key that serializes init_schema across processes ("tam_sch" in ASCII).
SCHEMA_LOCK_KEY = 0x74616D5F736368

# How long a cancelled caller waits for its statements to finish (see SqlStore._execute).
CANCEL_GRACE_S = 10.0
_FINISHING: set[asyncio.Future[Any]] = set()


@dataclass
class _Outcome:
    rows: list[sa.Row[Any]] = field(default_factory=list)
    rowcount: int = 0


_Step = tuple[sa.Executable, list[dict[str, Any]] | None]
_Builder = Callable[[str, Sequence[dict[str, Any]]], sa.Executable]


class SqlStore:
    """The Store on SQLite (embedded default) or Postgres, Supabase's poolers included."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 5,
        write_chunk_rows: int = WRITE_CHUNK_ROWS,
    ) -> None:
        spec = engine_spec(url, pool_size=pool_size, max_overflow=max_overflow)
        self.url = redact_url(url)
        self.dialect = spec.dialect
        self.round_trips = 0
        self._chunk = write_chunk_rows
        self._errors = ErrorMapper(self.url, spec.password)
        self._engine = spec.create()
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        count_round_trips(self._engine, self._bump, pings=False)

    def _bump(self) -> None:
        self.round_trips += 1

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def init_schema(self) -> None:
        """Create missing tables, columns and indexes (see tam.schema.ensure_schema).

        On Supabase, apply supabase/migrations instead: it also sets RLS and constraints.

        Several processes may do this at once on a new database (the webhook and `tam serve`
        starting together): each checks and creates inside one transaction that holds a
        database-wide lock, so they take turns and every one after the first finds the
        schema there. Checking without the lock, two of them both saw a table missing and
        the second CREATE TABLE failed ("table tam_contacts already exists").
        """
        with self._errors:
            async with self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    # NOTE: a transaction-scoped lock: released by COMMIT/ROLLBACK, so it also
                    # works through a transaction-mode pooler (Supabase's port 6543).
                    lock = sa.func.pg_advisory_xact_lock(sa.literal(SCHEMA_LOCK_KEY, sa.BigInteger))
                    await conn.execute(sa.select(lock))
                else:
                    # The write lock up front (waits out another process's, up to the busy
                    # timeout), not at the first CREATE after this one looked.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                await conn.run_sync(ensure_schema)

    async def close(self) -> None:
        await self._engine.dispose()

    # --- plumbing -------------------------------------------------------------------------
    async def _execute(self, steps: Sequence[_Step]) -> _Outcome:
        """Run the steps to the end even when the caller is cancelled.

        A statement cut off by a cancellation leaves its connection checked out mid-
        transaction: on SQLite its write lock then blocks every other write for the whole
        busy timeout (30 s, measured), on Postgres its row locks stay until the connection
        is collected. So the work runs in its own task; a cancelled caller waits for it (a
        statement, normally milliseconds, at most `CANCEL_GRACE_S`) and is cancelled after.
        """
        work = asyncio.ensure_future(self._execute_retrying(steps))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            _FINISHING.add(work)  # the loop keeps only weak references to tasks
            work.add_done_callback(_FINISHING.discard)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(work), CANCEL_GRACE_S)
            raise

    async def _execute_retrying(self, steps: Sequence[_Step]) -> _Outcome:
        with self._errors:
            try:
                return await self._execute_once(steps)
            except sa.exc.DBAPIError as exc:
                # NOTE: instead of pinging on every checkout (a round trip each time), a
                # connection the server dropped (restart, pooler recycle) is noticed when
                # used, discarded by the pool, and the statements run once more on a fresh
                # one. Every write here is an upsert or a keyed update, so a retry is safe.
                if not exc.connection_invalidated:
                    raise
                return await self._execute_once(steps)

    async def _execute_once(self, steps: Sequence[_Step]) -> _Outcome:
        atomic = len(steps) > 1 or any(params is not None for _, params in steps)
        outcome = _Outcome()
        engine = self._engine if atomic else self._autocommit
        async with engine.connect() as conn:
            for statement, params in steps:
                result = await conn.execute(statement, params)
                if result.returns_rows:
                    outcome.rows.extend(result.all())
                outcome.rowcount += max(result.rowcount, 0)
            if atomic:
                await conn.commit()
        return outcome

    async def _read(self, statement: sa.Executable) -> list[sa.Row[Any]]:
        return (await self._execute([(statement, None)])).rows

    async def _pages(
        self, query: sa.Select[Any], key: sa.ColumnElement[Any], page_size: int
    ) -> AsyncIterator[list[sa.Row[Any]]]:
        """Keyset pagination: `key > last` ORDER BY key LIMIT page_size, until a short page."""
        last: Any = None
        while True:
            page = query if last is None else query.where(key > last)
            rows = await self._read(page.order_by(key).limit(page_size))
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            last = rows[-1]._mapping[key]

    async def _pages_by_ids(
        self,
        query: sa.Select[Any],
        key: sa.ColumnElement[Any],
        filter_column: sa.ColumnElement[Any],
        ids: Sequence[UUID] | None,
        page_size: int,
    ) -> AsyncIterator[list[sa.Row[Any]]]:
        if ids is None:
            async for rows in self._pages(query, key, page_size):
                yield rows
            return
        for some in chunked(sorted(set(ids)), MAX_IDS_PER_QUERY):
            async for rows in self._pages(query.where(filter_column.in_(some)), key, page_size):
                yield rows

    async def _write_chunks(self, build: _Builder, rows: list[dict[str, Any]]) -> _Outcome:
        """One statement per chunk of rows; several chunks share one transaction."""
        steps: list[_Step] = [(build(self.dialect, c), None) for c in chunked(rows, self._chunk)]
        return await self._execute(steps) if steps else _Outcome()

    # --- projects -------------------------------------------------------------------------
    async def create_project(self, project: Project) -> Project:
        """Insert the project; an id that exists already is returned as stored."""
        values = {
            "id": project.id,
            "name": project.name,
            "status": plain(project.status),
            "icp_profile": project.icp_profile,
            "created_at": project.created_at or utcnow(),
        }
        if project.user_id is not None:
            # NOTE: only when known, so Supabase's `default auth.uid()` applies otherwise.
            values["user_id"] = project.user_id
        statement = (
            sql.insert(self.dialect, projects)
            .values(values)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(*projects.c)
        )
        rows = await self._read(statement)
        return to_model(Project, rows[0]) if rows else await self.get_project(project.id)

    async def get_project(self, project_id: UUID) -> Project:
        rows = await self._read(sa.select(projects).where(projects.c.id == project_id))
        if not rows:
            raise NotFoundInStore(f"project {project_id} not found")
        return to_model(Project, rows[0])

    async def set_project_status(self, project_id: UUID, status: ProjectStatus) -> None:
        statement = (
            sa.update(projects).where(projects.c.id == project_id).values(status=plain(status))
        )
        if (await self._execute([(statement, None)])).rowcount == 0:
            raise NotFoundInStore(f"project {project_id} not found")

    async def iter_projects(self, *, page_size: int = 500) -> AsyncIterator[list[Project]]:
        async for rows in self._pages(sa.select(projects), projects.c.id, page_size):
            yield [to_model(Project, row) for row in rows]

    async def set_auto_refine(self, project_id: UUID, enabled: bool) -> None:
        statement = (
            sa.update(projects).where(projects.c.id == project_id).values(auto_refine=enabled)
        )
        if (await self._execute([(statement, None)])).rowcount == 0:
            raise NotFoundInStore(f"project {project_id} not found")

    async def iter_auto_refine_projects(
        self, *, page_size: int = 500
    ) -> AsyncIterator[list[Project]]:
        query = sa.select(projects).where(projects.c.auto_refine.is_(True))
        async for rows in self._pages(query, projects.c.id, page_size):
            yield [to_model(Project, row) for row in rows]

    # --- companies ------------------------------------------------------------------------
    async def upsert_companies(self, companies: Sequence[NewCompany]) -> list[Company]:
        rows = company_rows(merge_in_batch(companies, company_key), now=utcnow())
        return _new_rows(Company, rows, await self._write_chunks(sql.upsert_companies, rows))

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
        c = company_table.c
        query = sa.select(company_table).where(c.project_id == project_id)
        if status is not None:
            query = query.where(c.qualification_status == plain(status))
        if feedback is not None:
            query = query.where(c.feedback == feedback)
        if with_domain:
            query = query.where(c.domain.is_not(None), c.domain != "")
        async for rows in self._pages_by_ids(query, c.id, c.id, ids, page_size):
            yield [to_model(Company, row) for row in rows]

    async def existing_domains(self, project_id: UUID) -> set[str]:
        c = company_table.c
        query = sa.select(c.id, c.domain).where(c.project_id == project_id, c.domain.is_not(None))
        domains: set[str] = set()
        async for rows in self._pages(query, c.id, 1000):
            domains.update(row.domain for row in rows)
        return domains

    async def save_qualifications(self, results: Sequence[QualificationResult]) -> None:
        """Set status and reason; raw_data["qualification"] becomes `raw`, other keys stay."""
        latest = {result.company_id: result for result in results}
        if not latest:
            return
        statement = sql.save_qualification(self.dialect)
        params = [
            {
                "b_id": r.company_id,
                "b_status": plain(r.status),
                "b_reason": r.reason,
                "b_raw": r.raw,
            }
            for r in latest.values()
        ]
        await self._execute([(statement, chunk) for chunk in _lists(params, self._chunk)])

    async def count_companies(self, project_id: UUID) -> dict[str, int]:
        counts = {status.value: 0 for status in QualificationStatus}
        counts.update(needs_review=0, total=0)
        for row in await self._read(sql.count_companies(project_id)):
            counts[row.qualification_status] = counts.get(row.qualification_status, 0) + row.n
            counts["needs_review"] += row.needs_review
            counts["total"] += row.n
        return counts

    # --- contacts -------------------------------------------------------------------------
    async def upsert_contacts(self, contacts: Sequence[NewContact]) -> list[Contact]:
        rows = contact_rows(merge_in_batch(contacts, contact_key), now=utcnow())
        return _new_rows(Contact, rows, await self._write_chunks(sql.upsert_contacts, rows))

    async def update_contacts(self, updates: Sequence[ContactUpdate]) -> None:
        """Set the fields that are not None (None never clears a stored value).

        One statement for the whole batch, whichever fields each update sets: a field an
        update leaves out is bound as NULL and kept by COALESCE."""
        rows = [
            (update.contact_id, update.model_dump(exclude_none=True, exclude={"contact_id"}))
            for update in updates
        ]
        rows = [(contact_id, values) for contact_id, values in rows if values]
        if not rows:
            return
        names = sorted({name for _, values in rows for name in values})
        params_list = [
            {"b_contact_id": contact_id} | {f"b_{name}": plain(values.get(name)) for name in names}
            for contact_id, values in rows
        ]
        statement = sql.update_contact_fields(names)
        await self._execute([(statement, chunk) for chunk in _lists(params_list, self._chunk)])

    async def iter_contacts(
        self,
        project_id: UUID,
        *,
        company_ids: Sequence[UUID] | None = None,
        with_linkedin: bool = False,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]:
        c = contact_table.c
        query = sa.select(contact_table).where(c.project_id == project_id)
        if with_linkedin:
            query = query.where(c.linkedin_url.is_not(None), c.linkedin_url != "")
        async for rows in self._pages_by_ids(query, c.id, c.company_id, company_ids, page_size):
            yield [to_model(Contact, row) for row in rows]

    async def iter_contacts_to_check(
        self,
        project_id: UUID,
        *,
        checked_before: datetime | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Contact]]:
        c = contact_table.c
        query = sa.select(contact_table).where(
            c.project_id == project_id, sql.linkedin_check_due(checked_before)
        )
        async for rows in self._pages(query, c.id, page_size):
            yield [to_model(Contact, row) for row in rows]

    # --- jobs -----------------------------------------------------------------------------
    async def create_job(
        self, project_id: UUID, job_type: str, *, job_id: UUID | None = None
    ) -> Job:
        """Insert a pending job; an id that exists already is returned as stored."""
        job_id = job_id or uuid4()
        statement = (
            sql.insert(self.dialect, jobs)
            .values(
                id=job_id,
                project_id=project_id,
                job_type=plain(job_type),
                status=JobStatus.pending.value,
                progress=0,
                attempt=0,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(*jobs.c)
        )
        rows = await self._read(statement)
        return to_model(Job, rows[0]) if rows else await self.get_job(job_id)

    async def get_job(self, job_id: UUID) -> Job:
        rows = await self._read(sa.select(jobs).where(jobs.c.id == job_id))
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
        values = {k: plain(v) for k, v in update.changes().items()}
        if not values:
            return False
        statement = sa.update(jobs).where(jobs.c.id == job_id).values(values)
        if only_if_status:
            guard = guard or JobGuard.statuses(only_if_status)
        if guard is not None:
            # One conditional UPDATE: the check and the write cannot be interleaved.
            statement = statement.where(sql.job_guard(guard))
        return (await self._execute([(statement, None)])).rowcount > 0

    async def clear_job_result(self, job_id: UUID) -> None:
        await self.update_job(job_id, JobUpdate(clear_result=True))

    async def list_jobs(
        self,
        *,
        status: Sequence[JobStatus] = (),
        heartbeat_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Job]:
        c = jobs.c
        query = sa.select(jobs)
        if status:
            query = query.where(c.status.in_([plain(s) for s in status]))
        if heartbeat_before is not None:
            query = query.where(sql.heartbeat_before(heartbeat_before))
        rows = await self._read(query.order_by(c.created_at, c.id).limit(limit))
        return [to_model(Job, row) for row in rows]


def _lists(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(chunk) for chunk in chunked(items, size)]


def _new_rows(model: type[Any], sent: list[dict[str, Any]], outcome: _Outcome) -> list[Any]:
    """The returned rows that carry an id we proposed: those were inserted, not merged.

    NOTE: this tells inserts from merges in the same statement on both SQLite and
    Postgres (no xmax trick, no read-before-write race): a merged row keeps its old id.
    """
    proposed = {row["id"] for row in sent}
    return [to_model(model, row) for row in outcome.rows if row.id in proposed]
