"""Engine plumbing for SqlStore: URL rules, connection settings, round trips, error mapping."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from tam.stores.base import ROW_REJECTED_CLASSES, RowRejected, StoreError, short_reason

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
PG_POOL_RECYCLE_S = 1800

_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]*@")
_SQLITE_MEMORY = {"", ":memory:"}
_NOT_LIBPQ_OPTIONS = ("pgbouncer", "connection_limit", "pool_timeout", "schema")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, safe for logs and error messages."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return _PASSWORD_IN_URL.sub(r"\1***@", url)
    return parsed.render_as_string(hide_password=True)


@dataclass(frozen=True)
class EngineSpec:
    """What create_async_engine needs, derived from a user's URL."""

    url: URL
    dialect: str
    password: str | None
    connect_args: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self) -> AsyncEngine:
        engine = create_async_engine(self.url, connect_args=self.connect_args, **self.engine_kwargs)
        if self.dialect == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine


def engine_spec(url: str, *, pool_size: int = 5, max_overflow: int = 5) -> EngineSpec:
    """Parse a SQLite or Postgres URL as users paste them (Supabase's included)."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a database URL: {redact_url(url)}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_spec(parsed)
    if backend in ("postgres", "postgresql"):
        return _postgres_spec(parsed, pool_size=pool_size, max_overflow=max_overflow)
    raise StoreError(f"unsupported database URL scheme {parsed.drivername!r}: {redact_url(url)}")


def _sqlite_spec(parsed: URL) -> EngineSpec:
    parsed = parsed.set(drivername="sqlite+aiosqlite")
    database = parsed.database or ""
    kwargs: dict[str, Any] = {}
    if database in _SQLITE_MEMORY:
        # NOTE: every new connection to :memory: is a new empty database; share one.
        kwargs["poolclass"] = StaticPool
    elif not database.startswith("file:"):
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for {database}: {exc}") from exc
    return EngineSpec(
        url=parsed,
        dialect="sqlite",
        password=None,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        engine_kwargs=kwargs,
    )


def _postgres_spec(parsed: URL, *, pool_size: int, max_overflow: int) -> EngineSpec:
    # NOTE: the only async Postgres driver we ship is psycopg 3; any postgres URL uses it.
    # Prisma-style hints some Supabase screens add are not libpq options; psycopg rejects them.
    parsed = parsed.set(drivername="postgresql+psycopg").difference_update_query(_NOT_LIBPQ_OPTIONS)
    connect_args: dict[str, Any] = {
        # NOTE: Supabase's transaction pooler (port 6543) is pgbouncer/Supavisor in
        # transaction mode: a named prepared statement made on one server connection is
        # missing on the next. prepare_threshold=None keeps psycopg from ever preparing.
        "prepare_threshold": None,
    }
    if "connect_timeout" not in parsed.query:
        # NOTE: libpq waits forever for a silent host by default; fail like a refused port.
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "application_name" not in parsed.query:
        connect_args["application_name"] = "tam-pipeline"
    return EngineSpec(
        url=parsed,
        dialect="postgresql",
        password=parsed.password if isinstance(parsed.password, str) else None,
        connect_args=connect_args,
        engine_kwargs={
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            # NOTE: after a database restart or a pooler recycling idle connections, a
            # pooled connection is dead. A pre-ping would cost a round trip per checkout;
            # SqlStore._execute retries once on a connection found dead instead.
            "pool_pre_ping": False,
            "pool_recycle": PG_POOL_RECYCLE_S,
        },
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    try:
        # NOTE: busy_timeout first, so switching to WAL waits for another process's lock.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers in other processes work while one writes.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        # SQLite ignores ON DELETE CASCADE unless asked per connection.
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def count_round_trips(engine: AsyncEngine, bump: Callable[[], None], *, pings: bool) -> None:
    """Call `bump` once per statement (executemany counts once), commit and pool ping."""
    sync_engine = engine.sync_engine

    def on_statement(*_args: Any) -> None:
        bump()

    event.listen(sync_engine, "before_cursor_execute", on_statement)
    event.listen(sync_engine, "commit", on_statement)
    if not pings:
        return

    def on_checkout(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # NOTE: the pool pings every checkout except a connection's first; record.info is
        # cleared when a connection is replaced, which mirrors that rule.
        if record.info.get("tam_seen"):
            bump()
        record.info["tam_seen"] = True

    event.listen(sync_engine, "checkout", on_checkout)


class ErrorMapper:
    """Turns driver and SQLAlchemy errors into StoreError, never showing the password."""

    def __init__(self, where: str, password: str | None) -> None:
        self._where = where
        self._password = password

    def __enter__(self) -> ErrorMapper:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, sa.exc.SQLAlchemyError | OSError) and not isinstance(exc, StoreError):
            raise self.translate(exc) from exc

    def translate(self, exc: BaseException) -> StoreError:
        kind = "database error"
        detail = str(exc)
        rejected = False
        code: str | None = None
        if isinstance(exc, sa.exc.DBAPIError):
            detail = str(exc.orig) if exc.orig is not None else detail
            code = getattr(exc.orig, "sqlstate", None)
            # NOTE: psycopg refuses a NUL in a text parameter itself (DataError, no SQLSTATE);
            # SQLite has no SQLSTATE at all, only the exception class.
            rejected = isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError) or (
                isinstance(code, str) and code[:2] in ROW_REJECTED_CLASSES
            )
            if isinstance(exc, sa.exc.IntegrityError):
                kind = "statement violates a constraint"
            elif isinstance(exc, sa.exc.DataError):
                kind = "data refused"
            elif isinstance(exc, sa.exc.ProgrammingError):
                kind = "statement refused"
            elif isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
                kind = "database unavailable"
        elif isinstance(exc, OSError):
            kind = "database unavailable"
        reason = short_reason(detail)
        detail = " ".join(detail.split())[:500]
        if self._password:
            detail = detail.replace(self._password, "***")
            reason = reason.replace(self._password, "***")
        message = f"{kind} ({self._where}): {detail}"
        if rejected:
            return RowRejected(message, reason=reason, code=code if isinstance(code, str) else None)
        return StoreError(message)
