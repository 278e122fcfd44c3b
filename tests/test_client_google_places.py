"""GooglePlacesClient's request, paging and error mapping (respx; the emulator tests the rest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
import respx

from tam.clients.google_places import (
    DEFAULT_FIELD_MASK,
    GooglePlacesClient,
    Place,
    to_new_company,
    website_domain,
)
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    RateLimited,
    Unavailable,
)

BASE = "https://places.test"
PATH = "/v1/places:searchText"


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def place(n: int, **extra: object) -> dict[str, object]:
    return {
        "id": f"ChIJ{n:04d}",
        "displayName": {"text": f"Plumber {n}", "languageCode": "en"},
        "formattedAddress": f"{n} Main St, Austin, TX 78701, USA",
        "websiteUri": f"https://www.plumber{n}.com/",
        "types": ["plumber", "point_of_interest", "establishment"],
        "primaryType": "plumber",
        **extra,
    }


def google_error(status: int, grpc: str, message: str, reason: str | None = None) -> httpx.Response:
    details = (
        [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    )
    body = {"error": {"code": status, "message": message, "status": grpc, "details": details}}
    return httpx.Response(status, json=body)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def client(sleep: FakeSleep) -> GooglePlacesClient:
    return GooglePlacesClient(api_key="AIza-secret", base_url=BASE, sleep=sleep)


async def test_search_text_always_sends_key_and_field_mask(mock, client):
    route = mock.post(PATH).respond(200, json={"places": [place(1)], "nextPageToken": "tok"})
    page = await client.search_text("plumbers in Austin", page_size=50, region_code="US")
    request = route.calls.last.request
    assert request.headers["x-goog-api-key"] == "AIza-secret"
    mask = request.headers["x-goog-fieldmask"]
    assert mask == DEFAULT_FIELD_MASK and "nextPageToken" in mask and "places.websiteUri" in mask
    assert json.loads(request.content) == {
        "textQuery": "plumbers in Austin",
        "pageSize": 20,
        "regionCode": "US",
    }
    (only,) = page.places
    assert only.name == "Plumber 1" and only.website_uri == "https://www.plumber1.com/"
    assert only.display_name is not None and only.display_name.language_code == "en"
    assert page.next_page_token == "tok"
    assert page.usage.credits == 1 and client.usage.credits == 1


async def test_a_custom_mask_still_asks_for_the_next_page_token(mock):
    route = mock.post(PATH).respond(200, json={})
    client = GooglePlacesClient(api_key="k", base_url=BASE, field_mask="places.id")
    page = await client.search_text("nothing matches this")
    assert route.calls.last.request.headers["x-goog-fieldmask"] == "places.id,nextPageToken"
    assert page.places == [] and page.next_page_token is None  # `{}` means no results


async def test_search_all_follows_tokens_and_waits_before_using_them(mock, client, sleep):
    route = mock.post(PATH)
    route.side_effect = [
        httpx.Response(200, json={"places": [place(i) for i in range(20)], "nextPageToken": "t1"}),
        httpx.Response(
            200, json={"places": [place(i) for i in range(20, 40)], "nextPageToken": "t2"}
        ),
        httpx.Response(200, json={"places": [place(i) for i in range(40, 60)]}),
    ]
    places = await client.search_all("plumbers in Austin")
    assert [p.id for p in places] == [f"ChIJ{i:04d}" for i in range(60)]
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [b.get("pageToken") for b in bodies] == [None, "t1", "t2"]
    assert {b["textQuery"] for b in bodies} == {"plumbers in Austin"}
    assert len(sleep.waits) == 2 and all(0 < w <= 0.3 for w in sleep.waits)
    assert client.usage.credits == 3


async def test_search_all_stops_at_max_results_and_dedups(mock, client):
    route = mock.post(PATH)
    route.side_effect = [
        httpx.Response(200, json={"places": [place(i) for i in range(20)], "nextPageToken": "t1"}),
        httpx.Response(200, json={"places": [place(19), place(20), place(21)]}),
    ]
    places = await client.search_all("plumbers", max_results=25)
    assert [p.id for p in places] == [f"ChIJ{i:04d}" for i in range(22)]
    assert json.loads(route.calls.last.request.content)["pageSize"] == 5


async def test_a_token_used_too_early_is_retried_after_a_longer_wait(mock, client, sleep):
    too_early = google_error(400, "INVALID_ARGUMENT", "The page token is not valid yet.")
    route = mock.post(PATH)
    route.side_effect = [
        httpx.Response(200, json={"places": [place(1)], "nextPageToken": "t1"}),
        too_early,
        too_early,
        httpx.Response(200, json={"places": [place(2)]}),
    ]
    assert [p.id for p in await client.search_all("plumbers")] == ["ChIJ0001", "ChIJ0002"]
    assert sleep.waits[1:] == [0.6, 1.2]
    first = httpx.Response(200, json={"places": [place(1)], "nextPageToken": "t1"})
    bad = [google_error(400, "INVALID_ARGUMENT", "Invalid page token") for _ in range(4)]
    route.side_effect = [first, *bad]
    with pytest.raises(InvalidRequest, match="Invalid page token"):
        await client.search_all("plumbers")


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (
            google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                "API_KEY_INVALID",
            ),
            AuthFailed,
            "API key not valid",
        ),
        (
            google_error(403, "PERMISSION_DENIED", "Places API (New) has not been used in project"),
            AuthFailed,
            "PERMISSION_DENIED",
        ),
        (
            google_error(
                403,
                "PERMISSION_DENIED",
                "This API method requires billing to be enabled.",
                "BILLING_DISABLED",
            ),
            OutOfCredits,
            "billing",
        ),
        (
            google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "RATE_LIMIT_EXCEEDED"),
            RateLimited,
            "Quota exceeded",
        ),
        (
            google_error(400, "INVALID_ARGUMENT", "textQuery: Missing required field."),
            InvalidRequest,
            "INVALID_ARGUMENT: textQuery",
        ),
        (
            google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
            Unavailable,
            "UNAVAILABLE",
        ),
        (
            httpx.Response(502, text="<html><title>502 Server Error</title></html>"),
            Unavailable,
            "502 Server Error",
        ),
    ],
)
async def test_error_mapping(mock, client, response, error, match):
    mock.post(PATH).mock(return_value=response)
    with pytest.raises(error, match=match) as info:
        await client.search_text("plumbers")
    assert info.value.provider == "google_places"
    assert info.value.status_code == response.status_code
    assert "AIza-secret" not in str(info.value)
    assert client.usage.credits == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"places": [{"displayName": "Plumber"}]}', "places.0.displayName"),
        ('{"places": {"id": "x"}}', "places"),
        ("<html><body>Sign in</body></html>", "expected JSON"),
    ],
)
async def test_wrong_shapes_are_bad_response(mock, client, content, match):
    mock.post(PATH).respond(200, content=content)
    with pytest.raises(BadResponse, match=match):
        await client.search_text("plumbers")


@pytest.mark.parametrize(
    ("uri", "domain"),
    [
        ("https://www.Plumber1.com/home?utm_source=gmb", "plumber1.com"),
        ("http://shop.example.co.uk:8080/x", "shop.example.co.uk"),
        ("https://www.facebook.com/plumber1", None),
        ("https://m.facebook.com/plumber1", None),
        ("https://linktr.ee/plumber1", None),
        ("https://plumber1.business.site/", "plumber1.business.site"),
        (None, None),
    ],
)
def test_website_domains(uri, domain):
    assert website_domain(uri) == domain


def test_to_new_company():
    project = uuid4()
    new = to_new_company(project, Place.model_validate(place(7, websiteUri="https://www.P7.com/a")))
    assert new.project_id == project and new.source == "google_places"
    assert new.name == "Plumber 7" and new.domain == "p7.com" and new.industry == "Plumber"
    assert new.location == "7 Main St, Austin, TX 78701, USA"
    assert new.raw_data["id"] == "ChIJ0007" and new.raw_data["displayName"]["text"] == "Plumber 7"
    bare = to_new_company(project, Place.model_validate({"id": "x", "types": ["dentist"]}))
    assert bare.name == "x" and bare.domain is None and bare.industry == "Dentist"
