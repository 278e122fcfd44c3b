"""Supabase REST plumbing for SupabaseRestStore: the client, error mapping, keyset pages,
chunked reads by id, upserts and counts, each request counted as one round trip."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from tam.stores.base import ROW_REJECTED_CLASSES, RowRejected, StoreError, short_reason
from tam.stores.sql_rows import chunked

ModelT = TypeVar("ModelT", bound=BaseModel)

# Supabase's default `max_rows`: a read never asks for more per request than the server gives.
SUPABASE_MAX_ROWS = 1000
# Ids per `in.(...)` filter: 100 UUIDs keep the URL near 4 KB, under gateways' 8 KB limits.
MAX_IDS_PER_FILTER = 100
WRITE_CHUNK_ROWS = 500
_CONSTRAINT_CODES = {"23505", "23503", "23502", "23514", "23P01"}
# A 400/409 answered without a PostgREST body: postgrest-py puts the HTTP status in `code`.
_REJECTED_STATUSES = {"400", "409"}
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def supabase_api_url(url: str, fallback: str | None = None) -> str:
    """The project's HTTPS URL from `supabase://<ref>`, `supabase+http://host:port`, a bare
    `supabase` (then SUPABASE_URL), or an `https://<ref>.supabase.co` URL as is."""
    url = url.strip()
    if url.lower() in ("supabase", "supabase://", "supabase:"):
        if not fallback:
            raise StoreError("TAM_DATABASE_URL says supabase but SUPABASE_URL is not set")
        return fallback.rstrip("/")
    if url.lower().startswith("supabase+"):
        return url.split("+", 1)[1].rstrip("/")
    if url.lower().startswith("supabase://"):
        return f"https://{url[len('supabase://') :].strip('/')}.supabase.co"
    return url.rstrip("/")


def as_json(model: BaseModel, **overrides: Any) -> dict[str, Any]:
    return {**model.model_dump(mode="json"), **overrides}


def utc_iso(value: datetime) -> str:
    # NOTE: aware UTC, so PostgREST compares instants whatever zone the caller used.
    at = value if value.tzinfo else value.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat()


def coalesce(stored: dict[str, Any], new: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {k: stored[k] if stored[k] is not None else new[k] for k in names}


def to_model(model: type[ModelT], row: dict[str, Any]) -> ModelT:
    # NULL columns fall back to the model's defaults, as SqlStore does.
    return model.model_validate({k: v for k, v in row.items() if v is not None})


class PostgrestTables:
    """supabase-py's PostgREST client with the service-role key, and the request patterns
    the store builds on."""

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        schema: str = "public",
        timeout_s: float = 30.0,
        max_rows: int = SUPABASE_MAX_ROWS,
        write_chunk_rows: int = WRITE_CHUNK_ROWS,
    ) -> None:
        from supabase import AsyncClient, AsyncClientOptions

        if not service_role_key:
            raise StoreError("SUPABASE_SERVICE_ROLE_KEY is not set")
        self.url = url.rstrip("/")
        self.round_trips = 0
        self.max_rows = max_rows
        self._chunk = write_chunk_rows
        self._key = service_role_key
        self._http = httpx.AsyncClient(
            timeout=timeout_s, event_hooks={"request": [self._count_request]}
        )
        try:
            self._client = AsyncClient(
                self.url,
                service_role_key,
                AsyncClientOptions(
                    schema=schema,
                    httpx_client=self._http,
                    auto_refresh_token=False,
                    persist_session=False,
                ),
            )
        except Exception as exc:  # supabase raises its own exception for a malformed URL
            raise StoreError(f"not a Supabase URL: {self.url} ({exc})") from exc

    async def _count_request(self, _request: httpx.Request) -> None:
        self.round_trips += 1  # every HTTP request, the client's own retries included

    def table(self, name: str) -> Any:
        return self._client.postgrest.from_(name)

    def error(self, exc: BaseException) -> StoreError:
        from postgrest.exceptions import APIError

        if isinstance(exc, APIError):
            code = str(exc.code or "")
            kind = "database error"
            if code in _CONSTRAINT_CODES:
                kind = "statement violates a constraint"
            elif code.startswith(("PGRST", "42", "22")):
                kind = "statement refused"
            if code in ("PGRST301", "PGRST302", "401", "403") or "API key" in str(exc.message):
                kind = "database refused the service-role key"
            detail = " ".join(f"{code} {exc.message or ''} {exc.details or ''}".split())
        else:
            kind, detail = "database unavailable", f"{type(exc).__name__}: {exc}"
        detail = _JWT.sub("***", detail.replace(self._key, "***"))[:500]
        message = f"{kind} (supabase {self.url}): {detail}"
        if isinstance(exc, APIError) and (
            code[:2] in ROW_REJECTED_CLASSES or code in _REJECTED_STATUSES
        ):
            why = _JWT.sub("***", str(exc.message or kind).replace(self._key, "***"))
            return RowRejected(message, reason=short_reason(why), code=code)
        return StoreError(message)

    async def send(self, query: Any) -> Any:
        from postgrest.exceptions import APIError

        try:
            return await query.execute()
        except (APIError, httpx.HTTPError, OSError) as exc:
            raise self.error(exc) from exc

    async def rows(self, query: Any) -> list[dict[str, Any]]:
        data = (await self.send(query)).data
        return list(data) if isinstance(data, list) else []

    async def pages(
        self, build: Callable[[], Any], page_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Keyset pages on id (`id=gt.<last>&order=id&limit=n`).

        NOTE: not offset pages: a filter whose matches change while we read (qualify writes
        statuses as it goes) would make offsets skip rows. Pages never ask for more than the
        server's max_rows, so a full page is never mistaken for the last one.
        """
        size = max(1, min(page_size, self.max_rows))
        last: str | None = None
        while True:
            query = build()
            if last is not None:
                query = query.gt("id", last)
            rows = await self.rows(query.order("id").limit(size))
            if rows:
                yield rows
            if len(rows) < size:
                return
            last = str(rows[-1]["id"])

    async def pages_by_ids(
        self,
        build: Callable[[], Any],
        column: str,
        ids: Sequence[UUID] | None,
        page_size: int,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if ids is None:
            async for rows in self.pages(build, page_size):
                yield rows
            return
        for some in chunked(sorted({str(i) for i in ids}), MAX_IDS_PER_FILTER):
            async for rows in self.pages(_filtered(build, column, list(some)), page_size):
                yield rows

    async def read_by_ids(
        self, table: str, columns: str, ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for some in chunked(sorted(set(ids)), MAX_IDS_PER_FILTER):
            found += await self.rows(self.table(table).select(columns).in_("id", list(some)))
        return found

    async def upsert(
        self, table: str, rows: list[dict[str, Any]], on_conflict: str, *, ignore: bool = False
    ) -> list[dict[str, Any]]:
        """INSERT ... ON CONFLICT (on_conflict) DO NOTHING / DO UPDATE SET <sent columns>.

        Every row of a request must carry the same keys: PostgREST sets a key missing from
        one row to NULL (or its default), which would wipe that column on update.
        """
        out: list[dict[str, Any]] = []
        for some in chunked(rows, self._chunk):
            query = self.table(table).upsert(
                list(some), on_conflict=on_conflict, ignore_duplicates=ignore
            )
            out += await self.rows(query)
        return out

    def counting(self, table: str) -> Any:
        """A HEAD select with `Prefer: count=exact`: the count comes in Content-Range."""
        from postgrest.types import CountMethod

        return self.table(table).select("id", count=CountMethod.exact, head=True)

    async def count(self, query: Any) -> int:
        return int((await self.send(query)).count or 0)

    async def fill(
        self,
        table: str,
        key: str,
        incoming: list[dict[str, Any]],
        columns: Sequence[str],
        merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    ) -> None:
        """Read the stored rows that (project_id, key) matched, and write back those whose
        merge with the incoming row changes something: one read per 100 keys, one upsert."""
        by_project: dict[str, dict[str, dict[str, Any]]] = {}
        for row in incoming:
            by_project.setdefault(row["project_id"], {})[row[key]] = row
        fills: list[dict[str, Any]] = []
        for project_id, wanted in by_project.items():
            for some in chunked(sorted(wanted), MAX_IDS_PER_FILTER):
                query = (
                    self.table(table)
                    .select(",".join(dict.fromkeys(columns)))
                    .eq("project_id", project_id)
                    .in_(key, list(some))
                )
                for stored in await self.rows(query):
                    merged = merge(stored, wanted[stored[key]])
                    if any(merged[k] != stored[k] for k in merged):
                        fills.append({**stored, **merged})
        if fills:
            await self.upsert(table, fills, f"project_id,{key}")


def _filtered(build: Callable[[], Any], column: str, values: list[str]) -> Callable[[], Any]:
    return lambda: build().in_(column, values)
