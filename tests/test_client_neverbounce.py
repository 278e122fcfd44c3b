"""NeverBounceClient: 200-with-status errors, HTTP errors, parsing, key hygiene (respx)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from tam.clients.neverbounce import NeverBounceClient
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    RateLimited,
    SystemicError,
    Unavailable,
)

BASE = "https://neverbounce.test"
KEY = "secret_nb789"
CHECK = f"{BASE}/v4/single/check"


def success(result: str) -> dict[str, object]:
    return {
        "status": "success",
        "result": result,
        "flags": ["has_dns", "has_dns_mx"],
        "suggested_correction": "",
        "execution_time": 301,
    }


def failure(status: str, message: str) -> httpx.Response:
    # NeverBounce reports API errors with HTTP 200.
    return httpx.Response(200, json={"status": status, "message": message, "execution_time": 9})


@pytest.fixture
async def client() -> AsyncIterator[NeverBounceClient]:
    c = NeverBounceClient(api_key=KEY, base_url=BASE, credit_price_usd=0.01)
    yield c
    await c.close()


@pytest.mark.parametrize("result", ["valid", "invalid", "disposable", "catchall", "unknown"])
@respx.mock
async def test_results_and_request_shape(client: NeverBounceClient, result: str) -> None:
    route = respx.get(CHECK).respond(200, json=success(result))
    assert await client.verify("ada@acme.io") == result
    params = route.calls.last.request.url.params
    assert params["key"] == KEY and params["email"] == "ada@acme.io"
    assert client.usage.credits == 1 and client.usage.cost_usd == pytest.approx(0.01)


@respx.mock
async def test_check_keeps_flags(client: NeverBounceClient) -> None:
    respx.get(CHECK).respond(200, json=success("catchall") | {"credits_info": {"x": 1}})
    check = await client.check("ada@acme.io")
    assert check.flags == ["has_dns", "has_dns_mx"] and check.execution_time == 301


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (failure("auth_failure", f"Invalid API key '{KEY}'"), AuthFailed),
        (failure("bad_referrer", "The referrer for this request is not trusted"), AuthFailed),
        (failure("throttle_triggered", "Rate limit reached"), RateLimited),
        (failure("temp_unavail", "Service temporarily unavailable"), Unavailable),
        (failure("general_failure", "Insufficient credit balance"), OutOfCredits),
        (failure("general_failure", "Missing required parameter 'email'"), InvalidRequest),
        (failure("brand_new_status", "?"), BadResponse),
        (httpx.Response(500, text="<html><h1>500 Internal Server Error</h1></html>"), Unavailable),
        (httpx.Response(503, text=""), Unavailable),
        (httpx.Response(429, text="slow down"), RateLimited),
        (httpx.Response(401, text="no"), AuthFailed),
        (httpx.Response(404, text="<html>Not Found</html>"), SystemicError),
        (httpx.Response(400, text="bad"), InvalidRequest),
    ],
)
@respx.mock
async def test_failures_map_onto_the_tree(
    client: NeverBounceClient, response: httpx.Response, expected: type[Exception]
) -> None:
    respx.get(CHECK).mock(return_value=response)
    with pytest.raises(expected) as info:
        await client.verify("ada@acme.io")
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.args)
    assert info.value.provider == "neverbounce"  # type: ignore[attr-defined]
    assert client.usage.credits == 0


@respx.mock
async def test_throttle_has_no_retry_after_unless_sent(client: NeverBounceClient) -> None:
    route = respx.get(CHECK)
    route.mock(return_value=failure("throttle_triggered", "Rate limit reached"))
    with pytest.raises(RateLimited) as info:
        await client.verify("ada@acme.io")
    assert info.value.retry_after is None
    route.mock(
        return_value=httpx.Response(
            200, json={"status": "throttle_triggered"}, headers={"retry-after": "4"}
        )
    )
    with pytest.raises(RateLimited) as info:
        await client.verify("ada@acme.io")
    assert info.value.retry_after == 4


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>Bad Gateway</body></html>"),
        httpx.Response(200, text='{"status": "success", "resu'),
        httpx.Response(200, json={"status": "success", "result": "probably", "flags": []}),
        httpx.Response(200, json={"status": "success", "flags": "none"}),
        httpx.Response(200, json={"result": "valid"}),
        httpx.Response(200, json=[1, 2, 3]),
    ],
)
@respx.mock
async def test_garbage_answers_are_bad_responses(
    client: NeverBounceClient, response: httpx.Response
) -> None:
    respx.get(CHECK).mock(return_value=response)
    with pytest.raises(BadResponse):
        await client.verify("ada@acme.io")


@respx.mock
async def test_connection_errors_are_unavailable_without_the_key(
    client: NeverBounceClient,
) -> None:
    respx.get(CHECK).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(Unavailable) as info:
        await client.verify("ada@acme.io")
    assert KEY not in str(info.value)


async def test_rejects_non_addresses(client: NeverBounceClient) -> None:
    with pytest.raises(ValueError):
        await client.verify("not-an-email")
