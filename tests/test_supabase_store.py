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

from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
import respx

from tam.models import JobStatus, JobUpdate, NewCompany, QualificationResult
from tam.settings import Settings
from tam.stores import SqlStore, Store, StoreError, open_store
from tam.stores.supabase_rest import SupabaseRestStore, supabase_api_url
from tests.fixtures.postgrest import KEY, URL, FakePostgrest
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
    assert writes <= 1000 / 25, writes  # docs/performance.md, "Targets": ≤ 1 per 25 rows
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
