"""BrightDataClient's parsing, polling and error mapping (respx; the emulator tests the rest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest
import respx

from tam.clients.brightdata import (
    NOT_A_PROFILE,
    BrightDataClient,
    ProfileInput,
    SnapshotFailed,
    canonical_profile_url,
    normalize_profile_url,
    wire_date,
)
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

BASE = "https://bd.test"
DATASET = "gd_lyy3tktm25m4avu764"
JANE = "https://www.linkedin.com/in/jane-doe"
BOB = "https://linkedin.com/in/bob/"


class FakeSleep:
    """Sleeps without waiting, on a clock of its own."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def client(sleep: FakeSleep) -> BrightDataClient:
    return BrightDataClient(
        api_token="tok-123",
        base_url=BASE,
        dataset_id=DATASET,
        poll_interval_s=5,
        sleep=sleep,
        clock=sleep.clock,
    )


def post(profile: str, day: str, **extra: object) -> dict[str, object]:
    return {
        "url": f"https://www.linkedin.com/posts/x_activity-{day}",
        "user_id": "x",
        "use_url": profile,
        "date_posted": f"{day}T10:00:00.000Z",
        "discovery_input": {"url": profile, "start_date": "", "end_date": ""},
        **extra,
    }


def progress(status: str, **extra: object) -> httpx.Response:
    return httpx.Response(
        200, json={"snapshot_id": "s_1", "dataset_id": DATASET, "status": status, **extra}
    )


async def test_trigger_sends_one_array_of_inputs_with_bearer_and_discovery(mock, client):
    route = mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_abc"})
    inputs = [ProfileInput(url=JANE, start_date="2026-01-01T00:00:00.000Z"), ProfileInput(url=BOB)]
    assert await client.trigger(inputs) == "s_abc"
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer tok-123"
    assert dict(request.url.params) == {
        "dataset_id": DATASET,
        "include_errors": "true",
        "type": "discover_new",
        "discover_by": "profile_url",
    }
    assert json.loads(request.content) == [
        {"url": JANE, "start_date": "2026-01-01T00:00:00.000Z", "end_date": ""},
        {"url": BOB, "start_date": "", "end_date": ""},
    ]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"status": "queued"}),
        httpx.Response(200, json=["s_1"]),
        httpx.Response(200, text="<html><body>Gateway</body></html>"),
    ],
)
async def test_trigger_without_a_snapshot_id_is_bad_response(mock, client, response):
    mock.post("/datasets/v3/trigger").mock(return_value=response)
    with pytest.raises(BadResponse):
        await client.trigger([ProfileInput(url=JANE)])


async def test_progress_parses_and_rejects_wrong_shapes(mock, client):
    mock.get("/datasets/v3/progress/s_1").mock(
        side_effect=[
            progress("ready", records=3, errors=1),
            httpx.Response(200, json={"snapshot_id": "s_1"}),
        ]
    )
    status = await client.progress("s_1")
    assert status.is_ready and not status.is_failed and status.records == 3
    with pytest.raises(BadResponse, match="status"):
        await client.progress("s_1")


async def test_download_tolerates_202_and_status_objects(mock, client):
    route = mock.get("/datasets/v3/snapshot/s_1").mock(
        side_effect=[
            httpx.Response(202, json={"status": "running", "message": "not ready, try in 10s"}),
            httpx.Response(200, json={"status": "building", "message": "try again in 10s"}),
            httpx.Response(200, json=[post(JANE, "2026-03-01")]),
            httpx.Response(400, json={"error": "Snapshot is empty"}),
        ]
    )
    assert await client.download("s_1") is None
    assert await client.download("s_1") is None
    (record,) = await client.download("s_1")  # type: ignore[misc]
    assert record.date_posted == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert record.input_url == JANE and not record.is_error
    assert await client.download("s_1") == []
    assert route.calls.last.request.url.params["format"] == "json"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"results": []}, "JSON array"),
        ([{"date_posted": "yesterday"}], "0.date_posted"),
        ([{"url": 5}], "0.url"),
        ("[not json", "expected JSON"),
    ],
)
async def test_download_wrong_shapes_are_bad_response(mock, client, body, match):
    content = body if isinstance(body, str) else json.dumps(body)
    mock.get("/datasets/v3/snapshot/s_1").respond(200, content=content)
    with pytest.raises(BadResponse, match=match):
        await client.download("s_1")


async def test_collect_one_snapshot_polls_then_groups_by_input(mock, client, sleep):
    trigger = mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_1"})
    mock.get("/datasets/v3/progress/s_1").mock(
        side_effect=[progress("starting"), progress("running"), progress("ready")]
    )
    dead = "https://www.linkedin.com/in/gone"
    records = [
        post("http://LinkedIn.com/in/Jane-Doe/", "2026-02-01"),  # same profile, other spelling
        post(BOB, "2026-03-05"),
        post(JANE, "2026-03-01"),
        {"input": {"url": dead}, "error": "Page not found", "error_code": "dead_page"},
        post("https://www.linkedin.com/in/stranger", "2026-03-02"),
    ]
    mock.get("/datasets/v3/snapshot/s_1").mock(
        side_effect=[
            httpx.Response(202, json={"status": "running"}),
            httpx.Response(200, json=records),
        ]
    )
    result = await client.collect(
        [JANE, BOB, dead, JANE + "/"], start_date=date(2026, 1, 1), poll_interval_s=0.5
    )
    assert trigger.call_count == 1
    sent = json.loads(trigger.calls.last.request.content)
    # Duplicates sent once, every profile in its canonical form.
    assert [item["url"] for item in sent] == [JANE, "https://www.linkedin.com/in/bob", dead]
    assert {item["start_date"] for item in sent} == {"2026-01-01T00:00:00.000Z"}
    assert [p.date_posted.date() for p in result.posts[JANE]] == [  # type: ignore[union-attr]
        date(2026, 3, 1),
        date(2026, 2, 1),
    ]
    assert result.last_post_date(BOB) == datetime(2026, 3, 5, 10, tzinfo=UTC)
    assert result.posts[dead] == [] and result.errors == {dead: "dead_page"}
    assert result.unmatched == 1
    assert result.usage.credits == 4 and result.usage.cost_usd == pytest.approx(0.006)
    assert sleep.waits == [0.5, 0.5, 0.5]  # two progress polls, one 202


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://www.linkedin.com/in/jane-doe", JANE),
        ("http://linkedin.com/in/Jane-Doe/", JANE),
        ("uk.linkedin.com/in/jane-doe?trk=public_profile", JANE),
        ("https://de.linkedin.com/in/jane-doe/details/experience/", JANE),
        ("  www.linkedin.com/in/jane-doe#about ", JANE),
        ("https://www.linkedin.com/company/acme", None),
        ("https://www.linkedin.com/posts/jane_activity-1", None),
        ("https://www.linkedin.com/in/", None),
        ("https://example.com/in/jane-doe", None),
        ("https://linkedin.com.evil.io/in/jane-doe", None),
        ("ftp://linkedin.com/in/jane-doe", None),
        ("not a url", None),
        ("", None),
        (None, None),
    ],
)
def test_only_person_profiles_have_a_canonical_url(url, canonical):
    assert canonical_profile_url(url) == canonical


async def test_collect_never_sends_what_is_not_a_profile(mock, client, sleep):
    trigger = mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_2"})
    mock.get("/datasets/v3/progress/s_2").mock(return_value=progress("ready"))
    mock.get("/datasets/v3/snapshot/s_2").respond(200, json=[post(JANE, "2026-03-01")])
    company, other = "https://www.linkedin.com/company/acme", "https://example.com/in/x"
    uk = "http://uk.linkedin.com/in/Jane-Doe/?trk=x"

    result = await client.collect([uk, company, other], start_date=date(2026, 1, 1))

    sent = json.loads(trigger.calls.last.request.content)
    assert [item["url"] for item in sent] == [JANE]
    assert result.last_post_date(uk) == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert result.errors == {company: NOT_A_PROFILE, other: NOT_A_PROFILE}
    only_bad = await client.collect([company], start_date=date(2026, 1, 1))
    assert trigger.call_count == 1 and only_bad.errors == {company: NOT_A_PROFILE}


async def test_collect_without_urls_makes_no_request(mock, client):
    result = await client.collect([], start_date=date(2026, 1, 1))
    assert result.posts == {} and result.usage.credits == 0
    assert not mock.calls


async def test_failed_snapshot_raises_retryable_unavailable(mock, client):
    mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_1"})
    mock.get("/datasets/v3/progress/s_1").mock(
        side_effect=[progress("running"), progress("failed", error_message="Collection failed")]
    )
    with pytest.raises(SnapshotFailed, match="Collection failed") as info:
        await client.collect([JANE], start_date=date(2026, 1, 1))
    assert isinstance(info.value, Unavailable) and info.value.retryable


async def test_suspended_account_snapshot_is_out_of_credits(mock, client):
    mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_1"})
    mock.get("/datasets/v3/progress/s_1").mock(
        return_value=progress("failed", error_message="Account is suspended")
    )
    with pytest.raises(OutOfCredits):
        await client.collect([JANE], start_date=date(2026, 1, 1))


async def test_polling_survives_transient_errors_but_not_auth(mock, client, sleep):
    mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_1"})
    route = mock.get("/datasets/v3/progress/s_1")
    route.side_effect = [
        httpx.Response(503, text="busy"),
        httpx.Response(429, json={"error": "Too many requests"}, headers={"retry-after": "7"}),
        progress("ready"),
    ]
    mock.get("/datasets/v3/snapshot/s_1").respond(200, json=[post(JANE, "2026-03-01")])
    result = await client.collect([JANE], start_date=date(2026, 1, 1))
    assert len(result.posts[JANE]) == 1
    assert 7 in sleep.waits
    route.side_effect = [httpx.Response(401, json={"error": "Unauthorized"})]
    with pytest.raises(AuthFailed):
        await client.collect([JANE], start_date=date(2026, 1, 1))


async def test_collect_gives_up_at_the_deadline(mock, client, sleep):
    mock.post("/datasets/v3/trigger").respond(200, json={"snapshot_id": "s_1"})
    mock.get("/datasets/v3/progress/s_1").mock(return_value=progress("running"))
    with pytest.raises(Unavailable, match="deadline"):
        await client.collect([JANE], start_date=date(2026, 1, 1), timeout_s=12)
    assert sleep.waits == [5, 5]


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (httpx.Response(401, json={"error": "Unauthorized"}), AuthFailed, "Unauthorized"),
        (httpx.Response(403, text="Forbidden"), AuthFailed, "Forbidden"),
        (httpx.Response(402, json={"error": "Payment required"}), OutOfCredits, "Payment"),
        (httpx.Response(400, json={"error": "Insufficient balance"}), OutOfCredits, "balance"),
        (httpx.Response(429, json={"error": "Too many running jobs"}), RateLimited, "jobs"),
        (httpx.Response(404, json={"error": "dataset does not exist"}), SystemicError, "dataset"),
        (httpx.Response(500, json={"error": "Internal server error"}), Unavailable, "Internal"),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), Unavailable, "502"),
        (
            httpx.Response(400, json={"validation_errors": ["[0] url: Required field"]}),
            InvalidRequest,
            "url: Required",
        ),
    ],
)
async def test_trigger_error_mapping(mock, client, response, error, match):
    mock.post("/datasets/v3/trigger").mock(return_value=response)
    with pytest.raises(error, match=match) as info:
        await client.trigger([ProfileInput(url=JANE)])
    assert info.value.provider == "brightdata"
    assert info.value.status_code == response.status_code
    assert "tok-123" not in str(info.value)


async def test_retry_after_and_unknown_snapshot(mock, client):
    mock.get("/datasets/v3/progress/s_x").respond(404, json={"error": "Snapshot does not exist"})
    with pytest.raises(NotFound):
        await client.progress("s_x")
    mock.post("/datasets/v3/trigger").respond(429, text="slow down", headers={"Retry-After": "3"})
    with pytest.raises(RateLimited) as info:
        await client.trigger([ProfileInput(url=JANE)])
    assert info.value.retry_after == 3


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://www.linkedin.com/in/Jane-Doe/", "linkedin.com/in/jane-doe"),
        ("http://uk.linkedin.com/in/jane-doe?trk=x#frag", "linkedin.com/in/jane-doe"),
        ("linkedin.com/in/jane-doe", "linkedin.com/in/jane-doe"),
        ("  https://LINKEDIN.com/in/jane-doe//  ", "linkedin.com/in/jane-doe"),
    ],
)
def test_profile_urls_normalize_to_one_key(url, key):
    assert normalize_profile_url(url) == key


def test_wire_dates():
    assert wire_date(date(2026, 5, 16)) == "2026-05-16T00:00:00.000Z"
    assert wire_date(datetime(2026, 5, 16, 12, 30)) == "2026-05-16T12:30:00.000Z"
    assert wire_date(None) == ""
