"""ProspeoClient's request shape, parsing and error mapping (respx; the emulator tests the rest)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from tam.clients.prospeo import (
    ProspeoClient,
    prospeo_locations,
    prospeo_seniorities,
)
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    RateLimited,
    SystemicError,
    Unavailable,
)

BASE = "https://prospeo.test"
KEY = "pk-secret-123"


def hit(n: int) -> dict[str, Any]:
    return {
        "person": {
            "person_id": f"p{n}",
            "first_name": "Ada",
            "last_name": f"Lovelace{n}",
            "full_name": f"Ada Lovelace{n}",
            "linkedin_url": f"https://www.linkedin.com/in/ada-{n}",
            "current_job_title": "CEO",
            "location": {"country": "United States", "country_code": "US", "city": "Austin"},
            "job_history": [],
        },
        "company": {"name": "Acme", "website": "https://acme.io", "domain": "acme.io"},
    }


def page(results: list[dict[str, Any]], current: int = 1, total_page: int = 1) -> dict[str, Any]:
    return {
        "error": False,
        "results": results,
        "pagination": {
            "current_page": current,
            "per_page": 25,
            "total_page": total_page,
            "total_count": len(results),
        },
    }


def fail(code: str, status: int = 400, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": True, "error_code": code, **extra})


@pytest.fixture
async def client() -> AsyncIterator[ProspeoClient]:
    c = ProspeoClient(api_key=KEY, base_url=BASE, credit_price_usd=0.04)
    yield c
    await c.close()


@respx.mock
async def test_search_sends_real_filters_and_parses_a_page(client: ProspeoClient) -> None:
    route = respx.post(f"{BASE}/search-person").respond(200, json=page([hit(1), hit(2)], 2, 3))
    result = await client.search_people(
        ["acme.io", "https://www.beta.com"],
        seniorities=["C-Suite", "Vice President"],
        locations=["United States #US"],
        page=2,
    )
    request = route.calls.last.request
    assert request.headers["X-KEY"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "page": 2,
        "filters": {
            "company": {"websites": {"include": ["acme.io", "https://www.beta.com"]}},
            "person_seniority": {"include": ["C-Suite", "Vice President"]},
            "person_location_search": {"include": ["United States #US"]},
        },
    }
    assert [h.person.full_name for h in result.results] == ["Ada Lovelace1", "Ada Lovelace2"]
    assert result.results[0].company is not None
    assert result.results[0].company.domain == "acme.io"
    assert result.results[0].person.location is not None
    assert result.results[0].person.location.city == "Austin"
    assert result.pagination.total_page == 3 and result.has_next
    assert client.usage.credits == 1 and client.usage.cost_usd == pytest.approx(0.04)


@respx.mock
async def test_filters_are_left_out_when_not_given(client: ProspeoClient) -> None:
    route = respx.post(f"{BASE}/search-person").respond(200, json=page([hit(1)]))
    await client.search_people(["acme.io"])
    body = json.loads(route.calls.last.request.content)
    assert body == {"page": 1, "filters": {"company": {"websites": {"include": ["acme.io"]}}}}


@respx.mock
async def test_no_results_is_an_empty_page_and_free(client: ProspeoClient) -> None:
    respx.post(f"{BASE}/search-person").mock(return_value=fail("NO_RESULTS"))
    result = await client.search_people(["nobody.example"], page=4)
    assert result.results == []
    assert result.pagination.total_page == 0 and result.pagination.current_page == 4
    assert not result.has_next
    assert client.usage.credits == 0


@respx.mock
async def test_website_cap_and_empty_input_fail_before_sending(client: ProspeoClient) -> None:
    route = respx.post(f"{BASE}/search-person").respond(200, json=page([]))
    with pytest.raises(ValueError, match="at most 500"):
        await client.search_people([f"c{i}.com" for i in range(501)])
    with pytest.raises(ValueError):
        await client.search_people([])
    with pytest.raises(ValueError):
        await client.search_people(["a.com"], page=0)
    assert not route.called
    respx.post(f"{BASE}/search-person").respond(200, json=page([hit(1)]))
    assert len((await client.search_people([f"c{i}.com" for i in range(500)])).results) == 1


@respx.mock
async def test_enrich_sends_only_verified_and_returns_the_email(client: ProspeoClient) -> None:
    person = hit(1)["person"] | {
        "email": {"status": "VERIFIED", "revealed": True, "email": "ada@acme.io"}
    }
    route = respx.post(f"{BASE}/enrich-person").respond(
        200, json={"error": False, "free_enrichment": False, "person": person}
    )
    found = await client.enrich_person(
        first_name="Ada", last_name="Lovelace", company_website="acme.io", linkedin_url=" "
    )
    assert json.loads(route.calls.last.request.content) == {
        "only_verified_email": True,
        "enrich_mobile": False,
        "data": {"first_name": "Ada", "last_name": "Lovelace", "company_website": "acme.io"},
    }
    assert found is not None and found.email == "ada@acme.io"
    assert found.person.person_id == "p1"
    assert client.usage.credits == 1


@respx.mock
async def test_enrich_misses_cost_nothing(client: ProspeoClient) -> None:
    route = respx.post(f"{BASE}/enrich-person")
    route.mock(return_value=fail("NO_MATCH"))
    assert await client.enrich_person(linkedin_url="https://www.linkedin.com/in/x") is None
    again = hit(1)["person"] | {"email": {"status": "VERIFIED", "email": "ada@acme.io"}}
    route.respond(200, json={"error": False, "free_enrichment": True, "person": again})
    found = await client.enrich_person(linkedin_url="https://www.linkedin.com/in/x")
    assert found is not None and found.free_enrichment
    unverified = hit(1)["person"] | {"email": {"status": "UNVERIFIED", "email": None}}
    route.respond(200, json={"error": False, "free_enrichment": True, "person": unverified})
    assert await client.enrich_person(linkedin_url="https://www.linkedin.com/in/x") is None
    assert client.usage.credits == 0 and client.calls == 3


async def test_enrich_needs_enough_data_points(client: ProspeoClient) -> None:
    with pytest.raises(ValueError):
        await client.enrich_person(first_name="Ada", last_name="Lovelace")
    with pytest.raises(ValueError):
        await client.enrich_person(first_name="Ada", company_website="acme.io")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (fail("INVALID_API_KEY", 401), AuthFailed),
        (fail("ACCOUNT_RESTRICTED", 400), AuthFailed),
        (fail("INSUFFICIENT_CREDITS", 400), OutOfCredits),
        (fail("RATE_LIMITED", 429), RateLimited),
        (fail("RATE_LIMIT_EXCEEDED", 429), RateLimited),
        (fail("INTERNAL_ERROR", 400), Unavailable),
        (
            fail("INVALID_FILTERS", 400, filter_error="person_seniority: unknown ['CEO']"),
            InvalidRequest,
        ),
        (fail("INVALID_DATAPOINTS", 400), InvalidRequest),
        (httpx.Response(401, text="Unauthorized"), AuthFailed),
        (httpx.Response(429, text="<html>Too Many Requests</html>"), RateLimited),
        (httpx.Response(500, json={"error": True, "error_code": "INTERNAL_ERROR"}), Unavailable),
        (httpx.Response(503, text="<html><h1>503 Service Unavailable</h1></html>"), Unavailable),
        (httpx.Response(404, text="<html>Not Found</html>"), SystemicError),
        (httpx.Response(400, json={"message": "bad"}), InvalidRequest),
        (httpx.Response(200, json={"error": True, "error_code": "RATE_LIMITED"}), RateLimited),
    ],
)
@respx.mock
async def test_error_codes_map_onto_the_tree(
    client: ProspeoClient, response: httpx.Response, expected: type[Exception]
) -> None:
    respx.post(f"{BASE}/search-person").mock(return_value=response)
    with pytest.raises(expected) as info:
        await client.search_people(["acme.io"])
    assert KEY not in str(info.value)
    assert info.value.provider == "prospeo"  # type: ignore[attr-defined]
    if expected is InvalidRequest and "filter_error" in response.text:
        assert "person_seniority" in str(info.value)


@respx.mock
async def test_rate_limit_honours_retry_after(client: ProspeoClient) -> None:
    respx.post(f"{BASE}/enrich-person").mock(
        return_value=httpx.Response(
            429, json={"error": True, "error_code": "RATE_LIMITED"}, headers={"retry-after": "3"}
        )
    )
    with pytest.raises(RateLimited) as info:
        await client.enrich_person(linkedin_url="https://www.linkedin.com/in/x")
    assert info.value.retry_after == 3


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>502 Bad Gateway</body></html>"),
        httpx.Response(200, text='{"error": false, "results": [{"person": {"first_na'),
        httpx.Response(200, json={"error": False, "results": "none", "pagination": {}}),
        httpx.Response(200, json=page([hit(1)]) | {"pagination": {"total_page": "many"}}),
        httpx.Response(200, json=page([{"person": {"first_name": 42}}])),
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
@respx.mock
async def test_garbage_answers_are_bad_responses(
    client: ProspeoClient, response: httpx.Response
) -> None:
    respx.post(f"{BASE}/search-person").mock(return_value=response)
    with pytest.raises(BadResponse):
        await client.search_people(["acme.io"])
    assert client.usage.credits == 0


@respx.mock
async def test_transport_failures_are_unavailable(client: ProspeoClient) -> None:
    respx.post(f"{BASE}/enrich-person").mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(Unavailable):
        await client.enrich_person(linkedin_url="https://www.linkedin.com/in/x")


def test_icp_mappings() -> None:
    assert prospeo_seniorities(["C-Suite", "VP", "Director", "Manager", "Founder"]) == [
        "C-Suite",
        "Vice President",
        "Director",
        "Manager",
        "Founder/Owner",
    ]
    assert prospeo_seniorities(["VP", "VP", "Intern"]) == ["Vice President"]
    assert prospeo_locations(["US", "gb", "UK", "Atlantis"]) == [
        "United States #US",
        "United Kingdom #GB",
        "Atlantis",
    ]
