"""Stores: where projects, companies, contacts and jobs live. Pick one with `open_store`."""

from __future__ import annotations

from tam.settings import Settings, get_settings
from tam.stores.base import NotFoundInStore, Store, StoreError
from tam.stores.sql import SqlStore
from tam.stores.sql_engine import redact_url

_SQL_SCHEMES = ("sqlite", "postgres", "postgresql")
_SUPABASE_SCHEMES = ("supabase",)


def open_store(url: str | None = None, *, settings: Settings | None = None) -> Store:
    """The store for `url` (default: settings). Call `init_schema()` before use.

    - `sqlite:///path/tam.db` or `sqlite+aiosqlite:///...`: the embedded file database;
    - `postgresql://user:pw@host:port/db?sslmode=require` (or `postgres://`): any Postgres,
      including Supabase's direct connection and its transaction pooler on port 6543;
    - `supabase` (SUPABASE_URL), `supabase://<project-ref>`, `https://<ref>.supabase.co` or
      `supabase+http://127.0.0.1:54321` (a local `supabase start`): Supabase's REST API
      with SUPABASE_SERVICE_ROLE_KEY.

    With no URL anywhere (TAM_DATABASE_URL unset) but SUPABASE_URL and
    SUPABASE_SERVICE_ROLE_KEY set, the Supabase REST store is the one chosen; an explicit
    TAM_DATABASE_URL always wins.
    """
    if url is None:
        settings = settings or get_settings()
        explicit = "database_url" in settings.model_fields_set
        if not explicit and settings.supabase_url and settings.supabase_service_role_key:
            return _supabase(settings.supabase_url, settings)
        url = settings.database_url
    url = url.strip()
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _SQL_SCHEMES:
        return SqlStore(url)
    if scheme in _SUPABASE_SCHEMES or ".supabase.co" in url.lower():
        return _supabase(url, settings or get_settings())
    raise StoreError(
        f"unsupported store URL {redact_url(url)}: expected sqlite:///..., postgresql://... "
        "or supabase://<project-ref>"
    )


def _supabase(url: str, settings: Settings) -> Store:
    from tam.stores.supabase_rest import SupabaseRestStore, supabase_api_url

    key = settings.supabase_service_role_key
    if key is None or not key.get_secret_value():
        raise StoreError("the Supabase REST store needs SUPABASE_SERVICE_ROLE_KEY")
    return SupabaseRestStore(supabase_api_url(url, settings.supabase_url), key.get_secret_value())


__all__ = [
    "NotFoundInStore",
    "SqlStore",
    "Store",
    "StoreError",
    "open_store",
    "redact_url",
]
