"""SupabaseRestStore against PostgREST's HTTP semantics.

No PostgREST server can be installed here (Debian ships none; PyPI's `postgrest` is the
client), so `FakePostgrest` speaks PostgREST's wire protocol over the real schema
(tam.schema, on SQLite) behind respx: horizontal filters (`eq`, `neq`, `gt`, `lt`, `is`,
`in`, `like`, `not.`, `or=(...and(...))`), `order`, `limit`/`offset` and `Range`, the
server's `max_rows` cap (1,000 on Supabase), `Prefer: return=`, `count=exact` with
`Content-Range`, upserts with `on_conflict` + `resolution=merge-duplicates|ignore-duplicates`,
`columns=` (missing keys become NULL), the gateway's API-key check and PostgREST's error
bodies (`{"code", "message", "details", "hint"}` with Postgres SQLSTATEs). The store contract
suite then runs on it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import respx
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import StaticPool

from tam.models import JobStatus, JobUpdate, NewCompany, QualificationResult
from tam.schema import UtcDateTime, metadata
from tam.settings import Settings
from tam.stores import SqlStore, Store, StoreError, open_store
from tam.stores.supabase_rest import SupabaseRestStore, supabase_api_url
from tests.test_store_contract import (  # noqa: F401 - collected here, on this backend
    collect,
    flat,
    new_project,
    test_a_refused_statement_is_a_store_error,
    test_auto_refine_opt_in,
    test_contacts_to_check_skips_recently_checked_and_urlless,
    test_contacts_upsert_dedup_keeps_email_and_partial_updates,
    test_init_schema_is_idempotent_and_keeps_data,
    test_iter_companies_pages_past_1000_rows_with_filters,
    test_jobs_create_update_compare_and_set,
    test_list_jobs_by_status_and_stale_heartbeat,
    test_projects_create_get_status_and_not_found,
    test_save_qualifications_and_count_companies,
    test_upsert_companies_dedups_on_normalized_domain,
    test_upsert_scopes_domains_per_project,
)

URL = "https://fakeref.supabase.co"
KEY = "service-role-key-for-tests-0123456789"


class PgError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _split(text: str) -> list[str]:
    """Split on top-level commas, outside quotes and parentheses."""
    parts, depth, quoted, escaped, current = [], 0, False, False, ""
    for char in text:
        if escaped:
            current, escaped = current + char, False
            continue
        if char == "\\" and quoted:
            current, escaped = current + char, True
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current] if current or parts else []


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


class FakePostgrest:
    """PostgREST's HTTP semantics over tam.schema on an in-memory SQLite database."""

    def __init__(self, *, key: str = KEY, max_rows: int = 1000) -> None:
        self.key, self.max_rows = key, max_rows
        self.engine = sa.create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        sa.event.listen(
            self.engine, "connect", lambda conn, _r: conn.execute("PRAGMA foreign_keys = ON")
        )
        metadata.create_all(self.engine)
        self.tables = {table.name: table for table in metadata.sorted_tables}
        self.requests: list[httpx.Request] = []
        self.refuse_connections = False

    # --- values -------------------------------------------------------------------------
    @staticmethod
    def to_db(column: sa.Column[Any], value: Any) -> Any:
        if value is None:
            return None
        kind = column.type
        try:
            if isinstance(kind, sa.Uuid):
                return UUID(str(value))
            if isinstance(kind, UtcDateTime):
                return datetime.fromisoformat(str(value))
            if isinstance(kind, sa.Boolean) and isinstance(value, str):
                return {"true": True, "false": False}[value]
            if isinstance(kind, sa.Integer):
                return int(value)
            if isinstance(kind, sa.Float):
                return float(value)
        except (ValueError, KeyError):
            type_name = "uuid" if isinstance(kind, sa.Uuid) else str(kind).lower()
            raise PgError(
                400, "22P02", f'invalid input syntax for type {type_name}: "{value}"'
            ) from None
        return value

    @staticmethod
    def to_json(value: Any) -> Any:
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    def column(self, table: sa.Table, name: str) -> sa.Column[Any]:
        if name not in table.c:
            raise PgError(400, "42703", f"column {table.name}.{name} does not exist")
        return table.c[name]

    # --- filters ------------------------------------------------------------------------
    def condition(self, table: sa.Table, name: str, expr: str) -> sa.ColumnElement[bool]:
        negate = expr.startswith("not.")
        expr = expr.removeprefix("not.")
        if name in ("or", "and"):
            clause = self.tree(table, name, expr)
        else:
            column = self.column(table, name)
            op, _, raw = expr.partition(".")
            if op == "is":
                values = {"null": None, "true": True, "false": False}
                if raw not in values:
                    raise PgError(400, "PGRST100", f"failed to parse filter ({expr})")
                clause = column.is_(values[raw])
            elif op == "in":
                if not (raw.startswith("(") and raw.endswith(")")):
                    raise PgError(400, "PGRST100", f"failed to parse filter ({expr})")
                items = [self.to_db(column, _unquote(v)) for v in _split(raw[1:-1])]
                clause = column.in_(items)
            elif op == "like":  # case-sensitive, * as wildcard: SQLite's GLOB
                clause = column.op("GLOB")(_unquote(raw))
            elif op == "ilike":
                clause = column.ilike(_unquote(raw).replace("*", "%"))
            elif op in ("eq", "neq", "gt", "gte", "lt", "lte"):
                value = self.to_db(column, _unquote(raw))
                ops = {"eq": "__eq__", "neq": "__ne__", "gt": "__gt__", "gte": "__ge__",
                       "lt": "__lt__", "lte": "__le__"}  # fmt: skip
                clause = getattr(column, ops[op])(value)
            else:
                raise PgError(400, "PGRST100", f"failed to parse filter ({op}.{raw})")
        return sa.not_(clause) if negate else clause

    def tree(self, table: sa.Table, name: str, expr: str) -> sa.ColumnElement[bool]:
        if not (expr.startswith("(") and expr.endswith(")")):
            raise PgError(400, "PGRST100", f"failed to parse logic tree ({expr})")
        clauses = []
        for item in _split(expr[1:-1]):
            negate = item.startswith("not.")
            body = item.removeprefix("not.")
            if body.startswith(("and(", "or(")):
                op, _, rest = body.partition("(")
                clause = self.tree(table, op, f"({rest}")
            else:
                column, _, rest = body.partition(".")
                clause = self.condition(table, column, rest)
            clauses.append(sa.not_(clause) if negate else clause)
        return sa.and_(*clauses) if name == "and" else sa.or_(*clauses)

    def where(self, table: sa.Table, params: httpx.QueryParams) -> list[sa.ColumnElement[bool]]:
        reserved = {"select", "order", "limit", "offset", "on_conflict", "columns"}
        return [self.condition(table, k, v) for k, v in params.multi_items() if k not in reserved]

    # --- HTTP ---------------------------------------------------------------------------
    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refuse_connections:
            raise httpx.ConnectError("connection refused", request=request)
        if request.headers.get("apikey") != self.key:
            hint = "Double check your Supabase API key."
            return httpx.Response(401, json={"message": "Invalid API key", "hint": hint})
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return self.error(PgError(401, "PGRST301", "JWSError JWSInvalidSignature"))
        name = request.url.path.removeprefix("/rest/v1/")
        table = self.tables.get(name)
        if table is None:
            return self.error(PgError(404, "PGRST205", f"Could not find the table "
                                      f"'public.{name}' in the schema cache"))  # fmt: skip
        prefer = {
            k.strip(): v.strip()
            for part in request.headers.get("prefer", "").split(",")
            if "=" in part
            for k, v in [part.split("=", 1)]
        }
        try:
            with self.engine.begin() as conn:
                if request.method in ("GET", "HEAD"):
                    return self.read(conn, table, request, prefer)
                if request.method == "POST":
                    return self.insert(conn, table, request, prefer)
                if request.method == "PATCH":
                    return self.update(conn, table, request, prefer)
            return self.error(PgError(405, "PGRST117", f"Unsupported HTTP method {request.method}"))
        except PgError as exc:
            return self.error(exc)
        except sa.exc.IntegrityError as exc:
            return self.error(self.integrity(table, exc))

    @staticmethod
    def error(exc: PgError) -> httpx.Response:
        body = {"code": exc.code, "message": exc.message, "details": exc.details, "hint": None}
        return httpx.Response(exc.status, json=body)

    @staticmethod
    def integrity(table: sa.Table, exc: sa.exc.IntegrityError) -> PgError:
        text = str(exc.orig)
        if "UNIQUE" in text:
            return PgError(409, "23505", f'duplicate key value violates unique constraint on '
                           f'"{table.name}"', text)  # fmt: skip
        if "FOREIGN KEY" in text:
            return PgError(409, "23503", f'insert or update on table "{table.name}" violates '
                           "foreign key constraint", text)  # fmt: skip
        if "NOT NULL" in text:
            column = text.rsplit(".", 1)[-1]
            return PgError(400, "23502", f'null value in column "{column}" of relation '
                           f'"{table.name}" violates not-null constraint')  # fmt: skip
        return PgError(400, "23514", f'new row for relation "{table.name}" violates check '
                       "constraint", text)  # fmt: skip

    def rows_json(self, rows: list[sa.Row[Any]], columns: list[str] | None = None) -> list[Any]:
        out = []
        for row in rows:
            mapping = row._mapping
            keys = columns or list(mapping.keys())
            out.append({k: self.to_json(mapping[k]) for k in keys})
        return out

    def selected(self, table: sa.Table, params: httpx.QueryParams) -> list[str] | None:
        select = params.get("select", "*")
        if select == "*":
            return None
        return [self.column(table, c.strip()).name for c in select.split(",")]

    def read(
        self, conn: sa.Connection, table: sa.Table, request: httpx.Request, prefer: dict[str, str]
    ) -> httpx.Response:
        params = request.url.params
        columns = self.selected(table, params)
        conditions = self.where(table, params)
        query = sa.select(table).where(*conditions)
        for item in filter(None, params.get("order", "").split(",")):
            name, _, direction = item.partition(".")
            column = self.column(table, name)
            query = query.order_by(column.desc() if direction.startswith("desc") else column.asc())
        offset, limit = int(params.get("offset", 0)), params.get("limit")
        if "range" in request.headers:  # Range: 0-24 (items)
            start, _, end = request.headers["range"].partition("-")
            offset, limit = int(start), (int(end) - int(start) + 1 if end else None)
        # The server's cap: a request gets at most max_rows, whatever it asks for.
        size = min(int(limit), self.max_rows) if limit is not None else self.max_rows
        rows = conn.execute(query.offset(offset).limit(size)).all()
        total = "*"
        if prefer.get("count") == "exact":
            count = sa.select(sa.func.count()).select_from(table).where(*conditions)
            total = str(conn.execute(count).scalar_one())
        span = f"{offset}-{offset + len(rows) - 1}" if rows else "*"
        headers = {"content-range": f"{span}/{total}"}
        partial = total != "*" and offset + len(rows) < int(total)
        status = 206 if partial else 200
        if request.method == "HEAD":
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, json=self.rows_json(rows, columns), headers=headers)

    def payload(
        self, table: sa.Table, request: httpx.Request
    ) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            raise PgError(400, "PGRST102", "Empty or invalid json") from None
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(row, dict) for row in rows):
            raise PgError(400, "PGRST102", "Empty or invalid json")
        if "columns" in request.url.params:
            columns = [c.strip().strip('"') for c in request.url.params["columns"].split(",")]
        else:
            columns = list(rows[0]) if rows else []
            if any(set(row) != set(columns) for row in rows):
                raise PgError(400, "PGRST102", "All object keys must match")
        for name in columns:
            if name not in table.c:
                raise PgError(400, "PGRST204", f"Could not find the '{name}' column of "
                              f"'{table.name}' in the schema cache")  # fmt: skip
        return rows, columns

    def insert(
        self, conn: sa.Connection, table: sa.Table, request: httpx.Request, prefer: dict[str, str]
    ) -> httpx.Response:
        rows, columns = self.payload(table, request)
        params = request.url.params
        resolution = prefer.get("resolution")
        target = [c.strip() for c in params.get("on_conflict", "").split(",") if c.strip()]
        target = target or [c.name for c in table.primary_key.columns]
        unique_sets = [{c.name for c in table.primary_key.columns}] + [
            {c.name for c in index.columns} for index in table.indexes if index.unique
        ]
        if resolution and set(target) not in unique_sets:
            raise PgError(400, "42P10", "there is no unique or exclusion constraint matching "
                          "the ON CONFLICT specification")  # fmt: skip
        if resolution == "merge-duplicates":
            keys = [tuple(row.get(c) for c in target) for row in rows]
            keys = [k for k in keys if None not in k]
            if len(keys) != len(set(keys)):
                raise PgError(500, "21000", "ON CONFLICT DO UPDATE command cannot affect row a "
                              "second time")  # fmt: skip
        returned = []
        for row in rows:
            values = {c: self.to_db(table.c[c], row.get(c)) for c in columns}
            if prefer.get("missing") == "default":
                values = {c: v for c, v in values.items() if c in row}
            statement = sqlite.insert(table).values(values)
            if resolution == "merge-duplicates":
                excluded = statement.excluded
                statement = statement.on_conflict_do_update(
                    index_elements=target, set_={c: excluded[c] for c in values}
                )
            elif resolution == "ignore-duplicates":
                statement = statement.on_conflict_do_nothing(index_elements=target)
            returned += conn.execute(statement.returning(table)).all()
        if prefer.get("return") != "representation":
            return httpx.Response(201)
        return httpx.Response(201, json=self.rows_json(returned, self.selected(table, params)))

    def update(
        self, conn: sa.Connection, table: sa.Table, request: httpx.Request, prefer: dict[str, str]
    ) -> httpx.Response:
        (row,), columns = self.payload(table, request)
        values = {c: self.to_db(table.c[c], row.get(c)) for c in columns}
        conditions = self.where(table, request.url.params)
        statement = sa.update(table).where(*conditions).values(values).returning(table)
        changed = conn.execute(statement).all()
        if prefer.get("return") != "representation":
            return httpx.Response(204)
        return httpx.Response(200, json=self.rows_json(changed))


@pytest.fixture
def postgrest() -> Iterator[FakePostgrest]:
    fake = FakePostgrest()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(url__startswith=f"{URL}/rest/v1/").mock(side_effect=fake)
        yield fake
    fake.engine.dispose()


@pytest.fixture
def store_url() -> str:
    return "supabase://fakeref"


@pytest.fixture
async def store(postgrest: FakePostgrest, store_url: str) -> AsyncIterator[Store]:
    settings = Settings(supabase_url=URL, supabase_service_role_key=KEY)  # type: ignore[arg-type]
    s = open_store(store_url, settings=settings)
    await s.init_schema()
    yield s
    await s.close()


# --- what only this backend has to prove ----------------------------------------------------
def test_open_store_picks_supabase_rest_when_configured(tmp_path: Any) -> None:
    both = {"supabase_url": URL, "supabase_service_role_key": KEY}
    chosen = open_store(settings=Settings(**both))  # type: ignore[arg-type]
    assert isinstance(chosen, SupabaseRestStore) and chosen.url == URL
    # An explicit TAM_DATABASE_URL wins over the Supabase variables.
    explicit = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", **both)  # type: ignore[arg-type]
    assert isinstance(open_store(settings=explicit), SqlStore)
    assert isinstance(open_store(settings=Settings()), SqlStore)  # the embedded default
    for url in ("supabase", "supabase://fakeref", URL):
        picked = open_store(url, settings=Settings(**both))  # type: ignore[arg-type]
        assert isinstance(picked, SupabaseRestStore) and picked.url == URL
    assert supabase_api_url("supabase+http://127.0.0.1:54321/") == "http://127.0.0.1:54321"
    with pytest.raises(StoreError, match="SUPABASE_SERVICE_ROLE_KEY"):
        open_store("supabase://fakeref", settings=Settings(supabase_url=URL))  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="SUPABASE_URL"):
        open_store("supabase", settings=Settings(supabase_service_role_key=KEY))  # type: ignore[arg-type]


async def test_requests_carry_the_service_role_key_and_postgrest_semantics(
    store: Store, postgrest: FakePostgrest
) -> None:
    project = await new_project(store)
    await store.upsert_companies([NewCompany(project_id=project.id, name="A", domain="a.com")])
    for request in postgrest.requests:
        assert request.headers["apikey"] == KEY
        assert request.headers["authorization"] == f"Bearer {KEY}"
    upsert = next(r for r in postgrest.requests if r.url.path.endswith("tam_companies"))
    assert upsert.method == "POST"
    assert upsert.url.params["on_conflict"] == "project_id,domain"
    assert "resolution=ignore-duplicates" in upsert.headers["prefer"]
    assert "return=representation" in upsert.headers["prefer"]
    assert "domain" in upsert.url.params["columns"]


async def test_pages_past_the_1000_row_cap_and_why_the_cap_matters(
    store: Store, postgrest: FakePostgrest
) -> None:
    assert isinstance(store, SupabaseRestStore)
    project = await new_project(store)
    await store.upsert_companies(
        [NewCompany(project_id=project.id, name=f"C{n}", domain=f"c{n}.com") for n in range(2500)]
    )
    before = len(postgrest.requests)
    pages = await collect(store.iter_companies(project.id, page_size=5000))
    # Asked for 5,000 per page, the store asks for the server's 1,000 and keeps going.
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert len(postgrest.requests) - before == 3
    gets = postgrest.requests[before:]
    assert all(r.url.params["limit"] == "1000" and r.url.params["order"] == "id.asc" for r in gets)
    assert "id" not in gets[0].url.params and gets[1].url.params["id"].startswith("gt.")

    # A client that trusts its own page size past the cap silently loses rows.
    store.max_rows = 5000
    naive = flat(await collect(store.iter_companies(project.id, page_size=5000)))
    assert len(naive) == 1000


async def test_round_trips_grow_with_batches_not_rows(
    store: Store, postgrest: FakePostgrest
) -> None:
    project = await new_project(store)
    before = store.round_trips
    rows = await store.upsert_companies(
        [NewCompany(project_id=project.id, name=f"C{n}", domain=f"c{n}.com") for n in range(1000)]
    )
    assert store.round_trips - before == 2  # 2 upserts of 500
    before = store.round_trips
    again = await store.upsert_companies(
        [
            NewCompany(project_id=project.id, name=f"C{n}", domain=f"c{n}.com", industry="x")
            for n in range(1000)
        ]  # fmt: skip
    )
    assert again == []  # conflicts: 2 upserts, 10 reads of 100 domains, 2 fill upserts
    assert store.round_trips - before <= 14
    before = store.round_trips
    await store.save_qualifications(
        [QualificationResult(company_id=c.id, status="qualified", reason="ok") for c in rows]
    )
    writes = store.round_trips - before
    assert writes <= 1000 / 25, writes  # design.md §7: at most 1 per 25 rows written
    assert store.round_trips == len(postgrest.requests)


async def test_postgrest_errors_become_store_errors_without_the_key(
    store: Store, postgrest: FakePostgrest
) -> None:
    # 23503: no such project.
    with pytest.raises(StoreError, match="violates a constraint") as caught:
        await store.upsert_companies([NewCompany(project_id=uuid4(), name="x", domain="x.com")])
    assert "23503" in str(caught.value) and KEY not in str(caught.value)

    # A wrong key: the gateway's 401.
    postgrest.key = "rotated-key-value"
    with pytest.raises(StoreError, match="refused the service-role key") as caught:
        await store.get_job(uuid4())
    assert KEY not in str(caught.value)
    postgrest.key = KEY

    # The network: connection refused, as a StoreError the job reporter retries.
    postgrest.refuse_connections = True
    with pytest.raises(StoreError, match="unavailable"):
        await store.update_job(uuid4(), JobUpdate(status=JobStatus.failed))


async def test_init_schema_names_the_missing_migration(postgrest: FakePostgrest) -> None:
    postgrest.tables.pop("tam_job_queue")
    store = SupabaseRestStore(URL, KEY)
    with pytest.raises(StoreError, match="supabase/migrations"):
        await store.init_schema()
    await store.close()


async def test_fake_postgrest_follows_the_wire_rules(postgrest: FakePostgrest) -> None:
    """The emulation itself: the rules the store relies on, checked at the HTTP level."""
    headers = {"apikey": KEY, "authorization": f"Bearer {KEY}"}
    rest = f"{URL}/rest/v1"
    async with httpx.AsyncClient(headers=headers) as http:
        project = str(uuid4())
        created = await http.post(
            f"{rest}/tam_projects", json={"id": project, "name": "P"},
            headers={"prefer": "return=representation"},
        )  # fmt: skip
        assert created.status_code == 201 and created.json()[0]["status"] == "sourcing"
        # Keys that differ between rows, without ?columns=: refused.
        two = [{"project_id": project, "name": "a", "domain": "a.com"}, {"project_id": project}]
        mixed = await http.post(f"{rest}/tam_companies", json=two)
        assert mixed.status_code == 400 and mixed.json()["code"] == "PGRST102"
        # merge-duplicates twice on one key in one statement: Postgres refuses.
        twice = await http.post(
            f"{rest}/tam_companies", params={"on_conflict": "project_id,domain"},
            json=[{"project_id": project, "name": n, "domain": "a.com"} for n in "ab"],
            headers={"prefer": "resolution=merge-duplicates"},
        )  # fmt: skip
        assert twice.status_code == 500 and twice.json()["code"] == "21000"
        bad_target = await http.post(
            f"{rest}/tam_companies", params={"on_conflict": "name"},
            json={"project_id": project, "name": "a"},
            headers={"prefer": "resolution=merge-duplicates"},
        )  # fmt: skip
        assert bad_target.json()["code"] == "42P10"
        bad_uuid = await http.get(f"{rest}/tam_companies", params={"id": "eq.nope"})
        assert bad_uuid.status_code == 400 and bad_uuid.json()["code"] == "22P02"
        counted = await http.head(
            f"{rest}/tam_projects", params={"select": "id"}, headers={"prefer": "count=exact"}
        )
        assert counted.headers["content-range"] == "0-0/1"
        ranged = await http.get(f"{rest}/tam_projects", headers={"range": "5-9"})
        assert ranged.json() == [] and ranged.headers["content-range"] == "*/*"
        wrong_key = await http.get(f"{rest}/tam_projects", headers={"apikey": "nope"})
        assert wrong_key.status_code == 401
