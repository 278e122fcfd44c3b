"""ProviderClient: one status → error hook per client, from_settings, usage and close."""

from __future__ import annotations

import inspect
import json
import logging

import httpx
import pytest

from tam.clients._base import ProviderClient
from tam.clients._http import ProviderHTTP, check_status
from tam.clients.brightdata import BrightDataClient
from tam.clients.discolike import DiscolikeClient
from tam.clients.google_places import GooglePlacesClient
from tam.clients.hunter import HunterClient
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import ProspeoClient
from tam.errors import (
    AuthFailed,
    InvalidRequest,
    NotFound,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Unavailable,
)
from tam.providers import PROVIDERS
from tam.secrets import redact, register_secret
from tam.settings import Settings

HTTP_CLIENTS = [
    BrightDataClient,
    DiscolikeClient,
    GooglePlacesClient,
    HunterClient,
    NeverBounceClient,
    ProspeoClient,
]


def response(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://api.example.test/v1/x")
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers, request=request)


def test_no_client_chooses_its_ok_statuses() -> None:
    # One path from status to error: the client's `map_status` hook, never a list of
    # statuses that skip the shared mapping.
    assert "ok" not in inspect.signature(ProviderHTTP.request).parameters
    for client in HTTP_CLIENTS:
        assert issubclass(client, ProviderClient)
        assert client.provider in PROVIDERS


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, RateLimited),
        (401, AuthFailed),
        (403, AuthFailed),
        (402, OutOfCredits),
        (404, NotFound),
        (503, Unavailable),
        (408, Unavailable),
        (400, InvalidRequest),
        (202, InvalidRequest),
    ],
)
def test_the_default_hook_is_the_shared_mapping(status: int, error: type[ProviderError]) -> None:
    assert check_status("acme", response(200)) is None
    mapped = check_status("acme", response(status, {"message": "no"}, **{"retry-after": "3"}))
    assert type(mapped) is error
    if error in (RateLimited, Unavailable):
        assert mapped is not None and mapped.retry_after == 3.0


class _Acme(ProviderClient):
    provider = "hunter"  # any row will do: the table supplies the defaults

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"x-key": api_key}, {"k": "1"}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        if response.status_code == 299:
            return Unavailable("299 means later here", provider=self.provider)
        return super().map_status(response)


async def test_every_request_goes_through_the_hook_and_carries_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(299 if request.url.path == "/later" else 200, json={})

    transport = httpx.MockTransport(handler)
    async with _Acme(
        api_key="acme-key-123456",
        http_client=httpx.AsyncClient(base_url="https://acme.test", transport=transport),
    ) as client:
        await client._request("GET", "/now")
        with pytest.raises(Unavailable, match="299 means later"):
            await client._request("GET", "/later")
        assert client.calls == 2
        assert client.usage.provider == "hunter" and client.usage.cost_usd == 0


async def test_the_key_travels_as_auth_says() -> None:
    client = _Acme(api_key="acme-key-123456", base_url="https://acme.test/")
    try:
        request = client._http._client.build_request("GET", "/x")
        assert request.headers["x-key"] == "acme-key-123456"
        assert str(client._http._client.base_url) == "https://acme.test"
        assert client._http._params == {"k": "1"}
    finally:
        await client.close()


async def test_from_settings_reads_the_provider_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUNTER_API_KEY", "hunter-key-123456")
    monkeypatch.setenv("HUNTER_BASE_URL", "https://hunter.example.test")
    monkeypatch.setenv("TAM_PROVIDER_PRICES", json.dumps({"hunter_credit_usd": 0.5}))
    monkeypatch.setenv("TAM_HTTP_TIMEOUT_S", "7")
    async with HunterClient.from_settings(Settings()) as hunter:
        assert hunter.credit_price_usd == 0.5
        assert str(hunter._http._client.base_url) == "https://hunter.example.test"
        assert hunter._http._client.timeout.read == 7


async def test_from_settings_builds_every_client_from_the_emulator_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tam.clients.anthropic import ClaudeQualifier
    from tam.emulators.server import env_for

    for name, value in env_for("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAM_ANTHROPIC_MODEL", "claude-sonnet-4-5")
    monkeypatch.setenv("BRIGHTDATA_POSTS_DATASET_ID", "gd_test")
    settings = Settings()
    for client_class in HTTP_CLIENTS:
        async with client_class.from_settings(settings) as client:
            assert (
                str(client._http._client.base_url).rstrip("/")
                == f"http://127.0.0.1:9/{client.provider}"
            )
    async with BrightDataClient.from_settings(settings) as brightdata:
        assert brightdata.dataset_id == "gd_test"
    async with ClaudeQualifier.from_settings(settings) as claude:
        assert claude.model == "claude-sonnet-4-5" and claude.max_tokens == 400
        assert claude.cost(1_000_000, 0) == 3.0  # the table's sonnet price


def test_the_one_registry_hides_keys_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-registry-LEAKCHECK-0123456789"
    register_secret(key)
    assert key not in str(Unavailable(f"echoed {key}", provider="hunter"))
    assert redact(f"{key} at postgres://u:hunter2@db/x", []) == "*** at postgres://u:***@db/x"
    assert redact("short pw abcd", ["abcd"]) == "short pw ***"
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info("GET https://api.test/?key=%s", key)
    assert key not in caplog.text and "***" in caplog.text
