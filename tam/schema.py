"""The four app tables as SQLAlchemy Core, for the SQLite default and for any Postgres.

`supabase/migrations/` (20261122000000_tam_pipeline.sql, then 20261202000000_tam_tenancy.sql)
declares the same tables for Supabase; tests/test_schema_agrees.py proves the two agree column
by column, so change both together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
QUALIFICATION_STATUSES = ("pending", "qualified", "disqualified")
FEEDBACK_VALUES = ("liked", "disliked")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """timestamptz that always comes back timezone-aware in UTC.

    NOTE: SQLite has no timezone type and SQLAlchemy silently drops tzinfo there, so a
    +02:00 time would be stored two hours off; we store naive UTC and re-attach UTC on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 (the signature is SQLAlchemy's)
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _GenRandomUuid(FunctionElement[Any]):
    inherit_cache = True


@compiles(_GenRandomUuid, "postgresql")
def _uuid_pg(_element: _GenRandomUuid, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(_GenRandomUuid)
def _uuid_other(_element: _GenRandomUuid, _compiler: SQLCompiler, **_kw: Any) -> str:
    # NOTE: sa.Uuid stores 32 hex digits without dashes on SQLite; this matches that form.
    return "(lower(hex(randomblob(16))))"


class _EmptyJson(FunctionElement[Any]):
    inherit_cache = True


@compiles(_EmptyJson, "postgresql")
def _empty_json_pg(_element: _EmptyJson, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "'{}'::jsonb"


@compiles(_EmptyJson)
def _empty_json_other(_element: _EmptyJson, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "'{}'"


# NOTE: none_as_null so a Python None is SQL NULL, not the JSON literal 'null'.
JsonDoc = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid, primary_key=True, server_default=_GenRandomUuid())


def _created_at() -> sa.Column[Any]:
    return sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.now())


def _project_fk(table: str) -> sa.Column[Any]:
    return sa.Column(
        "project_id",
        sa.Uuid,
        sa.ForeignKey("tam_projects.id", ondelete="CASCADE", name=f"{table}_project_id_fkey"),
        nullable=False,
    )


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData()

projects = sa.Table(
    "tam_projects",
    metadata,
    _id(),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="sourcing"),
    sa.Column("icp_profile", JsonDoc, server_default=_EmptyJson()),
    _created_at(),
    # Opt-in for the scheduled refine-all flow.
    sa.Column("auto_refine", sa.Boolean, nullable=False, server_default=sa.text("false")),
    # The owner (docs/contracts.md, "Tenancy and security"). On Supabase it defaults to
    # auth.uid(); there is no auth schema here, so the writer passes it. NULL: nobody's project.
    sa.Column("user_id", sa.Uuid),
    sa.Index("tam_projects_user_id_idx", "user_id"),
)

companies = sa.Table(
    "tam_companies",
    metadata,
    _id(),
    _project_fk("tam_companies"),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("domain", sa.Text),
    sa.Column("linkedin_url", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("industry", sa.Text),
    # NOTE: text on purpose: providers send ranges like "51-200" as often as numbers.
    sa.Column("employee_count", sa.Text),
    sa.Column("location", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("digital_footprint_score", sa.Double),
    sa.Column("similarity_score", sa.Double),
    sa.Column("qualification_status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("qualification_reason", sa.Text),
    sa.Column("feedback", sa.Text),
    sa.Column("raw_data", JsonDoc, server_default=_EmptyJson()),
    _created_at(),
    sa.CheckConstraint(
        _in("qualification_status", QUALIFICATION_STATUSES),
        name="tam_companies_qualification_status_check",
    ),
    sa.CheckConstraint(
        f"feedback IS NULL OR {_in('feedback', FEEDBACK_VALUES)}",
        name="tam_companies_feedback_check",
    ),
    sa.Index("tam_companies_project_domain_key", "project_id", "domain", unique=True),
    # NOTE: id last so keyset pages of one status read the index in order.
    sa.Index("tam_companies_project_status_idx", "project_id", "qualification_status", "id"),
)

contacts = sa.Table(
    "tam_contacts",
    metadata,
    _id(),
    sa.Column(
        "company_id",
        sa.Uuid,
        sa.ForeignKey("tam_companies.id", ondelete="CASCADE", name="tam_contacts_company_id_fkey"),
        nullable=False,
    ),
    _project_fk("tam_contacts"),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("linkedin_url", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("email_status", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("raw_data", JsonDoc, server_default=_EmptyJson()),
    sa.Column("linkedin_last_post_date", UtcDateTime),
    sa.Column("linkedin_active", sa.Boolean),
    _created_at(),
    sa.Column("linkedin_checked_at", UtcDateTime),
    sa.Index("tam_contacts_project_linkedin_key", "project_id", "linkedin_url", unique=True),
    sa.Index("tam_contacts_company_idx", "company_id"),
    sa.Index("tam_contacts_project_id_idx", "project_id", "id"),
)

jobs = sa.Table(
    "tam_job_queue",
    metadata,
    _id(),
    _project_fk("tam_job_queue"),
    sa.Column("job_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("progress", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("result_summary", JsonDoc),
    _created_at(),
    sa.Column("completed_at", UtcDateTime),
    sa.Column("flow_run_id", sa.Uuid),
    sa.Column("current_step", sa.Text),
    sa.Column("started_at", UtcDateTime),
    sa.Column("heartbeat_at", UtcDateTime),
    sa.Column("done_count", sa.Integer),
    sa.Column("total_count", sa.Integer),
    sa.Column("cost_usd", sa.Double),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint(_in("status", JOB_STATUSES), name="tam_job_queue_status_check"),
    sa.CheckConstraint("progress >= 0 AND progress <= 100", name="tam_job_queue_progress_check"),
    sa.Index("tam_job_queue_status_heartbeat_idx", "status", "heartbeat_at"),
    sa.Index("tam_job_queue_project_idx", "project_id"),
)


def ensure_schema(conn: Connection) -> None:
    """Create missing tables, then add missing columns and indexes to existing ones.

    NOTE: a database made by an older version (or the app's original Supabase tables) has
    the tables but not the new columns; create_all alone would skip them. Check constraints
    on existing tables are left alone: on Supabase the migration owns them.
    """
    metadata.create_all(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {col["name"] for col in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
        for index in table.indexes:
            index.create(conn, checkfirst=True)
