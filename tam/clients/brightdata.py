"""Bright Data LinkedIn posts: one snapshot for many profiles, polled, then downloaded.

The trigger answers only ``{"snapshot_id"}``; records arrive later (``progress`` until
``ready``, then ``snapshot``, which answers 202 while it is still being built). Records come
back in no particular order and are grouped here by the input profile they were found for.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tam.clients._base import ProviderClient
from tam.clients._http import body_snippet, map_status
from tam.clients._retry import backoff_delay
from tam.errors import (
    BadResponse,
    NotFound,
    OutOfCredits,
    ProviderError,
    SystemicError,
    Unavailable,
)
from tam.models import Usage
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "brightdata"
_ROW = PROVIDERS[PROVIDER]
# The poll interval is what the API's own "try again in 10s" suggests.
DEFAULT_POLL_INTERVAL_S: float = _ROW.settings_class.model_fields["poll_interval_s"].default
DEFAULT_SNAPSHOT_TIMEOUT_S: float = _ROW.settings_class.model_fields["snapshot_timeout_s"].default
DEFAULT_PRICE_PER_RECORD_USD = _ROW.prices["brightdata_record_usd"]
# Consecutive transient failures tolerated while polling one snapshot before giving up.
MAX_POLL_FAILURES = 5
_NOT_READY = {"starting", "running", "building", "collecting", "digesting", "queued"}
_TRIGGER_PATH = "/datasets/v3/trigger"
_SNAPSHOT_PATH = "/datasets/v3/snapshot/"
_CREDIT_WORDS = ("balance", "suspended", "credit", "top up", "payment")
# A person's public profile: /in/<slug>, optionally followed by a sub-page (/details/...).
_PROFILE_PATH = re.compile(r"^/in/([^/?#\s]+)(?:/.*)?$", re.IGNORECASE)
NOT_A_PROFILE = "not_a_profile_url"  # the reason a URL is never sent to the dataset


class SnapshotFailed(Unavailable):
    """The collection itself failed: retrying means triggering a new snapshot."""


class ProfileInput(BaseModel):
    """One input line of a trigger: a profile and the window of posts to collect."""

    url: str = Field(min_length=1)
    start_date: str = ""
    end_date: str = ""


class SnapshotStatus(BaseModel):
    """The answer of ``GET /datasets/v3/progress/{snapshot_id}``."""

    model_config = ConfigDict(extra="allow")

    snapshot_id: str
    dataset_id: str | None = None
    status: str
    records: int | None = None
    errors: int | None = None
    error_message: str | None = None

    @property
    def is_ready(self) -> bool:
        return self.status == "ready"

    @property
    def is_failed(self) -> bool:
        return self.status in ("failed", "canceled", "cancelled")


class InputRef(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str | None = None


class PostRecord(BaseModel):
    """One record of the LinkedIn posts dataset: a post, or an error for one input."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None  # the post's own URL
    id: str | None = None
    user_id: str | None = None
    use_url: str | None = None  # the author's profile URL
    title: str | None = None
    post_text: str | None = None
    date_posted: datetime | None = None
    discovery_input: InputRef | None = None
    input: InputRef | None = None
    error: str | None = None
    error_code: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None or self.error_code is not None

    @property
    def input_url(self) -> str | None:
        """The profile this record was collected for, as the trigger named it."""
        for ref in (self.discovery_input, self.input):
            if ref is not None and ref.url:
                return ref.url
        return self.use_url


_RECORDS = TypeAdapter(list[PostRecord])
T = TypeVar("T")


class ProfilePosts(BaseModel):
    """What one collection found: posts per input URL (as given) and the inputs that failed."""

    snapshot_id: str
    posts: dict[str, list[PostRecord]]
    errors: dict[str, str] = Field(default_factory=dict)
    unmatched: int = 0  # records that named no input profile (counted, never guessed)
    usage: Usage

    def last_post_date(self, url: str) -> datetime | None:
        dates = [p.date_posted for p in self.posts.get(url, []) if p.date_posted is not None]
        return max(dates) if dates else None


def normalize_profile_url(url: str) -> str:
    """``linkedin.com/in/jane-doe``: no scheme, www/country subdomain, query or trailing slash."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if host == "linkedin.com" or host.endswith(".linkedin.com"):
        host = "linkedin.com"
    elif host.startswith("www."):
        host = host[4:]
    return f"{host}{parts.path.rstrip('/')}".lower()


def canonical_profile_url(url: str | None) -> str | None:
    """``https://www.linkedin.com/in/<slug>`` for a LinkedIn person profile, else None.

    Accepts http or no scheme, no ``www.`` or a country subdomain (``uk.linkedin.com``), a
    trailing slash, a query string or a sub-page; company pages, posts, other hosts and
    garbage are None (the posts dataset bills every input, answerable or not).
    """
    text = (url or "").strip()
    if not text or any(c.isspace() for c in text):
        return None
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    if host != "linkedin.com" and not host.endswith(".linkedin.com"):
        return None
    match = _PROFILE_PATH.match(parts.path)
    if match is None:
        return None
    return f"https://www.linkedin.com/in/{match.group(1).lower()}"


def wire_date(day: date | datetime | None) -> str:
    """The datasets' date format (``2026-05-16T00:00:00.000Z``); empty means unbounded."""
    if day is None:
        return ""
    if not isinstance(day, datetime):
        day = datetime(day.year, day.month, day.day, tzinfo=UTC)
    elif day.tzinfo is None:
        day = day.replace(tzinfo=UTC)
    return day.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class BrightDataClient(ProviderClient):
    """The Datasets API v3 for the LinkedIn posts dataset. Raises the `tam.errors` tree;
    `usage` sums the records of every collection."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_token: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        dataset_id: str,
        timeout: float = 60.0,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        snapshot_timeout_s: float = DEFAULT_SNAPSHOT_TIMEOUT_S,
        price_per_record_usd: float = DEFAULT_PRICE_PER_RECORD_USD,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Bright Data calls its key an API token; `api_key` is the name every client shares.
        token = api_token if api_token is not None else api_key
        if token is None:
            raise TypeError("BrightDataClient needs an api_token")
        self.dataset_id = dataset_id
        self.poll_interval_s = poll_interval_s
        self.snapshot_timeout_s = snapshot_timeout_s
        self.price_per_record_usd = price_per_record_usd
        self._sleep = sleep
        self._clock = clock
        super().__init__(api_key=token, base_url=base_url, timeout=timeout, http_client=http_client)

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:
        return {
            "dataset_id": block.extra("posts_dataset_id"),
            "poll_interval_s": block.extra("poll_interval_s"),
            "snapshot_timeout_s": block.extra("snapshot_timeout_s"),
            "price_per_record_usd": block.prices["brightdata_record_usd"],
        }

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"Authorization": f"Bearer {api_key}"}, {}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """Bright Data's own message; 202 (and "Snapshot is empty") from the snapshot
        endpoint are answers; an unknown dataset on trigger is a configuration error."""
        status = response.status_code
        if status == 200:
            return None
        path = response.request.url.path
        if _SNAPSHOT_PATH in path and (
            status == 202 or (status == 400 and "empty" in body_snippet(response).lower())
        ):
            return None
        return _error(response, missing_is_config=path.endswith(_TRIGGER_PATH))

    # --- the three endpoints ---------------------------------------------------------------
    async def trigger(self, inputs: Sequence[ProfileInput]) -> str:
        """Start one collection for every input; returns the snapshot id."""
        params = {
            "dataset_id": self.dataset_id,
            "include_errors": "true",
            # NOTE: profile URLs are a discovery input for this dataset; without these the
            # service validates each URL as a single post URL and rejects it.
            "type": "discover_new",
            "discover_by": "profile_url",
        }
        body = [item.model_dump() for item in inputs]
        response = await self._request("POST", _TRIGGER_PATH, params=params, json_body=body)
        data = self._http.json(response)
        snapshot_id = data.get("snapshot_id") if isinstance(data, dict) else None
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise BadResponse(
                f"trigger answered without a snapshot_id: {body_snippet(response)}",
                provider=PROVIDER,
                status_code=response.status_code,
            )
        return snapshot_id

    async def progress(self, snapshot_id: str) -> SnapshotStatus:
        response = await self._request("GET", f"/datasets/v3/progress/{snapshot_id}")
        return self._http.parse(SnapshotStatus, self._http.json(response))

    async def download(self, snapshot_id: str) -> list[PostRecord] | None:
        """The snapshot's records, or None while it is still being built (202)."""
        response = await self._request(
            "GET", f"{_SNAPSHOT_PATH}{snapshot_id}", params={"format": "json"}
        )
        if response.status_code == 400:
            return []  # "Snapshot is empty": a finished collection that found nothing
        data = self._http.json(response)
        if isinstance(data, dict):
            status = str(data.get("status", "")).lower()
            if response.status_code == 202 or status in _NOT_READY:
                return None
            if status == "failed":
                raise SnapshotFailed(
                    f"snapshot {snapshot_id} failed: {data.get('message', '')}", provider=PROVIDER
                )
            raise BadResponse(
                f"expected a JSON array of records, got an object with keys {sorted(data)[:8]}",
                provider=PROVIDER,
            )
        if response.status_code == 202:
            return None
        try:
            return _RECORDS.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadResponse(
                f"unexpected record at {where}: {first['msg']}", provider=PROVIDER
            ) from None

    # --- the whole round -----------------------------------------------------------------
    async def collect(
        self,
        urls: Sequence[str],
        *,
        start_date: date | datetime,
        end_date: date | datetime | None = None,
        poll_interval_s: float | None = None,
        timeout_s: float | None = None,
    ) -> ProfilePosts:
        """Trigger ONE snapshot for every profile, wait until it is ready, group its records.

        A failed snapshot raises Unavailable (retry the whole collection); transient errors
        while polling are retried here, so a paid snapshot is not abandoned for one 503.
        """
        interval = self.poll_interval_s if poll_interval_s is None else poll_interval_s
        deadline = self._clock() + (self.snapshot_timeout_s if timeout_s is None else timeout_s)
        by_key: dict[str, str] = {}
        canonical: dict[str, str] = {}
        rejected: dict[str, str] = {}
        for url in urls:
            profile = canonical_profile_url(url)
            if profile is None:
                rejected[url] = NOT_A_PROFILE  # never sent, never billed
                continue
            key = normalize_profile_url(profile)
            by_key.setdefault(key, url)
            canonical.setdefault(key, profile)
        if not by_key:
            return ProfilePosts(
                snapshot_id="", posts={}, errors=rejected, usage=Usage.zero(PROVIDER)
            )
        start, end = wire_date(start_date), wire_date(end_date)
        inputs = [ProfileInput(url=u, start_date=start, end_date=end) for u in canonical.values()]
        snapshot_id = await self.trigger(inputs)
        await self._wait_ready(snapshot_id, interval, deadline)
        records = await self._poll(
            lambda: self.download(snapshot_id), snapshot_id, interval, deadline
        )
        posts = self._group(snapshot_id, records, by_key)
        posts.errors.update(rejected)
        return posts

    async def _wait_ready(self, snapshot_id: str, interval: float, deadline: float) -> None:
        async def ready() -> bool | None:
            status = await self.progress(snapshot_id)
            if status.is_failed:
                message = status.error_message or status.status
                if any(word in message.lower() for word in _CREDIT_WORDS):
                    raise OutOfCredits(message, provider=PROVIDER)
                raise SnapshotFailed(f"snapshot {snapshot_id} failed: {message}", provider=PROVIDER)
            return True if status.is_ready else None

        await self._poll(ready, snapshot_id, interval, deadline)

    async def _poll(
        self,
        attempt: Callable[[], Awaitable[T | None]],
        snapshot_id: str,
        interval: float,
        deadline: float,
    ) -> T:
        failures = 0
        while True:
            wait = interval
            try:
                result = await attempt()
                failures = 0
                if result is not None:
                    return result
            except (SnapshotFailed, SystemicError):
                raise
            except ProviderError as exc:
                failures += 1
                if not exc.retryable or failures > MAX_POLL_FAILURES:
                    raise
                wait = max(interval, backoff_delay(failures, exc.retry_after))
            if self._clock() + wait > deadline:
                raise Unavailable(
                    f"snapshot {snapshot_id} not ready before the deadline", provider=PROVIDER
                )
            await self._sleep(wait)

    def _group(
        self, snapshot_id: str, records: list[PostRecord], by_key: dict[str, str]
    ) -> ProfilePosts:
        posts: dict[str, list[PostRecord]] = {url: [] for url in by_key.values()}
        errors: dict[str, str] = {}
        unmatched = billed = 0
        for record in records:
            source = record.input_url
            url = by_key.get(normalize_profile_url(source)) if source else None
            if not record.is_error:
                billed += 1
            if url is None:
                unmatched += 1
            elif record.is_error:
                errors[url] = record.error_code or record.error or "error"
            else:
                posts[url].append(record)
        for items in posts.values():
            items.sort(key=_newest_first)
        usage = Usage(
            provider=PROVIDER, credits=billed, cost_usd=round(billed * self.price_per_record_usd, 6)
        )
        self._charge(usage.credits, usage.cost_usd)
        return ProfilePosts(
            snapshot_id=snapshot_id, posts=posts, errors=errors, unmatched=unmatched, usage=usage
        )


def _error(response: httpx.Response, *, missing_is_config: bool) -> ProviderError:
    """Status → error class with Bright Data's own message; credits and config refined."""
    message = _message(response)
    exc = map_status(PROVIDER, response, message)
    kwargs: dict[str, Any] = {"provider": PROVIDER, "status_code": response.status_code}
    status = response.status_code
    if status == 402 or (status < 500 and any(w in exc.message.lower() for w in _CREDIT_WORDS)):
        return OutOfCredits(exc.message, **kwargs)
    if isinstance(exc, NotFound) and missing_is_config:
        # An unknown dataset id fails every trigger alike: a configuration error.
        return SystemicError(exc.message, **kwargs)
    return exc


def _message(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None  # plain text or an HTML page: map_status quotes the body
    if isinstance(data, dict):
        if isinstance(data.get("validation_errors"), list):
            return "validation_errors: " + "; ".join(str(e) for e in data["validation_errors"])
        for key in ("error", "message", "error_message"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return None


def _newest_first(record: PostRecord) -> float:
    return -(record.date_posted.timestamp() if record.date_posted else float("-inf"))
