"""The statements SqlStore sends, for Postgres and SQLite (which share ON CONFLICT syntax)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tam.job_transitions import JobGuard, RowCondition
from tam.models import NEEDS_REVIEW_PREFIX, QualificationStatus
from tam.schema import JsonDoc, UtcDateTime, companies, contacts, jobs

# Descriptive fields an upsert may fill in on an existing row while they are still empty.
COMPANY_FILL = (
    "linkedin_url",
    "industry",
    "employee_count",
    "location",
    "description",
    "digital_footprint_score",
    "similarity_score",
    "raw_data",
)
CONTACT_FILL = ("first_name", "last_name", "title", "phone", "email_status", "raw_data")


def insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def upsert_companies(dialect: str, rows: Sequence[dict[str, Any]]) -> sa.Executable:
    """One multi-row INSERT ... ON CONFLICT (project_id, domain), returning touched rows.

    An existing company keeps id, name, source, qualification and feedback; only its empty
    descriptive fields take the new values. Rows with nothing to fill are not rewritten.
    """
    stmt = insert(dialect, companies).values(list(rows))
    existing, incoming = companies.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=["project_id", "domain"],
        set_={name: sa.func.coalesce(existing[name], incoming[name]) for name in COMPANY_FILL},
        where=sa.or_(*(existing[n].is_(None) & incoming[n].is_not(None) for n in COMPANY_FILL)),
    ).returning(*companies.c)


def upsert_contacts(dialect: str, rows: Sequence[dict[str, Any]]) -> sa.Executable:
    """One multi-row INSERT ... ON CONFLICT (project_id, linkedin_url), returning touched rows."""
    stmt = insert(dialect, contacts).values(list(rows))
    existing, incoming = contacts.c, stmt.excluded
    set_: dict[str, Any] = {
        name: sa.func.coalesce(existing[name], incoming[name]) for name in CONTACT_FILL
    }
    # NOTE: an email found earlier (maybe paid for) wins over whatever comes now, and its
    # status goes with it.
    set_["email"] = sa.func.coalesce(existing.email, incoming.email)
    set_["email_status"] = sa.case(
        (existing.email.is_not(None), existing.email_status),
        else_=sa.func.coalesce(incoming.email_status, existing.email_status),
    )
    changed = [existing[n].is_(None) & incoming[n].is_not(None) for n in CONTACT_FILL]
    changed.append(existing.email.is_(None) & incoming.email.is_not(None))
    return stmt.on_conflict_do_update(
        index_elements=["project_id", "linkedin_url"], set_=set_, where=sa.or_(*changed)
    ).returning(*contacts.c)


def save_qualification(dialect: str) -> sa.Executable:
    """An UPDATE for executemany with b_id, b_status, b_reason, b_raw.

    NOTE: raw_data["qualification"] is set in SQL from the stored document, so one
    executemany does the whole batch with no read first (and no race with another writer).
    """
    raw = sa.bindparam("b_raw", type_=JsonDoc)
    stored = companies.c.raw_data
    merged: sa.ColumnElement[Any]
    if dialect == "postgresql":
        entry = sa.func.jsonb_build_object(sa.literal_column("'qualification'"), raw)
        merged = sa.func.coalesce(stored, sa.text("'{}'::jsonb")).op("||")(entry)
    else:
        merged = sa.func.json_set(
            sa.func.coalesce(stored, sa.literal_column("'{}'")),
            sa.literal_column("'$.qualification'"),
            sa.func.json(raw),
        )
    return (
        sa.update(companies)
        .where(companies.c.id == sa.bindparam("b_id", type_=sa.Uuid))
        .values(
            qualification_status=sa.bindparam("b_status"),
            qualification_reason=sa.bindparam("b_reason"),
            raw_data=merged,
        )
    )


def update_contact_fields(names: Sequence[str]) -> sa.Executable:
    """An UPDATE for executemany with b_contact_id and b_<name> for each field name; a NULL
    b_<name> keeps the stored value."""
    c = contacts.c
    return (
        sa.update(contacts)
        .where(c.id == sa.bindparam("b_contact_id", type_=sa.Uuid))
        .values(
            {
                name: sa.func.coalesce(sa.bindparam(f"b_{name}", type_=c[name].type), c[name])
                for name in names
            }
        )
    )


def count_companies(project_id: UUID) -> sa.Select[Any]:
    """Rows per status, and how many pending ones are waiting for a review retry."""
    c = companies.c
    # NOTE: substr, not LIKE: SQLite's LIKE ignores case, Postgres's does not.
    needs_review = sa.and_(
        c.qualification_status == QualificationStatus.pending.value,
        sa.func.substr(c.qualification_reason, 1, len(NEEDS_REVIEW_PREFIX)) == NEEDS_REVIEW_PREFIX,
    )
    return (
        sa.select(
            c.qualification_status,
            sa.func.count().label("n"),
            sa.func.count(sa.case((needs_review, 1))).label("needs_review"),
        )
        .where(c.project_id == project_id)
        .group_by(c.qualification_status)
    )


def heartbeat_before(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Jobs whose last sign of life is older than `cutoff`.

    A job that never sent a heartbeat is judged by when it started, or else was created.
    """
    c = jobs.c
    # NOTE: typed literal, so SQLite compares it in the same UTC text form it stores.
    at = sa.literal(cutoff, UtcDateTime)
    return sa.or_(
        c.heartbeat_at < at,
        c.heartbeat_at.is_(None) & (sa.func.coalesce(c.started_at, c.created_at) < at),
    )


def job_guard(guard: JobGuard) -> sa.ColumnElement[bool]:
    """The WHERE of a guarded job update: the row meets any one of the guard's conditions."""
    return sa.or_(sa.false(), *(_row_condition(c) for c in guard.any_of))


def _row_condition(condition: RowCondition) -> sa.ColumnElement[bool]:
    c = jobs.c
    parts: list[sa.ColumnElement[bool]] = [
        c.status.in_(sorted(s.value for s in condition.statuses))
    ]
    if condition.check_run:
        run = condition.flow_run_id
        parts.append(c.flow_run_id.is_(None) if run is None else c.flow_run_id == run)
    if condition.started is not None:
        parts.append(c.started_at.is_not(None) if condition.started else c.started_at.is_(None))
    if condition.dispatch_failed:
        parts.append(c.result_summary["dispatch"].as_boolean().is_(True))
    if condition.stale_before is not None:
        parts.append(heartbeat_before(condition.stale_before))
    return sa.and_(*parts)


def linkedin_check_due(checked_before: datetime | None) -> sa.ColumnElement[bool]:
    """Contacts with a LinkedIn URL never checked, or last checked before `checked_before`."""
    c = contacts.c
    due: sa.ColumnElement[bool] = c.linkedin_checked_at.is_(None)
    if checked_before is not None:
        due = sa.or_(due, c.linkedin_checked_at < sa.literal(checked_before, UtcDateTime))
    return sa.and_(c.linkedin_url.is_not(None), c.linkedin_url != "", due)
