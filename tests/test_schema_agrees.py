"""The Supabase migration and tam/schema.py describe the same tables, and the migration is safe.

The migration must also upgrade a Supabase that already holds the app's original tables, and
its row level security must let signed-in users read while only the service role writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from tam.models import JobStatus, JobUpdate, NewCompany
from tam.stores import open_store
from tests.fixtures.postgres import PgServer

pytestmark = pytest.mark.postgres

MIGRATIONS = sorted((Path(__file__).parents[1] / "supabase" / "migrations").glob("*.sql"))
TABLES = ["tam_projects", "tam_companies", "tam_contacts", "tam_job_queue"]

# The app's tables as they stood before this product: only the columns design.md §2 names,
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


@pytest.fixture(scope="module")
def supabase_roles(pg_server: PgServer) -> None:
    """The roles every Supabase project has (roles are cluster-wide, so once is enough)."""
    pg_server.admin_sql(
        """
        do $$ begin
          if not exists (select from pg_roles where rolname = 'anon') then
            create role anon nologin; end if;
          if not exists (select from pg_roles where rolname = 'authenticated') then
            create role authenticated nologin; end if;
          if not exists (select from pg_roles where rolname = 'service_role') then
            create role service_role nologin; end if;
        end $$;
        """
    )


@pytest.fixture
def database(pg_server: PgServer, supabase_roles: None) -> Iterator[Any]:
    """A factory of fresh databases, dropped after the test."""
    names: list[str] = []

    def make() -> str:
        names.append(f"tam_schema_{uuid4().hex[:12]}")
        return pg_server.create_database(names[-1])

    yield make
    for name in names:
        pg_server.drop_database(name)


def apply_migrations(url: str) -> None:
    assert MIGRATIONS, "no migration files found"
    with psycopg.connect(url, autocommit=True) as conn:
        for path in MIGRATIONS:
            # One simple-protocol query per file: Postgres runs it as one transaction.
            conn.execute(path.read_text(encoding="utf-8").encode())


def run_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode(), params)
        return cursor.fetchall() if cursor.description else []


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
    }


async def test_migration_and_schema_py_agree(database: Any) -> None:
    migrated, created = database(), database()
    apply_migrations(migrated)
    await create_with_store(created)

    assert columns(migrated) == columns(created)
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
    assert len(first["policies"]) == 8


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
WRITES = {
    "tam_projects": (
        "insert into tam_projects (id, name) values (%(new)s, 'Sneaky')",
        "update tam_projects set name = 'Hijacked'",
    ),
    "tam_companies": (
        "insert into tam_companies (id, project_id, name, domain) "
        "values (%(new)s, %(project)s, 'Sneaky', 'sneaky.com')",
        "update tam_companies set qualification_status = 'qualified'",
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


@pytest.mark.reliability(bad_inputs={"write by a non-service role": 2 * 3 * len(TABLES)})
async def test_only_the_service_role_writes(database: Any) -> None:
    """Every table, every kind of write, both roles a browser can hold (anon with the
    public key, authenticated with a user's token): RLS refuses each; the service role
    (the pipeline, the Edge Functions) does them all."""
    url = database()
    apply_migrations(url)
    # Supabase grants table privileges to these roles by default; RLS is what restricts them.
    run_sql(
        url,
        "grant usage on schema public to anon, authenticated, service_role; "
        "grant all on all tables in schema public to anon, authenticated, service_role",
    )
    ids = {"project": uuid4(), "company": uuid4(), "contact": uuid4(), "job": uuid4()}
    run_sql(url, "insert into tam_projects (id, name) values (%s, 'P')", (ids["project"],))
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

    with psycopg.connect(url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            conn.execute(f"set role {role}".encode())
            visible = 1 if role == "authenticated" else 0  # signed-in users read, anon nothing
            for table, (insert, update) in WRITES.items():
                count = conn.execute(f"select count(*) from {table}".encode()).fetchone()
                assert count == (visible,), (role, table)
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level"):
                    conn.execute(insert.encode(), {**ids, "new": uuid4()})
                assert conn.execute(update.encode()).rowcount == 0, (role, table)
                assert conn.execute(f"delete from {table}".encode()).rowcount == 0, (role, table)
            conn.execute(b"reset role")
    after = {table: run_sql(url, f"select * from {table} order by id") for table in TABLES}
    assert after == before, "a non-service role changed a row"

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"set role service_role")
        for table, (insert, update) in WRITES.items():
            conn.execute(insert.encode(), {**ids, "new": uuid4()})
            assert conn.execute(update.encode()).rowcount == 2, table
        conn.execute(b"delete from tam_projects")  # cascades to every other table
        conn.execute(b"reset role")
    assert all(run_sql(url, f"select count(*) from {table}") == [(0,)] for table in TABLES)
