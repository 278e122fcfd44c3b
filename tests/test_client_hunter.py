"""HunterClient's request shape, parsing and error mapping (respx; the emulator tests the rest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from tam.clients.hunter import HunterClient
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    NotFound,
    OutOfCredits,
    RateLimited,
    SystemicError,
    Unavailable,
)

BASE = "https://hunter.test"
KEY = "hk-secret-456"
FINDER = f"{BASE}/v2/email-finder"


def answer(email: str | None, status: str | None = "valid", score: int | None = 95) -> dict:
    data: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": email,
        "score": score if email else None,
        "domain": "acme.io",
        "accept_all": False,
        "position": "CEO",
        "twitter": None,
        "linkedin_url": None,
        "phone_number": None,
        "company": "Acme",
        "sources": [],
        "verification": {"date": "2025-06-01" if email else None, "status": status},
    }
    return {"data": data, "meta": {"params": {"domain": "acme.io"}}}


def errors(status: int, error_id: str, details: str, **headers: str) -> httpx.Response:
    body = {"errors": [{"id": error_id, "code": status, "details": details}]}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
async def client() -> AsyncIterator[HunterClient]:
    c = HunterClient(api_key=KEY, base_url=BASE, credit_price_usd=0.02)
    yield c
    await c.close()


@respx.mock
async def test_found_email_is_parsed_and_costs_a_credit(client: HunterClient) -> None:
    route = respx.get(FINDER).respond(200, json=answer("ada@acme.io", "accept_all", 72))
    found = await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")
    request = route.calls.last.request
    assert request.headers["X-API-KEY"] == KEY
    assert dict(request.url.params) == {
        "domain": "acme.io",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    assert KEY not in str(request.url)  # the key stays out of URLs (and so out of logs)
    assert found is not None
    assert (found.email, found.score, found.verification_status) == (
        "ada@acme.io",
        72,
        "accept_all",
    )
    assert found.position == "CEO"
    assert client.usage.credits == 1 and client.usage.cost_usd == pytest.approx(0.02)


@respx.mock
async def test_a_miss_is_none_and_free(client: HunterClient) -> None:
    respx.get(FINDER).respond(200, json=answer(None, status=None))
    assert await client.find_email(domain="acme.io", first_name="Ada", last_name="X") is None
    assert client.usage.credits == 0 and client.calls == 1


@respx.mock
async def test_a_404_naming_the_missing_email_is_a_miss_not_a_wrong_route(
    client: HunterClient,
) -> None:
    respx.get(FINDER).mock(
        return_value=errors(404, "email_not_found", "No email address was found.")
    )
    assert await client.find_email(domain="acme.io", first_name="Ada", last_name="X") is None
    assert client.usage.credits == 0


async def test_needs_domain_and_names(client: HunterClient) -> None:
    with pytest.raises(ValueError):
        await client.find_email(domain="acme.io", first_name="Ada", last_name=" ")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            errors(401, "authentication_failed", "No user found for the API key supplied"),
            AuthFailed,
        ),
        (errors(429, "too_many_requests", "You have reached your monthly quota"), OutOfCredits),
        (errors(403, "too_many_requests", "You have reached the rate limit."), RateLimited),
        (errors(400, "wrong_params", "You are missing the domain parameter"), InvalidRequest),
        (errors(451, "claimed_email", "Asked us to stop the processing"), NotFound),
        (httpx.Response(451, text=""), NotFound),
        (errors(404, "not_found", "The requested resource couldn't be found."), SystemicError),
        (httpx.Response(404, text="<html><title>404 Not Found</title></html>"), SystemicError),
        (httpx.Response(404, text=""), SystemicError),
        (errors(500, "server_error", "Something went wrong"), Unavailable),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), Unavailable),
        (httpx.Response(503, text=""), Unavailable),
        (httpx.Response(401, text="<html>nope</html>"), AuthFailed),
        (httpx.Response(222, json={"errors": []}), Unavailable),
    ],
)
@respx.mock
async def test_statuses_map_onto_the_tree(
    client: HunterClient, response: httpx.Response, expected: type[Exception]
) -> None:
    respx.get(FINDER).mock(return_value=response)
    with pytest.raises(expected) as info:
        await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")
    assert KEY not in str(info.value)
    assert info.value.provider == "hunter"  # type: ignore[attr-defined]
    assert client.usage.credits == 0


@respx.mock
async def test_error_details_reach_the_message(client: HunterClient) -> None:
    respx.get(FINDER).mock(return_value=errors(400, "wrong_params", "You are missing the domain"))
    with pytest.raises(InvalidRequest, match="wrong_params: You are missing the domain"):
        await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")


@respx.mock
async def test_rate_limit_keeps_retry_after_when_sent(client: HunterClient) -> None:
    respx.get(FINDER).mock(
        return_value=errors(403, "too_many_requests", "rate limit", **{"retry-after": "2"})
    )
    with pytest.raises(RateLimited) as info:
        await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")
    assert info.value.retry_after == 2


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>Bad Gateway</body></html>"),
        httpx.Response(200, text='{"data": {"email": "ada@acme.io", "sco'),
        httpx.Response(200, json={"data": {"email": ["a", "b"], "score": "high"}}),
        httpx.Response(200, json={"meta": {}}),
        httpx.Response(200, json={"data": {"email": "a@acme.io", "verification": "valid"}}),
    ],
)
@respx.mock
async def test_garbage_answers_are_bad_responses(
    client: HunterClient, response: httpx.Response
) -> None:
    respx.get(FINDER).mock(return_value=response)
    with pytest.raises(BadResponse):
        await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")


@respx.mock
async def test_connection_errors_are_unavailable(client: HunterClient) -> None:
    respx.get(FINDER).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(Unavailable) as info:
        await client.find_email(domain="acme.io", first_name="Ada", last_name="Lovelace")
    assert KEY not in str(info.value)
