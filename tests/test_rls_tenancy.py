"""Tenant isolation on Supabase (docs/contracts.md, "Tenancy and security"), on real
PostgreSQL with Supabase's roles.

Two customers, A and B, each own a project with a company, a contact and a job; a third
project has no owner. Every table, every command, as A, as B, as anon and as the service
role: a signed-in user reads only their own projects' rows and makes exactly the writes the
contract allows; anon nothing; the service role everything. The migrations also must not
widen what an install's own policies allowed, must apply twice, and must refuse duplicates
by name without applying anything.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import respx

from local.postgres import bin_dir
from tam.models import Project
from tam.settings import Settings
from tam.stores import open_store
from tests.fixtures.postgrest import KEY, URL, FakePostgrest
from tests.fixtures.supabase import (
    MIGRATIONS,
    apply_migrations,
    as_role,
    as_user,
    run_sql,
)
from tests.test_schema_agrees import ORIGINAL_TABLES, snapshot

pytestmark = pytest.mark.postgres

TABLES = ["tam_projects", "tam_companies", "tam_contacts", "tam_job_queue"]
NO_PRIVILEGE = "permission denied"
NO_POLICY = "row-level security"


@dataclass(frozen=True)
class Tenant:
    """One project and one row of each child table."""

    user: UUID | None
    project: UUID
    company: UUID
    contact: UUID
    job: UUID

    def row_ids(self) -> dict[str, UUID]:
        return {
            "tam_projects": self.project,
            "tam_companies": self.company,
            "tam_contacts": self.contact,
            "tam_job_queue": self.job,
        }


@dataclass(frozen=True)
class World:
    url: str
    a: Tenant
    b: Tenant
    nobody: Tenant


def add_tenant(url: str, user: UUID | None, label: str) -> Tenant:
    t = Tenant(user, uuid4(), uuid4(), uuid4(), uuid4())
    run_sql(
        url,
        "insert into tam_projects (id, name, user_id) values (%s, %s, %s)",
        (t.project, f"{label} project", user),
    )
    run_sql(
        url,
        "insert into tam_companies (id, project_id, name, domain) values (%s, %s, %s, %s)",
        (t.company, t.project, f"{label} Inc", f"{label}.example"),
    )
    run_sql(
        url,
        "insert into tam_contacts (id, project_id, company_id, linkedin_url, email, phone) "
        "values (%s, %s, %s, %s, %s, '+1 555 0100')",
        (
            t.contact,
            t.project,
            t.company,
            f"https://www.linkedin.com/in/{label}",
            f"ceo@{label}.ex",
        ),
    )
    run_sql(
        url,
        "insert into tam_job_queue (id, project_id, job_type) values (%s, %s, 'qualify')",
        (t.job, t.project),
    )
    return t


@pytest.fixture
def world(supabase_database: Callable[[], str]) -> World:
    url = supabase_database()
    # Twice: the second run must leave the same policies and privileges (idempotent).
    apply_migrations(url)
    apply_migrations(url)
    return World(
        url,
        add_tenant(url, uuid4(), "a"),
        add_tenant(url, uuid4(), "b"),
        add_tenant(url, None, "n"),
    )


def everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {table: run_sql(url, f"select * from {table} order by id") for table in TABLES}


def visible(conn: psycopg.Connection, table: str) -> set[UUID]:
    return {row[0] for row in conn.execute(f"select id from {table}".encode()).fetchall()}


def denied(conn: psycopg.Connection, sql: str, params: Any = None, *, match: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=match):
        conn.execute(sql.encode(), params)


def affected(conn: psycopg.Connection, sql: str, params: Any = None) -> int:
    return conn.execute(sql.encode(), params).rowcount


# --- reads ---------------------------------------------------------------------------------
def test_a_user_reads_only_the_rows_of_projects_they_own(world: World) -> None:
    for me, other in ((world.a, world.b), (world.b, world.a)):
        assert me.user is not None
        with as_user(world.url, me.user) as conn:
            for table, own in me.row_ids().items():
                assert visible(conn, table) == {own}, table
                by_id = conn.execute(
                    f"select * from {table} where id = any(%s)".encode(),
                    ([other.row_ids()[table], world.nobody.row_ids()[table]],),
                ).fetchall()
                assert by_id == [], table
            # Emails and phones of the other customer stay out of reach by any filter too.
            assert conn.execute(b"select email, phone from tam_contacts").fetchall() == [
                (f"ceo@{'a' if me is world.a else 'b'}.ex", "+1 555 0100")
            ]


def test_a_project_without_owner_is_visible_to_nobody(world: World) -> None:
    stranger = uuid4()  # signed in, owns nothing
    with as_user(world.url, stranger) as conn:
        assert all(visible(conn, table) == set() for table in TABLES)
    # A user who tries to claim it cannot: user_id is not theirs to write.
    assert world.a.user is not None
    with as_user(world.url, world.a.user) as conn:
        denied(
            conn,
            "update tam_projects set user_id = %s where id = %s",
            (world.a.user, world.nobody.project),
            match=NO_PRIVILEGE,
        )


# --- projects ------------------------------------------------------------------------------
def test_an_owner_creates_renames_edits_and_deletes_own_projects(world: World) -> None:
    a = world.a
    assert a.user is not None
    with as_user(world.url, a.user) as conn:
        # The owner defaults to the caller; naming oneself explicitly works too.
        made = conn.execute(
            b"insert into tam_projects (name, icp_profile) values ('Mine', '{}') "
            b"returning user_id, status"
        ).fetchone()
        assert made == (a.user, "sourcing")
        mine = uuid4()
        conn.execute(
            b"insert into tam_projects (id, name, user_id, status) "
            b"values (%s, 'Also', %s, 'sourcing')",
            (mine, a.user),
        )
        assert (
            affected(conn, "update tam_projects set name = 'Renamed' where id = %s", (mine,)) == 1
        )
        assert (
            affected(
                conn,
                """update tam_projects set icp_profile = '{"whatYouSell": "x"}' where id = %s""",
                (mine,),
            )
            == 1
        )
        assert affected(conn, "delete from tam_projects where id = %s", (a.project,)) == 1
    assert run_sql(
        world.url, "select name, icp_profile from tam_projects where id = %s", (mine,)
    ) == [("Renamed", {"whatYouSell": "x"})]
    # Deleting the project took its companies, contacts and jobs with it.
    for table, row in a.row_ids().items():
        assert run_sql(world.url, f"select 1 from {table} where id = %s", (row,)) == [], table


def test_an_owner_may_not_move_owner_status_or_auto_refine(world: World) -> None:
    a, b = world.a, world.b
    assert a.user is not None and b.user is not None
    before = everything(world.url)
    with as_user(world.url, a.user) as conn:
        for column, value in (
            ("status", "complete"),
            ("user_id", str(b.user)),
            ("auto_refine", True),
            ("created_at", "2020-01-01"),
        ):
            denied(
                conn,
                f"update tam_projects set {column} = %s where id = %s",
                (value, a.project),
                match=NO_PRIVILEGE,
            )
        # A project for someone else, or one that skips ahead, is refused.
        denied(
            conn,
            "insert into tam_projects (name, user_id) values ('For B', %s)",
            (b.user,),
            match=NO_POLICY,
        )
        denied(
            conn,
            "insert into tam_projects (name, status) values ('Done', 'complete')",
            match=NO_POLICY,
        )
        denied(
            conn,
            "insert into tam_projects (name, auto_refine) values ('Costly', true)",
            match=NO_PRIVILEGE,
        )
    assert everything(world.url) == before


# --- companies -----------------------------------------------------------------------------
def test_an_owner_sets_only_feedback_on_own_companies(world: World) -> None:
    a = world.a
    assert a.user is not None
    with as_user(world.url, a.user) as conn:
        assert (
            affected(
                conn, "update tam_companies set feedback = 'liked' where id = %s", (a.company,)
            )
            == 1
        )
        for column, value in (
            ("qualification_status", "qualified"),
            ("qualification_reason", "trust me"),
            ("name", "Renamed"),
            ("project_id", str(world.b.project)),
        ):
            denied(
                conn,
                f"update tam_companies set {column} = %s where id = %s",
                (value, a.company),
                match=NO_PRIVILEGE,
            )
        denied(
            conn,
            "insert into tam_companies (project_id, name, domain) values (%s, 'New', 'new.ex')",
            (a.project,),
            match=NO_PRIVILEGE,
        )
        denied(conn, "delete from tam_companies where id = %s", (a.company,), match=NO_PRIVILEGE)
        # The feedback check still applies to what the owner writes.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(b"update tam_companies set feedback = 'meh' where id = %s", (a.company,))
    assert run_sql(
        world.url,
        "select feedback, qualification_status from tam_companies where id = %s",
        (a.company,),
    ) == [("liked", "pending")]


# --- contacts ------------------------------------------------------------------------------
def test_contacts_are_read_only_to_their_owner(world: World) -> None:
    a = world.a
    assert a.user is not None
    before = everything(world.url)
    with as_user(world.url, a.user) as conn:
        denied(
            conn,
            "insert into tam_contacts (project_id, company_id, linkedin_url) "
            "values (%s, %s, 'https://www.linkedin.com/in/new')",
            (a.project, a.company),
            match=NO_PRIVILEGE,
        )
        for column in ("email", "email_status", "phone", "first_name"):
            denied(
                conn,
                f"update tam_contacts set {column} = 'x' where id = %s",
                (a.contact,),
                match=NO_PRIVILEGE,
            )
        denied(conn, "delete from tam_contacts where id = %s", (a.contact,), match=NO_PRIVILEGE)
    assert everything(world.url) == before


# --- jobs ----------------------------------------------------------------------------------
def test_an_owner_creates_only_pending_jobs_for_own_projects(world: World) -> None:
    a, b = world.a, world.b
    assert a.user is not None
    with as_user(world.url, a.user) as conn:
        # As the app sends it (PostgREST: insert ... returning *).
        job = conn.execute(
            b"insert into tam_job_queue (project_id, job_type, status, progress) "
            b"values (%s, 'find_contacts', 'pending', 0) returning id, status, progress",
            (a.project,),
        ).fetchone()
        assert job is not None and job[1:] == ("pending", 0)
        for project, status, progress in (
            (a.project, "running", 0),
            (a.project, "completed", 0),
            (a.project, "pending", 100),
            (b.project, "pending", 0),
            (world.nobody.project, "pending", 0),
        ):
            denied(
                conn,
                "insert into tam_job_queue (project_id, job_type, status, progress) "
                "values (%s, 'qualify', %s, %s)",
                (project, status, progress),
                match=NO_POLICY,
            )
        for column, value in (
            ("result_summary", '{"qualified": 999}'),
            ("flow_run_id", str(uuid4())),
            ("started_at", "2026-12-01"),
            ("current_step", "done"),
            ("attempt", 7),
        ):
            denied(
                conn,
                f"insert into tam_job_queue (project_id, job_type, {column}) "
                "values (%s, 'qualify', %s)",
                (a.project, value),
                match=NO_PRIVILEGE,
            )


def test_an_owner_may_not_move_or_delete_jobs(world: World) -> None:
    a = world.a
    assert a.user is not None
    before = everything(world.url)
    with as_user(world.url, a.user) as conn:
        for column, value in (
            ("status", "completed"),
            ("progress", 100),
            ("result_summary", '{"error": "forged"}'),
            ("flow_run_id", str(uuid4())),
        ):
            denied(
                conn,
                f"update tam_job_queue set {column} = %s where id = %s",
                (value, a.job),
                match=NO_PRIVILEGE,
            )
        denied(conn, "delete from tam_job_queue where id = %s", (a.job,), match=NO_PRIVILEGE)
    assert everything(world.url) == before


# --- other customers, anon, service role ---------------------------------------------------
@pytest.mark.reliability(bad_inputs={"write to another customer's rows": 5})
def test_another_customer_sees_and_changes_none_of_the_rows(world: World) -> None:
    a, b = world.a, world.b
    assert b.user is not None
    before = everything(world.url)
    with as_user(world.url, b.user) as conn:
        for table, row in a.row_ids().items():
            assert row not in visible(conn, table), table
        # Everything B may do to its own rows finds none of A's.
        assert (
            affected(conn, "update tam_projects set name = 'Mine now' where id = %s", (a.project,))
            == 0
        )
        assert (
            affected(conn, "update tam_projects set icp_profile = '{}' where id = %s", (a.project,))
            == 0
        )
        assert affected(conn, "delete from tam_projects where id = %s", (a.project,)) == 0
        assert (
            affected(
                conn, "update tam_companies set feedback = 'disliked' where id = %s", (a.company,)
            )
            == 0
        )
        denied(
            conn,
            "insert into tam_job_queue (project_id, job_type) values (%s, 'qualify')",
            (a.project,),
            match=NO_POLICY,
        )
    assert everything(world.url) == before


def test_anon_reads_and_writes_nothing(world: World) -> None:
    before = everything(world.url)
    with as_role(world.url, "anon") as conn:
        for table in TABLES:
            denied(conn, f"select * from {table}", match=NO_PRIVILEGE)
            denied(conn, f"update {table} set id = id", match=NO_PRIVILEGE)
            denied(conn, f"delete from {table}", match=NO_PRIVILEGE)
            denied(conn, f"truncate {table} cascade", match=NO_PRIVILEGE)
        denied(conn, "insert into tam_projects (name) values ('anon')", match=NO_PRIVILEGE)
        denied(
            conn,
            "insert into tam_job_queue (project_id, job_type) values (%s, 'qualify')",
            (world.a.project,),
            match=NO_PRIVILEGE,
        )
    assert everything(world.url) == before


def test_the_service_role_does_everything(world: World) -> None:
    a = world.a
    with as_role(world.url, "service_role") as conn:
        for table in TABLES:
            assert len(visible(conn, table)) == 3, table
        conn.execute(
            b"update tam_projects set status = 'enriching', auto_refine = true, user_id = %s "
            b"where id = %s",
            (world.b.user, world.nobody.project),
        )
        conn.execute(
            b"update tam_companies set qualification_status = 'qualified', "
            b"qualification_reason = 'fits' where id = %s",
            (a.company,),
        )
        conn.execute(
            b"insert into tam_companies (project_id, name, domain) values (%s, 'New', 'new.ex')",
            (a.project,),
        )
        conn.execute(
            b"update tam_contacts set email = 'new@a.ex', email_status = 'verified' where id = %s",
            (a.contact,),
        )
        conn.execute(
            b"update tam_job_queue set status = 'running', progress = 40, flow_run_id = %s "
            b"where id = %s",
            (uuid4(), a.job),
        )
        conn.execute(
            b"insert into tam_job_queue (project_id, job_type, status) "
            b"values (%s, 'qualify', 'running')",
            (a.project,),
        )
        assert affected(conn, "delete from tam_contacts where id = %s", (a.contact,)) == 1
        assert affected(conn, "delete from tam_job_queue where project_id = %s", (a.project,)) == 2
        assert affected(conn, "delete from tam_companies where project_id = %s", (a.project,)) == 2
    # The project it handed to B is B's now.
    assert world.b.user is not None
    with as_user(world.url, world.b.user) as conn:
        assert visible(conn, "tam_projects") == {world.b.project, world.nobody.project}


# --- an install's own policies -------------------------------------------------------------
# An install that scoped the app's tables to their owner itself, before this product.
INSTALL_OWNER_POLICIES = """
alter table tam_projects add column user_id uuid default auth.uid();
alter table tam_projects enable row level security;
alter table tam_companies enable row level security;
alter table tam_contacts enable row level security;
alter table tam_job_queue enable row level security;
create policy projects_owner_select on tam_projects for select using (auth.uid() = user_id);
create policy projects_owner_write on tam_projects for all using (auth.uid() = user_id);
create policy companies_owner_select on tam_companies for select
  using (project_id in (select id from tam_projects where user_id = auth.uid()));
create policy companies_owner_update on tam_companies for update
  using (project_id in (select id from tam_projects where user_id = auth.uid()));
create policy contacts_owner_select on tam_contacts for select
  using (project_id in (select id from tam_projects where user_id = auth.uid()));
create policy jobs_owner_select on tam_job_queue for select
  using (project_id in (select id from tam_projects where user_id = auth.uid()));
"""


def seen_by(url: str, user: UUID) -> dict[str, set[UUID]]:
    with as_user(url, user) as conn:
        return {table: visible(conn, table) for table in TABLES}


def test_an_install_with_its_own_owner_policies_is_not_widened(
    supabase_database: Callable[[], str],
) -> None:
    url = supabase_database()
    run_sql(url, ORIGINAL_TABLES)
    run_sql(url, INSTALL_OWNER_POLICIES)
    a, b = add_tenant(url, uuid4(), "a"), add_tenant(url, uuid4(), "b")
    add_tenant(url, None, "n")
    assert a.user is not None and b.user is not None
    allowed = {user: seen_by(url, user) for user in (a.user, b.user)}
    assert allowed[a.user] == {table: {row} for table, row in a.row_ids().items()}
    install_policies = {
        row[0]
        for row in run_sql(url, "select policyname from pg_policies where policyname !~ '^tam_'")
    }

    apply_migrations(url)
    apply_migrations(url)

    assert {user: seen_by(url, user) for user in (a.user, b.user)} == allowed
    # The install's policies are still there, untouched.
    assert {
        row[0]
        for row in run_sql(url, "select policyname from pg_policies where policyname !~ '^tam_'")
    } == install_policies
    # Its own update policy does not open the verdict columns either.
    with as_user(url, a.user) as conn:
        denied(
            conn,
            "update tam_companies set qualification_status = 'qualified' where id = %s",
            (a.company,),
            match=NO_PRIVILEGE,
        )
        assert affected(conn, "update tam_projects set name = 'x' where id = %s", (b.project,)) == 0


def test_an_install_policy_wider_than_the_owner_is_capped_at_the_owner(
    supabase_database: Callable[[], str],
) -> None:
    """Permissive policies OR together: an install's `using (true)` would let every user read
    every row. Our restrictive owner-scope policy ANDs with it."""
    url = supabase_database()
    run_sql(url, ORIGINAL_TABLES)
    run_sql(url, INSTALL_OWNER_POLICIES)
    for table in TABLES:
        run_sql(url, f"create policy {table}_everyone_reads on {table} for select using (true)")
    run_sql(
        url, "create policy jobs_everyone_inserts on tam_job_queue for insert with check (true)"
    )
    a, b = add_tenant(url, uuid4(), "a"), add_tenant(url, uuid4(), "b")
    assert a.user is not None and b.user is not None

    apply_migrations(url)

    assert seen_by(url, a.user) == {table: {row} for table, row in a.row_ids().items()}
    with as_user(url, a.user) as conn:
        denied(
            conn,
            "insert into tam_job_queue (project_id, job_type) values (%s, 'qualify')",
            (b.project,),
            match=NO_POLICY,
        )


def test_a_later_grant_all_still_keeps_customers_apart(world: World) -> None:
    """Tutorials often say `grant all on all tables ... to authenticated`; the policies alone
    (restrictive owner scope, `false` where nothing is allowed) still hold the rows."""
    run_sql(world.url, "grant all on all tables in schema public to authenticated")
    a = world.a
    assert a.user is not None
    before = everything(world.url)
    with as_user(world.url, a.user) as conn:
        assert all(visible(conn, t) == {row} for t, row in a.row_ids().items())
        denied(
            conn,
            "insert into tam_contacts (project_id, company_id, linkedin_url) values (%s, %s, 'x')",
            (a.project, a.company),
            match=NO_POLICY,
        )
        denied(
            conn,
            "insert into tam_job_queue (project_id, job_type, status) "
            "values (%s, 'qualify', 'running')",
            (a.project,),
            match=NO_POLICY,
        )
        for table in ("tam_companies", "tam_contacts", "tam_job_queue"):
            assert affected(conn, f"delete from {table}") == 0, table
        assert affected(conn, "update tam_contacts set email = 'x'") == 0
        assert affected(conn, "update tam_job_queue set progress = 99") == 0
    assert everything(world.url) == before


# --- the migration as a whole --------------------------------------------------------------
def test_a_duplicate_pair_fails_the_migration_by_name_and_applies_nothing(
    supabase_database: Callable[[], str],
) -> None:
    url = supabase_database()
    run_sql(url, ORIGINAL_TABLES)
    project = uuid4()
    run_sql(url, "insert into tam_projects (id, name) values (%s, 'Old')", (project,))
    for _ in range(2):
        run_sql(
            url,
            "insert into tam_companies (project_id, name, domain) "
            "values (%s, 'Twice', 'twice.com')",
            (project,),
        )
    before = snapshot(url)

    with pytest.raises(psycopg.errors.RaiseException) as refused:
        apply_migrations(url)
    assert str(project) in str(refused.value) and "twice.com" in str(refused.value)
    assert snapshot(url) == before, "part of the migration was applied"

    # With the command README.md gives: psql stops, names the pair, leaves nothing behind.
    binaries = bin_dir()
    assert binaries is not None
    done = subprocess.run(
        [
            str(binaries / "psql"),
            url,
            "-v",
            "ON_ERROR_STOP=1",
            "-1",
            "-q",
            "-f",
            str(MIGRATIONS[0]),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert str(project) in done.stderr and "twice.com" in done.stderr
    assert snapshot(url) == before

    # Once cleaned, it applies (and again).
    run_sql(
        url,
        "delete from tam_companies where ctid <> (select min(ctid) from tam_companies)",
    )
    for path in MIGRATIONS:
        for _ in range(2):
            done = subprocess.run(
                [str(binaries / "psql"), url, "-v", "ON_ERROR_STOP=1", "-1", "-q", "-f", str(path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
    assert run_sql(url, "select count(*) from tam_projects where user_id is null") == [(1,)]


def test_the_files_leave_the_transaction_to_their_runner() -> None:
    """A COMMIT inside a migration ends `supabase db push`'s per-file transaction early, and
    the CLI then skips the rest (supabase/cli#5047); psql gets `-1` (README.md)."""
    for path in MIGRATIONS:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(begin|commit|rollback)\s*;", text, re.I | re.M), path


def test_duplicate_contacts_are_named_too(supabase_database: Callable[[], str]) -> None:
    url = supabase_database()
    run_sql(url, ORIGINAL_TABLES)
    project, company = uuid4(), uuid4()
    run_sql(url, "insert into tam_projects (id, name) values (%s, 'Old')", (project,))
    run_sql(
        url,
        "insert into tam_companies (id, project_id, name, domain) values (%s, %s, 'C', 'c.com')",
        (company, project),
    )
    for _ in range(3):
        run_sql(
            url,
            "insert into tam_contacts (project_id, company_id, linkedin_url) "
            "values (%s, %s, 'https://www.linkedin.com/in/twice')",
            (project, company),
        )
    with pytest.raises(psycopg.errors.RaiseException, match="linkedin.com/in/twice") as refused:
        apply_migrations(url)
    assert str(project) in str(refused.value) and "3 rows" in str(refused.value)


# --- the stores ----------------------------------------------------------------------------
async def test_the_store_keeps_the_owner(supabase_database: Callable[[], str]) -> None:
    url = supabase_database()
    apply_migrations(url)
    owner = uuid4()
    store = open_store(url)
    try:
        owned = await store.create_project(Project(id=uuid4(), name="Owned", user_id=owner))
        ownerless = await store.create_project(Project(id=uuid4(), name="Nobody's"))
        assert owned.user_id == owner and ownerless.user_id is None
        assert (await store.get_project(owned.id)).user_id == owner
    finally:
        await store.close()
    with as_user(url, owner) as conn:
        assert visible(conn, "tam_projects") == {owned.id}


async def test_the_embedded_store_keeps_the_owner(sqlite_url: str) -> None:
    owner = uuid4()
    store = open_store(sqlite_url)
    try:
        await store.init_schema()
        project = await store.create_project(Project(id=uuid4(), name="Owned", user_id=owner))
        assert (await store.get_project(project.id)).user_id == owner
    finally:
        await store.close()


async def test_the_rest_store_keeps_the_owner() -> None:
    """Through PostgREST (the FakePostgrest of tests/fixtures/postgrest.py): the owner goes
    out when known, and is left out otherwise so the column's `default auth.uid()` applies."""
    fake = FakePostgrest()
    settings = Settings(supabase_url=URL, supabase_service_role_key=KEY)  # type: ignore[arg-type]
    owner = uuid4()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(side_effect=fake)
        store = open_store("supabase://fakeref", settings=settings)
        try:
            owned = await store.create_project(Project(id=uuid4(), name="Owned", user_id=owner))
            ownerless = await store.create_project(Project(id=uuid4(), name="Nobody's"))
            assert (await store.get_project(owned.id)).user_id == owner
            assert (await store.get_project(ownerless.id)).user_id is None
        finally:
            await store.close()
    fake.engine.dispose()
    sent = [json.loads(r.content) for r in fake.requests if r.method == "POST"]
    assert [("user_id" in row[0], row[0].get("user_id")) for row in sent] == [
        (True, str(owner)),
        (False, None),
    ]
