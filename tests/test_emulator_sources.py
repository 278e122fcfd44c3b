"""The sourcing and LinkedIn clients against their emulators, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tam.clients.brightdata import BrightDataClient, ProfileInput, SnapshotFailed
from tam.clients.discolike import DiscolikeClient
from tam.clients.google_places import GooglePlacesClient, website_domain
from tam.domains import normalize_domain
from tam.emulators.brightdata import POSTS_DATASET_ID, BrightDataEmulator, is_dead_profile
from tam.emulators.discolike import CATEGORIES
from tam.emulators.google_places import GooglePlacesEmulator
from tam.emulators.server import EmulatorControl, EmulatorServer
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    SystemicError,
    Unavailable,
)

PROFILES = [f"https://www.linkedin.com/in/member-{i}/" for i in range(40)]


@pytest.fixture
async def brightdata(emulators: EmulatorServer) -> AsyncIterator[BrightDataClient]:
    client = BrightDataClient(
        api_token="emulator-key",
        base_url=emulators.base_url("brightdata"),
        dataset_id=POSTS_DATASET_ID,
        poll_interval_s=0.05,
        snapshot_timeout_s=20,
    )
    yield client
    await client.close()


@pytest.fixture
async def discolike(emulators: EmulatorServer) -> AsyncIterator[DiscolikeClient]:
    client = DiscolikeClient(api_key="emulator-key", base_url=emulators.base_url("discolike"))
    yield client
    await client.close()


@pytest.fixture
async def places(emulators: EmulatorServer) -> AsyncIterator[GooglePlacesClient]:
    client = GooglePlacesClient(
        api_key="emulator-key",
        base_url=emulators.base_url("google_places"),
        page_token_wait_s=0.15,
    )
    yield client
    await client.close()


# --- Bright Data ---------------------------------------------------------------------------
async def test_trigger_progress_202_then_snapshot(emulators, emulator_control, brightdata):
    emulator_control.configure("brightdata", snapshot_ready_s=0.4)
    start = datetime.now(UTC) - timedelta(days=400)
    inputs = [
        ProfileInput(url=u, start_date=start.strftime("%Y-%m-%dT00:00:00.000Z"))
        for u in PROFILES[:5]
    ]
    snapshot_id = await brightdata.trigger(inputs)
    assert snapshot_id.startswith("s_")
    first = await brightdata.progress(snapshot_id)
    assert first.status in ("starting", "running") and first.dataset_id == POSTS_DATASET_ID
    assert await brightdata.download(snapshot_id) is None  # 202 while it is being built
    while not (await brightdata.progress(snapshot_id)).is_ready:
        await asyncio.sleep(0.05)
    records = await brightdata.download(snapshot_id)
    assert records is not None and all(r.input_url in PROFILES[:5] for r in records)
    stats = emulator_control.stats("brightdata")
    assert stats["status_counts"]["202"] == 1 and stats["calls_by_endpoint"]["trigger"] == 1


async def test_one_snapshot_for_many_profiles_matches_the_world(
    emulators: EmulatorServer, emulator_control: EmulatorControl, brightdata: BrightDataClient
):
    emulator_control.configure("brightdata", snapshot_ready_s=0.3)
    emulator = emulators.emulator("brightdata")
    assert isinstance(emulator, BrightDataEmulator)
    today = datetime.now(UTC).date()
    since = today - timedelta(days=30)
    result = await brightdata.collect(PROFILES, start_date=since)

    dead = {u for u in PROFILES if is_dead_profile(u, world=emulators.app.world, rate=0.05)}
    assert set(result.errors) == dead and all(
        code == "dead_page" for code in result.errors.values()
    )
    active = 0
    for url in PROFILES:
        expected = [
            p["date_posted"]
            for p in emulator.posts_for(url, today)
            if p["date_posted"] >= f"{since.isoformat()}T00:00:00.000Z"
        ]
        newest = result.last_post_date(url)
        if url in dead or not expected:
            assert newest is None, url
            continue
        active += 1
        assert newest == datetime.fromisoformat(max(expected).replace("Z", "+00:00")), url
        assert len(result.posts[url]) == len(expected)
    assert 5 <= active <= 30  # some active, some only older posts or none
    assert any(emulator.posts_for(u, today) and result.last_post_date(u) is None for u in PROFILES)
    stats = emulator_control.stats("brightdata")
    assert stats["calls_by_endpoint"]["trigger"] == 1  # ONE snapshot for all 40 profiles
    assert stats["profiles_triggered"] == 40
    assert (
        result.usage.credits == stats["records_delivered"] == sum(map(len, result.posts.values()))
    )


async def test_failed_snapshot_raises_so_the_caller_can_retry(emulator_control, brightdata):
    emulator_control.configure("brightdata", snapshot_ready_s=0.1, snapshot_fail_rate=1.0)
    with pytest.raises(SnapshotFailed) as info:
        await brightdata.collect(PROFILES[:3], start_date=datetime.now(UTC).date())
    assert isinstance(info.value, Unavailable) and info.value.retryable


async def test_brightdata_account_and_config_errors(emulators, emulator_control, brightdata):
    base = emulators.base_url("brightdata")
    bad_key = BrightDataClient(
        api_token="invalid-token", base_url=base, dataset_id=POSTS_DATASET_ID
    )
    with pytest.raises(AuthFailed):
        await bad_key.collect(PROFILES[:2], start_date=datetime.now(UTC).date())
    wrong_dataset = BrightDataClient(api_token="k", base_url=base, dataset_id="gd_nope")
    with pytest.raises(SystemicError, match="dataset does not exist"):
        await wrong_dataset.trigger([ProfileInput(url=PROFILES[0])])
    emulator_control.configure("brightdata", out_of_credits=True)
    with pytest.raises(OutOfCredits):
        await brightdata.trigger([ProfileInput(url=PROFILES[0])])
    for client in (bad_key, wrong_dataset):
        await client.close()


# --- Discolike -----------------------------------------------------------------------------
SEEDS = ["stripe.com", "www.notion.so", "https://linear.app/"]


async def test_discover_answers_a_bare_array_of_look_alikes(emulators, emulator_control, discolike):
    page = await discolike.discover_page(
        domains=SEEDS, country="US", max_records=50, min_digital_footprint=300
    )
    companies = page.companies
    assert 0 < len(companies) <= 50 and page.total_count is not None
    assert page.total_count >= len(companies)
    seeds = {normalize_domain(s) for s in SEEDS}
    assert not seeds & {c.domain for c in companies}
    assert all(c.address and c.address.country == "US" for c in companies)
    assert all(c.score is not None and c.score >= 300 for c in companies)
    similarities = [c.similarity for c in companies]
    assert similarities == sorted(similarities, reverse=True)  # type: ignore[type-var]
    world = emulators.app.world
    seed_categories = {CATEGORIES[world.company_for(s)["industry"]][0] for s in seeds}  # type: ignore[arg-type]
    assert all(c.top_industry in seed_categories for c in companies)
    async with httpx.AsyncClient(trust_env=False) as http:
        raw = await http.get(
            emulators.base_url("discolike") + "/v1/discover",
            params=[("domain", "stripe.com"), ("max_records", "5")],
            headers={"x-discolike-key": "k"},
        )
    assert isinstance(raw.json(), list) and int(raw.headers["X-Total-Count"]) >= 5


async def test_filters_and_max_records_change_the_answer(emulator_control, discolike):
    wide = await discolike.discover_page(domains=SEEDS, max_records=10_000)
    narrow = await discolike.discover_page(
        domains=SEEDS, country=["GB", "DE"], max_records=10_000, min_digital_footprint=400
    )
    assert narrow.total_count is not None and wide.total_count is not None
    assert 0 < narrow.total_count < wide.total_count
    assert {c.address.country for c in narrow.companies if c.address} <= {"GB", "DE"}
    legacy = await discolike.discover_page(domains=SEEDS, max_records=7)
    assert len(legacy.companies) == 7 and legacy.total_count == wide.total_count
    sized = await discolike.discover(domains=SEEDS, max_records=500, employee_ranges=["11-50"])
    assert sized and {c.employees for c in sized} == {"11-50"}
    by_text = await discolike.discover(domains=[], icp_text="fintech payments", max_records=20)
    assert by_text and all(c.top_industry for c in by_text)


async def test_duplicate_domains_are_collapsed(emulator_control, discolike):
    emulator_control.configure("discolike", duplicate_rate=0.5)
    page = await discolike.discover_page(domains=SEEDS, max_records=40)
    assert page.usage.credits > len(page.companies)  # the raw array held duplicates
    domains = [normalize_domain(c.domain) for c in page.companies]
    assert len(domains) == len(set(domains)) == 40


async def test_discolike_errors(emulators, emulator_control, discolike):
    bad = DiscolikeClient(api_key="invalid", base_url=emulators.base_url("discolike"))
    with pytest.raises(AuthFailed):
        await bad.discover(domains=SEEDS)
    await bad.close()
    emulator_control.configure("discolike", malformed_rate=1.0)
    with pytest.raises(BadResponse, match="bare JSON array"):  # {"results": [...]} is wrong
        await discolike.discover(domains=SEEDS)
    emulator_control.configure("discolike", malformed_rate=0.0, out_of_credits=True)
    with pytest.raises(OutOfCredits):
        await discolike.discover(domains=SEEDS)


# --- Google Places -------------------------------------------------------------------------
def _full_query(emulator: GooglePlacesEmulator) -> str:
    for city in ("Austin", "Denver", "Chicago", "Seattle", "Boston"):
        query = f"dentists in {city}"
        if len(emulator.places_for(query)) == 60:
            return query
    raise AssertionError("no query with 60 places")


async def test_search_all_pages_through_three_tokens(emulators, emulator_control, places):
    emulator = emulators.emulator("google_places")
    assert isinstance(emulator, GooglePlacesEmulator)
    query = _full_query(emulator)
    found = await places.search_all(query)
    expected = emulator.places_for(query)
    assert [p.id for p in found] == [p["id"] for p in expected]
    assert [p.name for p in found] == [p["displayName"]["text"] for p in expected]
    assert [p.website_uri for p in found] == [p.get("websiteUri") for p in expected]
    assert any(p.website_uri is None for p in found)  # some places have no website
    assert any(website_domain(p.website_uri) is None for p in found if p.website_uri)
    stats = emulator_control.stats("google_places")
    assert stats["calls_by_endpoint"] == {"searchText": 3} and places.usage.credits == 3
    assert stats.get("page_token_too_early", 0) == 0


async def test_page_tokens_too_early_are_retried(emulators, emulator_control):
    emulator_control.configure("google_places", page_token_delay_s=0.3)
    client = GooglePlacesClient(
        api_key="k", base_url=emulators.base_url("google_places"), page_token_wait_s=0.05
    )
    emulator = emulators.emulator("google_places")
    assert isinstance(emulator, GooglePlacesEmulator)
    assert len(await client.search_all(_full_query(emulator), max_results=40)) == 40
    assert emulator_control.stats("google_places")["page_token_too_early"] >= 1
    with pytest.raises(InvalidRequest, match="invalid or has expired"):
        await client.search_text("dentists", page_token="not-a-token")
    await client.close()


async def test_field_mask_is_required_and_honoured(emulators, emulator_control):
    url = emulators.base_url("google_places") + "/v1/places:searchText"
    body = {"textQuery": "dentists in Austin"}
    async with httpx.AsyncClient(trust_env=False) as http:
        missing = await http.post(url, json=body, headers={"X-Goog-Api-Key": "k"})
        assert missing.status_code == 400
        error: dict[str, Any] = missing.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and "FieldMask" in error["message"]
        masked = await http.post(
            url, json=body, headers={"X-Goog-Api-Key": "k", "X-Goog-FieldMask": "places.id"}
        )
        assert masked.status_code == 200
        answer = masked.json()
        assert set(answer) == {"places"}  # no nextPageToken unless the mask names it
        assert all(set(p) == {"id"} for p in answer["places"])


async def test_places_errors(emulators, emulator_control, places):
    bad = GooglePlacesClient(api_key="invalid-key", base_url=emulators.base_url("google_places"))
    with pytest.raises(AuthFailed, match="API key not valid"):
        await bad.search_text("dentists in Austin")
    await bad.close()
    emulator_control.configure("google_places", out_of_credits=True)
    with pytest.raises(OutOfCredits, match="billing"):
        await places.search_text("dentists in Austin")
