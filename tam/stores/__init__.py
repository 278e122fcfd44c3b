"""Stores: where projects, companies, contacts and jobs live. Pick one with `open_store`."""

from __future__ import annotations

from tam.settings import Settings, get_settings
from tam.stores.base import NotFoundInStore, Store, StoreError
from tam.stores.sql import SqlStore
from tam.stores.sql_engine import redact_url

_SQL_SCHEMES = ("sqlite", "postgres", "postgresql")
_SUPABASE_SCHEMES = ("supabase",)


def open_store(url: str | None = None, *, settings: Settings | None = None) -> Store:
    """The store for `url` (default: settings.database_url). Call `init_schema()` before use.

    - `sqlite:///path/tam.db` or `sqlite+aiosqlite:///...`: the embedded file database;
    - `postgresql://user:pw@host:port/db?sslmode=require` (or `postgres://`): any Postgres,
      including Supabase's direct connection and its transaction pooler on port 6543.
    """
    if url is None:
        url = (settings or get_settings()).database_url
    url = url.strip()
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _SQL_SCHEMES:
        return SqlStore(url)
    if scheme in _SUPABASE_SCHEMES or ".supabase.co" in url.lower():
        raise StoreError(
            "the Supabase REST store is not built yet; use the Postgres connection string "
            "from Supabase's dashboard (Project Settings > Database), e.g. "
            "postgresql://postgres.<ref>:<password>@<region>.pooler.supabase.com:6543/postgres"
            "?sslmode=require"
        )
    raise StoreError(
        f"unsupported store URL {redact_url(url)}: expected sqlite:///... or postgresql://..."
    )


__all__ = [
    "NotFoundInStore",
    "SqlStore",
    "Store",
    "StoreError",
    "open_store",
    "redact_url",
]
