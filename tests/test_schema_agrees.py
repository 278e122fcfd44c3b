"""The Supabase migration and tam/schema.py describe the same tables, and the migration is safe.

The migration must also upgrade a Supabase that already holds the app's original tables, and
neither a browser role nor a signed-in stranger may read or write a project's rows (what an
owner may do is tests/test_rls_tenancy.py's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from tam.models import JobStatus, JobUpdate, NewCompany
from tam.stores import open_store
from tests.fixtures.supabase import (
    apply_migrations,
    as_role,
    run_sql,
)

pytestmark = pytest.mark.postgres

TABLES = ["tam_projects", "tam_companies", "tam_contacts", "tam_job_queue"]

# The app's tables as they stood before this product: only the columns docs/contracts.md,
# "Tables", lists as the app's,
# and a job status check (under a name of its own) that does not allow 'cancelled'.
ORIGINAL_TABLES = """
create table tam_projects (
  id uuid primary key default gen_random_uuid(), name text not null, status text default 'sourcing',
  icp_profile jsonb, created_at timestamptz default now());
create table tam_companies (
  id uuid primary key default gen_random_uuid(),
  project_id uuid references tam_projects(id) on delete cascade,
  name text, domain text, linkedin_url text, source text, industry text, employee_count text,
  location text, description text, digital_footprint_score double precision,
  similarity_score double precision, qualification_status text default 'pending'
    check (qualification_status in ('pending', 'qualified', 'disqualified')),
  qualification_reason text, feedback text, raw_data jsonb, created_at timestamptz default now());
create table tam_contacts (
  id uuid primary key default gen_random_uuid(),
  company_id uuid references tam_companies(id) on delete cascade,
  project_id uuid references tam_projects(id) on delete cascade,
  first_name text, last_name text, title text, linkedin_url text, email text, email_status text,
  phone text, source text, raw_data jsonb, linkedin_last_post_date timestamptz,
  linkedin_active boolean, created_at timestamptz default now());
create table tam_job_queue (
  id uuid primary key default gen_random_uuid(),
  project_id uuid references tam_projects(id) on delete cascade,
  job_type text, status text default 'pending', progress integer default 0,
  result_summary jsonb, created_at timestamptz default now(), completed_at timestamptz,
  constraint job_status_is_known check (status in ('pending', 'running', 'completed', 'failed')));
"""

NEW_COLUMNS = {
    ("tam_projects", "user_id"),
    ("tam_contacts", "linkedin_checked_at"),
    *(
        ("tam_job_queue", name)
        for name in (
            "flow_run_id",
            "current_step",
            "started_at",
            "heartbeat_at",
            "done_count",
            "total_count",
            "cost_usd",
            "attempt",
        )
    ),
}


@pytest.fixture
def database(supabase_database: Callable[[], str]) -> Callable[[], str]:
    """A factory of fresh Supabase-like databases (auth.uid(), roles, default grants)."""
    return supabase_database


async def create_with_store(url: str) -> None:
    store = open_store(url)
    await store.init_schema()
    await store.close()


def columns(url: str) -> set[tuple[Any, ...]]:
    """(table, column, data type, nullable, default) of every app column."""
    return {
        tuple(row)
        for row in run_sql(
            url,
            """select table_name, column_name, data_type, is_nullable, column_default
               from information_schema.columns
               where table_schema = 'public' and table_name = any(%s)""",
            (TABLES,),
        )
    }


def indexes(url: str) -> set[tuple[str, str, str]]:
    return {
        (row[0], row[1], row[2])
        for row in run_sql(
            url,
            "select tablename, indexname, indexdef from pg_indexes "
            "where schemaname = 'public' and tablename = any(%s)",
            (TABLES,),
        )
    }


def constraints(url: str) -> set[tuple[str, str, str]]:
    return {
        (row[0], row[1], row[2])
        for row in run_sql(
            url,
            "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "from pg_constraint where conrelid::regclass::text = any(%s)",
            (TABLES,),
        )
    }


def grants(url: str) -> set[tuple[Any, ...]]:
    return {
        tuple(row)
        for row in run_sql(
            url,
            "select table_name, column_name, grantee, privilege_type "
            "from information_schema.column_privileges "
            "where table_schema = 'public' and table_name = any(%s) "
            "union select table_name, null, grantee, privilege_type "
            "from information_schema.table_privileges "
            "where table_schema = 'public' and table_name = any(%s)",
            (TABLES, TABLES),
        )
    }


def snapshot(url: str) -> dict[str, Any]:
    policies = run_sql(
        url,
        "select tablename, policyname, cmd, roles::text, qual, with_check from pg_policies "
        "where tablename = any(%s)",
        (TABLES,),
    )
    rls = run_sql(
        url, "select relname, relrowsecurity from pg_class where relname = any(%s)", (TABLES,)
    )
    return {
        "columns": columns(url),
        "indexes": indexes(url),
        "constraints": constraints(url),
        "policies": set(policies),
        "rls": set(rls),
        "grants": grants(url),
    }


def without_owner_default(found: set[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """The one intended difference: on Supabase a new project's owner defaults to the caller
    (auth.uid()); the embedded schema has no auth schema, and its writer passes the owner."""
    owner = ("tam_projects", "user_id", "uuid", "YES", "auth.uid()")
    assert owner in found, "the migration must give tam_projects.user_id default auth.uid()"
    return (found - {owner}) | {(*owner[:4], None)}


async def test_migration_and_schema_py_agree(database: Any) -> None:
    migrated, created = database(), database()
    apply_migrations(migrated)
    await create_with_store(created)

    assert without_owner_default(columns(migrated)) == columns(created)
    assert indexes(migrated) == indexes(created)
    assert constraints(migrated) == constraints(created)

    unique = {(t, d.split(" USING btree ")[1]) for t, _, d in indexes(migrated) if "UNIQUE" in d}
    assert ("tam_companies", "(project_id, domain)") in unique
    assert ("tam_contacts", "(project_id, linkedin_url)") in unique
    status_check = {d for t, n, d in constraints(migrated) if n == "tam_job_queue_status_check"}
    assert len(status_check) == 1 and "'cancelled'" in status_check.pop()
    assert {(t, c) for t, c, *_ in columns(migrated)} >= NEW_COLUMNS


async def test_migration_applies_twice(database: Any) -> None:
    url = database()
    apply_migrations(url)
    first = snapshot(url)
    apply_migrations(url)
    assert snapshot(url) == first
    assert dict(first["rls"]) == dict.fromkeys(TABLES, True)
    # Per table: a restrictive policy for each of select/insert/update/delete, plus a
    # permissive one per command a signed-in user may run (projects 4, companies 2,
    # contacts 1, jobs 2).
    assert len(first["policies"]) == 4 * 4 + 4 + 2 + 1 + 2
    assert not {name for _, name, *_ in first["policies"] if name.endswith(("_read", "_write"))}


async def test_migration_upgrades_the_original_tables(database: Any) -> None:
    url, fresh = database(), database()
    run_sql(url, ORIGINAL_TABLES)
    project_id, job_id = uuid4(), uuid4()
    run_sql(url, "insert into tam_projects (id, name) values (%s, 'Old project')", (project_id,))
    run_sql(
        url,
        "insert into tam_companies (project_id, name, domain) values (%s, 'Old', 'old.com')",
        (project_id,),
    )
    run_sql(
        url,
        "insert into tam_job_queue (id, project_id, job_type, status) "
        "values (%s, %s, 'qualify', 'running')",
        (job_id, project_id),
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        run_sql(url, "update tam_job_queue set status = 'cancelled'")

    apply_migrations(url)
    apply_migrations(url)
    apply_migrations(fresh)

    names = {(t, c) for t, c, *_ in columns(url)}
    assert names >= NEW_COLUMNS
    # Same columns with the same types as a fresh install (nullability and defaults of the
    # original columns stay as the app made them).
    assert {(t, c, ty) for t, c, ty, *_ in columns(url)} == {
        (t, c, ty) for t, c, ty, *_ in columns(fresh)
    }
    assert {i for _, i, _ in indexes(url)} >= {i for _, i, _ in indexes(fresh)}
    assert run_sql(url, "select attempt from tam_job_queue") == [(0,)]
    assert "job_status_is_known" not in {n for _, n, _ in constraints(url)}
    with pytest.raises(psycopg.errors.CheckViolation):
        run_sql(url, "update tam_job_queue set status = 'paused'")

    # The product works on the upgraded tables.
    store = open_store(url)
    try:
        assert await store.update_job(
            job_id, JobUpdate(status=JobStatus.cancelled), only_if_status=[JobStatus.running]
        )
        assert (await store.get_job(job_id)).status == JobStatus.cancelled
        assert (
            await store.upsert_companies(
                [NewCompany(project_id=project_id, name="Old again", domain="www.old.com")]
            )
            == []
        )
        old = [c async for page in store.iter_companies(project_id) for c in page]
        assert [(c.name, c.raw_data, c.source) for c in old] == [("Old", {}, "manual")]
    finally:
        await store.close()


async def test_init_schema_brings_the_original_tables_up_to_date(database: Any) -> None:
    """Without the migration (plain Postgres, or an older SQLite file) the store itself adds
    the missing columns and indexes."""
    url, fresh = database(), database()
    run_sql(url, ORIGINAL_TABLES)
    await create_with_store(url)
    await create_with_store(fresh)
    assert {(t, c, ty) for t, c, ty, *_ in columns(url)} == {
        (t, c, ty) for t, c, ty, *_ in columns(fresh)
    }
    assert {i for _, i, _ in indexes(url)} == {i for _, i, _ in indexes(fresh)}


# One row per table, as (table, insert statement, update statement); values are set per test.
# Each is a write no browser role may make to a project it does not own.
WRITES = {
    "tam_projects": (
        "insert into tam_projects (id, name, user_id) values (%(new)s, 'Sneaky', %(owner)s)",
        "update tam_projects set name = 'Hijacked'",
    ),
    "tam_companies": (
        "insert into tam_companies (id, project_id, name, domain) "
        "values (%(new)s, %(project)s, 'Sneaky', 'sneaky.com')",
        "update tam_companies set feedback = 'liked'",
    ),
    "tam_contacts": (
        "insert into tam_contacts (id, project_id, company_id, linkedin_url) "
        "values (%(new)s, %(project)s, %(company)s, 'https://www.linkedin.com/in/sneaky')",
        "update tam_contacts set email = 'attacker@example.com'",
    ),
    "tam_job_queue": (
        "insert into tam_job_queue (id, project_id, job_type) "
        "values (%(new)s, %(project)s, 'qualify')",
        "update tam_job_queue set status = 'completed'",
    ),
}


def refused(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None = None) -> bool:
    """Refused by a privilege or a policy (an error), or filtered to no row by RLS."""
    try:
        return conn.execute(sql.encode(), params).rowcount == 0
    except psycopg.errors.InsufficientPrivilege:
        return True


@pytest.mark.reliability(bad_inputs={"write by a non-service role": 2 * 3 * len(TABLES)})
async def test_only_the_service_role_writes(database: Any) -> None:
    """Every table, every kind of write, both roles a browser can hold (anon with the
    public key, authenticated with a token of a user who does not own the project): each is
    refused, and neither sees a row; the service role (the pipeline, the Edge Functions) does
    them all. What an owner may do is tests/test_rls_tenancy.py's."""
    url = database()
    apply_migrations(url)
    owner, stranger = uuid4(), uuid4()
    ids = {"project": uuid4(), "company": uuid4(), "contact": uuid4(), "job": uuid4()}
    run_sql(
        url,
        "insert into tam_projects (id, name, user_id) values (%s, 'P', %s)",
        (ids["project"], owner),
    )
    run_sql(
        url,
        "insert into tam_companies (id, project_id, name, domain) values (%s, %s, 'C', 'c.com')",
        (ids["company"], ids["project"]),
    )
    run_sql(
        url,
        "insert into tam_contacts (id, project_id, company_id, linkedin_url) "
        "values (%s, %s, %s, 'https://www.linkedin.com/in/c')",
        (ids["contact"], ids["project"], ids["company"]),
    )
    run_sql(
        url,
        "insert into tam_job_queue (id, project_id, job_type) values (%s, %s, 'qualify')",
        (ids["job"], ids["project"]),
    )
    before = {table: run_sql(url, f"select * from {table} order by id") for table in TABLES}
    params = {**ids, "owner": owner}

    for role in ("anon", "authenticated"):
        claims = {"sub": str(stranger), "role": role} if role == "authenticated" else None
        with as_role(url, role, claims) as conn:
            for table, (insert, update) in WRITES.items():
                assert refused(conn, f"select * from {table}"), (role, table)
                assert refused(conn, insert, {**params, "new": uuid4()}), (role, table)
                assert refused(conn, update), (role, table)
                assert refused(conn, f"delete from {table}"), (role, table)
                # TRUNCATE ignores RLS: only the privilege stops it.
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"truncate {table} cascade".encode())
    after = {table: run_sql(url, f"select * from {table} order by id") for table in TABLES}
    assert after == before, "a non-service role changed a row"

    with as_role(url, "service_role") as conn:
        for table, (insert, update) in WRITES.items():
            conn.execute(insert.encode(), {**params, "new": uuid4()})
            assert conn.execute(update.encode()).rowcount == 2, table
        conn.execute(b"delete from tam_projects")  # cascades to every other table
    assert all(run_sql(url, f"select count(*) from {table}") == [(0,)] for table in TABLES)
