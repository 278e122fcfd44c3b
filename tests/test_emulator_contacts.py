"""Prospeo, Hunter and NeverBounce: the real clients against the emulators, over real sockets.

Every expectation comes from the same deterministic world the emulators answer from
(`World(7)`), so these tests check the clients, the emulators and the waterfall together.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tam.clients._retry import call_with_retries
from tam.clients.hunter import HunterClient
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import (
    ProspeoClient,
    prospeo_locations,
    prospeo_seniorities,
)
from tam.emulators import EMULATOR_KEY, EmulatorControl, EmulatorServer, World, sample_companies
from tam.errors import AuthFailed, BadResponse, OutOfCredits, Unavailable
from tam.limiters import AccountLimiter
from tam.settings import LimitConfig
from tam.steps.email_waterfall import EmailLookup, find_email

PROVIDERS = ("prospeo", "hunter", "neverbounce")
WORLD = World(7)
SITES = [c["domain"] for c in sample_companies(12)]


@dataclass
class Clients:
    prospeo: ProspeoClient
    hunter: HunterClient
    neverbounce: NeverBounceClient


@pytest.fixture
def control(emulators: EmulatorServer) -> Iterator[EmulatorControl]:
    # Clean counters before (another module may have used the session server) and after.
    ctl = EmulatorControl(emulators.url)
    for provider in PROVIDERS:
        ctl.reset(provider, knobs=True)
    yield ctl
    for provider in PROVIDERS:
        ctl.reset(provider, knobs=True)


def make_clients(emulators: EmulatorServer, key: str = EMULATOR_KEY) -> Clients:
    return Clients(
        prospeo=ProspeoClient(api_key=key, base_url=emulators.base_url("prospeo")),
        hunter=HunterClient(api_key=key, base_url=emulators.base_url("hunter")),
        neverbounce=NeverBounceClient(api_key=key, base_url=emulators.base_url("neverbounce")),
    )


@pytest.fixture
async def clients(emulators: EmulatorServer, control: EmulatorControl) -> AsyncIterator[Clients]:
    c = make_clients(emulators)
    yield c
    for client in (c.prospeo, c.hunter, c.neverbounce):
        await client.close()


def stats(control: EmulatorControl, provider: str) -> dict[str, Any]:
    return control.stats(provider, latencies=False)


def lookup(domain: str, person: dict[str, Any]) -> EmailLookup:
    return EmailLookup(
        first_name=person["first_name"],
        last_name=person["last_name"],
        linkedin_url=person["linkedin_url"],
        domain=domain,
    )


async def waterfall(
    c: Clients, who: EmailLookup, limiters: dict[str, AccountLimiter] | None = None
):
    return await find_email(
        who,
        prospeo=c.prospeo,
        hunter=c.hunter,
        neverbounce=c.neverbounce,
        limiters=limiters or {},
        max_attempts=3,
    )


# --- Prospeo search ------------------------------------------------------------------------
async def test_pagination_fetches_every_page_once(clients: Clients, control: EmulatorControl):
    expected = [p["linkedin_url"] for d in SITES for p in WORLD.people(d)]
    assert len(expected) > 50  # at least three pages
    seen: list[str] = []
    page_no, pages = 1, 0
    while True:
        page = await clients.prospeo.search_people(SITES, page=page_no)
        pages += 1
        assert len(page.results) <= 25
        seen += [hit.person.linkedin_url or "" for hit in page.results]
        for hit in page.results:
            assert hit.company is not None and hit.company.domain in SITES
        if not page.has_next:
            break
        page_no += 1
    assert seen == expected and len(set(seen)) == len(seen)
    assert pages == page.pagination.total_page == -(-len(expected) // 25)
    assert page.pagination.total_count == len(expected)
    past = await clients.prospeo.search_people(SITES, page=pages + 1)
    assert past.results == [] and past.pagination.total_page == 0
    s = stats(control, "prospeo")
    assert s["calls_by_endpoint"] == {"search_person": pages + 1}
    assert s["credits"] == pages == clients.prospeo.usage.credits  # the empty page is free


async def test_seniority_and_location_filters(clients: Clients):
    seniorities = prospeo_seniorities(["C-Suite", "VP", "Founder"])
    locations = prospeo_locations(["US"])
    page = await clients.prospeo.search_people(SITES, seniorities=seniorities, locations=locations)
    expected = [
        p["linkedin_url"]
        for d in SITES
        for p in WORLD.people(d)
        if p["seniority"] in seniorities and p["location"]["country_code"] == "US"
    ]
    assert expected and len(expected) <= 25
    assert [hit.person.linkedin_url for hit in page.results] == expected
    for hit in page.results:
        assert hit.person.location is not None and hit.person.location.country_code == "US"


async def test_no_results_is_an_empty_page(clients: Clients, control: EmulatorControl):
    page = await clients.prospeo.search_people(SITES[:2], locations=["Antarctica #AQ"])
    assert page.results == [] and page.pagination.total_page == 0
    assert stats(control, "prospeo")["status_counts"] == {"400": 1}
    assert clients.prospeo.usage.credits == 0


async def test_500_website_cap(clients: Clients, emulators: EmulatorServer, control):
    many = [c["domain"] for c in sample_companies(501)]
    with pytest.raises(ValueError):
        await clients.prospeo.search_people(many)
    assert stats(control, "prospeo")["calls"] == 0  # refused before sending
    page = await clients.prospeo.search_people(many[:500], seniorities=["C-Suite"])
    assert page.pagination.total_count > 25
    async with httpx.AsyncClient(trust_env=False) as http:
        raw = await http.post(
            emulators.base_url("prospeo") + "/search-person",
            headers={"X-KEY": EMULATOR_KEY},
            json={"page": 1, "filters": {"company": {"websites": {"include": many}}}},
        )
    assert raw.status_code == 400
    assert raw.json()["error_code"] == "INVALID_FILTERS" and "500" in raw.json()["filter_error"]


# --- the waterfall -------------------------------------------------------------------------
def sample_by_outcome(per_outcome: int = 3) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    picked: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for company in sample_companies(60):
        for person in WORLD.people(company["domain"]):
            outcome = WORLD.email_outcome(company["domain"], person)
            bucket = picked.setdefault(outcome, [])
            if len(bucket) < per_outcome:
                bucket.append((company["domain"], person))
    return picked


async def test_waterfall_matches_the_world(clients: Clients, control: EmulatorControl):
    sample = sample_by_outcome()
    assert set(sample) == {
        "prospeo_verified",
        "hunter_valid",
        "hunter_catchall",
        "hunter_invalid",
        "nowhere",
    }
    expected_status = {
        "prospeo_verified": ("verified", "prospeo"),
        "hunter_valid": ("verified", "hunter"),
        "hunter_catchall": ("catch_all", "hunter"),
        "hunter_invalid": ("invalid", "hunter"),
        "nowhere": ("not_found", None),
    }
    checked_by_neverbounce: list[str] = []
    for outcome, people in sample.items():
        for domain, person in people:
            result = await waterfall(clients, lookup(domain, person))
            assert (result.email_status, result.source) == expected_status[outcome]
            assert (result.email_status, result.source) == WORLD.expected_email(domain, person)
            if result.email_status in ("verified", "catch_all"):
                assert result.email == WORLD.email_for(domain, person)
            else:
                assert result.email is None
            if outcome.startswith("hunter") and WORLD.hunter_status(domain, person) != "valid":
                checked_by_neverbounce.append(person["email"])
                assert result.raw["neverbounce"]["result"] == WORLD.neverbounce_result(
                    domain, person
                )
    prospeo, hunter, neverbounce = (stats(control, p) for p in PROVIDERS)
    everyone = [p for people in sample.values() for _, p in people]
    # Prospeo is asked about everyone, once each; Hunter never about Prospeo's finds.
    assert prospeo["calls_by_item"] == {p["linkedin_url"]: 1 for p in everyone}
    hunter_keys = {k.split("@")[0] for k in hunter["calls_by_item"]}
    assert hunter_keys == {
        f"{p['first_name']} {p['last_name']}".lower()
        for outcome, people in sample.items()
        if outcome != "prospeo_verified"
        for _, p in people
    }
    assert max(hunter["calls_by_item"].values()) == 1
    assert sorted(neverbounce["calls_by_item"]) == sorted(checked_by_neverbounce)
    assert clients.prospeo.usage.credits == len(sample["prospeo_verified"])
    assert clients.hunter.usage.credits == len(everyone) - len(sample["prospeo_verified"]) - len(
        sample["nowhere"]
    )


async def test_reenriching_a_person_is_free(clients: Clients, control: EmulatorControl):
    domain, person = sample_by_outcome(1)["prospeo_verified"][0]
    first = await waterfall(clients, lookup(domain, person))
    second = await waterfall(clients, lookup(domain, person))
    assert first.raw["prospeo"]["free_enrichment"] is False
    assert second.raw["prospeo"]["free_enrichment"] is True
    assert clients.prospeo.usage.credits == 1 == stats(control, "prospeo")["credits"]


async def test_waterfall_without_linkedin_uses_name_and_domain(clients: Clients):
    domain, person = sample_by_outcome(1)["prospeo_verified"][0]
    who = EmailLookup(
        first_name=person["first_name"].upper(), last_name=person["last_name"], domain=domain
    )
    result = await waterfall(clients, who)
    assert (result.email_status, result.source) == ("verified", "prospeo")
    nobody = await waterfall(clients, EmailLookup(first_name="No", last_name="Body", domain=domain))
    assert nobody.email_status == "not_found"


# --- failures ------------------------------------------------------------------------------
async def test_bad_keys_are_auth_failures(emulators: EmulatorServer, control: EmulatorControl):
    bad = make_clients(emulators, key="invalid-key")
    with pytest.raises(AuthFailed) as prospeo:
        await bad.prospeo.search_people(SITES[:1])
    with pytest.raises(AuthFailed) as hunter:
        await bad.hunter.find_email(domain=SITES[0], first_name="Ada", last_name="Lovelace")
    with pytest.raises(AuthFailed) as neverbounce:
        await bad.neverbounce.verify(f"ada@{SITES[0]}")
    for info in (prospeo, hunter, neverbounce):
        assert "invalid-key" not in str(info.value)
    assert (prospeo.value.status_code, hunter.value.status_code) == (401, 401)
    assert neverbounce.value.status_code == 200  # NeverBounce says auth_failure with a 200
    domain, person = sample_by_outcome(1)["hunter_catchall"][0]
    with pytest.raises(AuthFailed):  # systemic: the waterfall does not swallow it
        await waterfall(bad, lookup(domain, person))
    for client in (bad.prospeo, bad.hunter, bad.neverbounce):
        await client.close()


async def test_out_of_credits_in_each_providers_shape(clients: Clients, control):
    for provider in PROVIDERS:
        control.configure(provider, out_of_credits=True)
    with pytest.raises(OutOfCredits) as prospeo:
        await clients.prospeo.search_people(SITES[:1])
    with pytest.raises(OutOfCredits) as hunter:
        await clients.hunter.find_email(domain=SITES[0], first_name="A", last_name="B")
    with pytest.raises(OutOfCredits) as neverbounce:
        await clients.neverbounce.verify(f"ada@{SITES[0]}")
    assert prospeo.value.status_code == 400  # INSUFFICIENT_CREDITS
    assert hunter.value.status_code == 429  # Hunter's usage limit
    assert neverbounce.value.status_code == 200  # general_failure + credits message


async def test_injected_rate_limits_are_retried(clients: Clients, control: EmulatorControl):
    for provider in PROVIDERS:
        control.configure(provider, error_first_n={429: 1})
    limiters = {p: AccountLimiter(p, LimitConfig(max_in_flight=2)) for p in PROVIDERS}
    domain, person = next(
        (d, p)
        for d, p in sample_by_outcome(5)["hunter_catchall"]
        if WORLD.hunter_status(d, p) != "valid"
    )
    started = time.monotonic()
    result = await waterfall(clients, lookup(domain, person), limiters)
    assert (result.email_status, result.source) == ("catch_all", "hunter")
    assert time.monotonic() - started >= 1.0  # each provider's retry-after/pause was honoured
    prospeo, hunter, neverbounce = (stats(control, p) for p in PROVIDERS)
    assert prospeo["status_counts"] == {"400": 1, "429": 1}  # NO_MATCH after the retry
    assert hunter["status_counts"] == {"200": 1, "403": 1}  # Hunter's rate limit is a 403
    assert neverbounce["status_counts"] == {"200": 2}  # throttle_triggered comes as a 200
    assert neverbounce["calls_by_item"] == {person["email"]: 2}
    assert all(limiter.stats.rate_limited == 1 for limiter in limiters.values())


async def test_injected_server_errors_are_retried(clients: Clients, control: EmulatorControl):
    control.configure("prospeo", error_first_n={503: 1})
    control.configure("hunter", error_first_n={500: 1})
    control.configure("neverbounce", error_first_n={503: 1})
    domain, person = sample_by_outcome(1)["hunter_invalid"][0]
    result = await waterfall(clients, lookup(domain, person))
    assert result.email_status == "invalid"
    control.configure("neverbounce", error_first_n={503: 5})
    with pytest.raises(Unavailable):  # temp_unavail until the attempts run out
        await call_with_retries(
            lambda: clients.neverbounce.verify(person["email"]),
            limiter=None,
            max_attempts=2,
            sleep=_no_sleep,
        )


async def _no_sleep(_seconds: float) -> None:
    return None


async def test_malformed_answers_are_bad_responses(clients: Clients, control: EmulatorControl):
    for provider in PROVIDERS:
        control.configure(provider, malformed_rate=1.0)
    domain, person = sample_by_outcome(1)["prospeo_verified"][0]
    for _ in range(3):  # each emulator rotates truncated JSON, wrong types and HTML
        with pytest.raises(BadResponse):
            await clients.prospeo.search_people([domain])
        with pytest.raises(BadResponse):
            await clients.hunter.find_email(
                domain=domain, first_name=person["first_name"], last_name=person["last_name"]
            )
        with pytest.raises(BadResponse):
            await clients.neverbounce.verify(person["email"])


async def test_alternative_key_and_body_forms(emulators: EmulatorServer, control):
    domain, person = sample_by_outcome(1)["hunter_valid"][0]
    async with httpx.AsyncClient(trust_env=False) as http:
        hunter = await http.get(
            emulators.base_url("hunter") + "/v2/email-finder",
            params={"domain": domain, "full_name": person["full_name"], "api_key": "k"},
        )
        form = await http.post(
            emulators.base_url("neverbounce") + "/v4/single/check",
            data={"key": "k", "email": person["email"]},
        )
        json_body = await http.post(
            emulators.base_url("neverbounce") + "/v4.2/single/check",
            json={"key": "k", "email": person["email"]},
        )
        keyless = await http.post(
            emulators.base_url("neverbounce") + "/v4/single/check",
            data={"email": person["email"]},
        )
    assert hunter.json()["data"]["email"] == person["email"]
    assert form.json()["result"] == json_body.json()["result"] == "valid"
    assert keyless.status_code == 200 and keyless.json()["status"] == "auth_failure"


async def test_hunter_miss_claimed_and_wrong_route_are_told_apart(
    clients: Clients, emulators: EmulatorServer, control: EmulatorControl
):
    from tam.errors import NotFound, SystemicError

    domain = sample_companies(1)[0]["domain"]
    control.configure("hunter", miss_status=404)
    # Nobody of that name works there: a miss, answered 404 email_not_found.
    assert await clients.hunter.find_email(domain=domain, first_name="No", last_name="One") is None
    control.configure("hunter", claimed_rate=1.0)
    with pytest.raises(NotFound, match="not to process"):
        await clients.hunter.find_email(domain=domain, first_name="No", last_name="One")
    assert stats(control, "hunter")["status_counts"] == {"404": 1, "451": 1}
    wrong = HunterClient(api_key=EMULATOR_KEY, base_url=emulators.base_url("hunter") + "/api")
    try:
        with pytest.raises(SystemicError, match="endpoint not found"):
            await wrong.find_email(domain=domain, first_name="No", last_name="One")
    finally:
        await wrong.close()
