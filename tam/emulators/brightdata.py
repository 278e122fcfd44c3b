"""Bright Data Datasets API v3 emulator: the LinkedIn posts dataset, triggered in bulk.

``POST /datasets/v3/trigger?dataset_id=...`` takes a JSON array of ``{"url", "start_date",
"end_date"}`` profile inputs and answers ``{"snapshot_id"}`` at once; the snapshot then moves
``starting → running → ready`` (or ``failed``) over ``snapshot_ready_s``, watched through
``GET /datasets/v3/progress/{id}``; ``GET /datasets/v3/snapshot/{id}?format=json`` answers 202
until it is ready, then the post records of every profile, in no particular order.

Which posts a profile has is a pure function of the profile's slug and the world seed
(:func:`posts_for`), so tests can predict each profile's newest post.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field
from starlette.responses import JSONResponse, Response

from tam.emulators.base import (
    Call,
    EmulatedError,
    Endpoint,
    ErrorReason,
    ProviderEmulator,
    register_provider,
)
from tam.emulators.knobs import Knobs
from tam.emulators.world import World

POSTS_DATASET_ID = "gd_lyy3tktm25m4avu764"  # Bright Data's "LinkedIn posts" dataset
NOT_READY_MESSAGE = "Snapshot is not ready yet, try again in 10s"
_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_PROFILE_PATH = re.compile(r"^/in/([^/]+)")
_TOPICS = (
    "hiring|product launch|quarterly results|conference talk|team offsite|customer story|"
    "industry trends|lessons learned|new role|webinar"
).split("|")
_MESSAGES = {
    ErrorReason.auth: "Unauthorized: invalid or missing API token",
    ErrorReason.permission: "Forbidden: this token cannot access the dataset",
    ErrorReason.out_of_credits: "Account is suspended: insufficient balance, please top up",
    ErrorReason.rate_limited: "Too many requests",
    ErrorReason.server_error: "Internal server error",
    ErrorReason.unavailable: "Service unavailable",
}


class BrightDataKnobs(Knobs):
    # Seconds from trigger to `ready`; the first fifth of it reports `starting`.
    snapshot_ready_s: float = Field(default=1.0, ge=0)
    # Share of snapshots that end `failed` instead of `ready` (seeded per snapshot).
    snapshot_fail_rate: float = Field(default=0.0, ge=0, le=1)
    # Share of LinkedIn profiles whose page is gone (an error record with include_errors).
    dead_profile_rate: float = Field(default=0.05, ge=0, le=1)
    # Datasets this account may trigger; anything else is "dataset does not exist".
    dataset_ids: list[str] = Field(default_factory=lambda: [POSTS_DATASET_ID])
    max_inputs: int = Field(default=5000, ge=1)


def profile_slug(url: str) -> str | None:
    """The ``/in/<slug>`` of a LinkedIn profile URL (any scheme, www, case, trailing slash)."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if host != "linkedin.com" and not host.endswith(".linkedin.com"):
        return None
    match = _PROFILE_PATH.match(parts.path)
    return match.group(1).lower() if match else None


def _iso(moment: datetime) -> str:
    millis = moment.microsecond // 1000
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


def posts_for(url: str, today: date, *, world: World | None = None) -> list[dict[str, Any]]:
    """Every post the profile at `url` has, newest first (before any date filter).

    About 45% of profiles posted within the last 28 days, 35% only 35+ days ago, the rest
    never; a URL that is not a LinkedIn ``/in/`` profile has none. Whether the snapshot
    delivers them or an error record instead is :func:`is_dead_profile`'s call.
    """
    world = world or World()
    slug = profile_slug(url)
    if slug is None:
        return []
    activity = world.unit(slug, "linkedin_activity")
    if activity >= 0.80:
        return []
    rng = world.rng(slug, "linkedin_posts")
    newest_days = rng.randint(1, 28) if activity < 0.45 else rng.randint(35, 400)
    ages = [newest_days]
    for _ in range(rng.randint(0, 5)):
        ages.append(ages[-1] + rng.randint(3, 60))
    midnight = datetime.combine(today, dtime(0), tzinfo=UTC)
    posts = []
    for age in ages:
        posted = (
            midnight
            - timedelta(days=age)
            + timedelta(seconds=rng.randint(0, 86_399), milliseconds=rng.randint(0, 999))
        )
        activity_id = str(rng.randint(7_000_000_000_000_000_000, 7_399_999_999_999_999_999))
        topic = rng.choice(_TOPICS)
        posts.append(
            {
                "url": f"https://www.linkedin.com/posts/{slug}_{topic.replace(' ', '-')}"
                f"-activity-{activity_id}-{rng.getrandbits(16):04x}",
                "id": activity_id,
                "user_id": slug,
                "use_url": url,
                "title": f"{slug.replace('-', ' ').title()} on LinkedIn: {topic}",
                "headline": f"Thoughts on {topic}",
                "post_text": f"Sharing a few thoughts on {topic} this week.",
                "date_posted": _iso(posted),
                "num_likes": rng.randint(0, 500),
                "num_comments": rng.randint(0, 80),
                "post_type": "post",
                "account_type": "Person",
            }
        )
    return posts


def is_dead_profile(url: str, *, world: World, rate: float) -> bool:
    """True when the snapshot answers `url` with a ``dead_page`` error record (when asked)."""
    slug = profile_slug(url)
    return slug is None or world.unit(slug, "linkedin_dead") < rate


@dataclass
class Snapshot:
    snapshot_id: str
    dataset_id: str
    created: float
    ready_s: float
    fails: bool
    records: list[dict[str, Any]] = field(default_factory=list)

    def status(self, now: float) -> str:
        elapsed = now - self.created
        if elapsed >= self.ready_s:
            return "failed" if self.fails else "ready"
        return "starting" if elapsed < self.ready_s / 5 else "running"


@register_provider
class BrightDataEmulator(ProviderEmulator):
    name = "brightdata"
    knobs_model = BrightDataKnobs

    def __init__(self, world: World, knobs: Mapping[str, Any] | None = None) -> None:
        super().__init__(world, knobs)
        self.snapshots: dict[str, Snapshot] = {}

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("/datasets/v3/trigger", self.trigger, ("POST",), name="trigger"),
            Endpoint(
                "/datasets/v3/progress/{snapshot_id}",
                self.progress,
                ("GET",),
                name="progress",
                item_key=_snapshot_key,
            ),
            Endpoint(
                "/datasets/v3/snapshot/{snapshot_id}",
                self.download,
                ("GET",),
                name="snapshot",
                item_key=_snapshot_key,
            ),
        ]

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        return JSONResponse({"error": _MESSAGES.get(reason, message)}, status_code=status)

    def reset(self, *, knobs: bool = False) -> None:
        super().reset(knobs=knobs)
        self.snapshots.clear()

    def stats_extra(self) -> dict[str, Any]:
        return {"snapshots": len(self.snapshots)}

    def posts_for(self, url: str, today: date) -> list[dict[str, Any]]:
        """The posts this emulator holds for `url` (see :func:`posts_for`)."""
        return posts_for(url, today, world=self.world)

    @property
    def _knobs(self) -> BrightDataKnobs:
        return self.typed_knobs(BrightDataKnobs)

    # --- endpoints -----------------------------------------------------------------------
    async def trigger(self, call: Call) -> Response:
        knobs = self._knobs
        params = call.request.query_params
        dataset_id = params.get("dataset_id")
        if not dataset_id:
            raise EmulatedError(400, "dataset missing")
        if dataset_id not in knobs.dataset_ids:
            raise EmulatedError(404, "dataset does not exist")
        if (
            params.get("type", "discover_new") != "discover_new"
            or params.get("discover_by", "profile_url") != "profile_url"
        ):
            return _validation_errors(["this dataset discovers posts by profile_url only"])
        inputs = call.body
        if isinstance(inputs, dict) and isinstance(inputs.get("input"), list):
            inputs = inputs["input"]  # the documented {"input": [...]} wrapper
        if not isinstance(inputs, list):
            return _validation_errors(["body must be a JSON array of inputs"])
        if not inputs:
            raise EmulatedError(400, "No data to trigger")
        if len(inputs) > knobs.max_inputs:
            raise EmulatedError(400, f"Too many inputs: at most {knobs.max_inputs}")
        problems = _input_problems(inputs)
        if problems:
            return _validation_errors(problems)
        if call.malformed:
            return JSONResponse({"status": "queued"})
        rng = self.faults.content_rng
        snapshot_id = "s_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(17))
        fails = self.faults.error_rng.random() < knobs.snapshot_fail_rate
        records = self._records(inputs, include_errors=_flag(params, "include_errors"))
        snapshot = Snapshot(
            snapshot_id, dataset_id, time.monotonic(), knobs.snapshot_ready_s, fails, records
        )
        self.snapshots[snapshot_id] = snapshot
        self.counters.bump("profiles_triggered", len(inputs))
        # The real dataset bills these too: a client should never send them.
        slugs = [profile_slug(str(item["url"])) for item in inputs]
        self.counters.bump("non_profile_inputs", sum(slug is None for slug in slugs))
        self.counters.bump(
            "non_canonical_inputs",
            sum(
                slug is None or str(item["url"]) != f"https://www.linkedin.com/in/{slug}"
                for slug, item in zip(slugs, inputs, strict=True)
            ),
        )
        return JSONResponse({"snapshot_id": snapshot_id})

    async def progress(self, call: Call) -> Response:
        snapshot = self._snapshot(call)
        status = snapshot.status(time.monotonic())
        body: dict[str, Any] = {
            "snapshot_id": snapshot.snapshot_id,
            "dataset_id": snapshot.dataset_id,
            "status": status,
        }
        if status == "ready":
            body["records"] = sum(1 for r in snapshot.records if "error" not in r)
            body["errors"] = sum(1 for r in snapshot.records if "error" in r)
        elif status == "failed":
            body["error_message"] = "Collection failed: the scraper could not finish the job"
        return JSONResponse(body)

    async def download(self, call: Call) -> Response:
        snapshot = self._snapshot(call)
        fmt = call.request.query_params.get("format", "json")
        if fmt != "json":
            return _validation_errors([f"format: the emulator serves json only, not {fmt!r}"])
        status = snapshot.status(time.monotonic())
        if status in ("starting", "running"):
            return JSONResponse({"status": "running", "message": NOT_READY_MESSAGE}, 202)
        if status == "failed":
            raise EmulatedError(400, "Snapshot failed to collect")
        if not snapshot.records:
            raise EmulatedError(400, "Snapshot is empty")
        records = snapshot.records
        if call.malformed:
            records = [{**r, "date_posted": "yesterday"} for r in records]
        billed = sum(1 for r in records if "error" not in r)
        self.counters.bump("records_delivered", billed)
        return JSONResponse(records)

    # --- helpers -------------------------------------------------------------------------
    def _snapshot(self, call: Call) -> Snapshot:
        snapshot = self.snapshots.get(call.request.path_params["snapshot_id"])
        if snapshot is None:
            raise EmulatedError(404, "Snapshot does not exist")
        return snapshot

    def _records(
        self, inputs: list[dict[str, Any]], *, include_errors: bool
    ) -> list[dict[str, Any]]:
        today = datetime.now(UTC).date()
        knobs = self._knobs
        records: list[dict[str, Any]] = []
        for item in inputs:
            url = str(item["url"])
            discovery = {
                "url": url,
                "start_date": item.get("start_date") or "",
                "end_date": item.get("end_date") or "",
            }
            if is_dead_profile(url, world=self.world, rate=knobs.dead_profile_rate):
                if include_errors:
                    records.append(
                        {
                            "input": {"url": url},
                            "discovery_input": discovery,
                            "error": "Page not found or profile is private",
                            "error_code": "dead_page",
                        }
                    )
                continue
            start, end = _bound(item.get("start_date")), _bound(item.get("end_date"), end=True)
            for post in posts_for(url, today, world=self.world):
                posted = datetime.fromisoformat(post["date_posted"].replace("Z", "+00:00"))
                if (start is None or posted >= start) and (end is None or posted <= end):
                    records.append({**post, "discovery_input": discovery})
        # The real service delivers records in completion order, not input order.
        self.faults.content_rng.shuffle(records)
        return records


def _snapshot_key(call: Call) -> str | None:
    value = call.request.path_params.get("snapshot_id")
    return str(value) if value else None


def _flag(params: Any, name: str) -> bool:
    return str(params.get(name, "")).lower() in ("1", "true", "yes")


def _validation_errors(errors: list[str]) -> Response:
    return JSONResponse({"validation_errors": errors}, status_code=400)


def _input_problems(inputs: list[Any]) -> list[str]:
    problems = []
    for index, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"]:
            problems.append(f"[{index}] url: Required field")
            continue
        for key in ("start_date", "end_date"):
            if item.get(key) and _parse_date(str(item[key])) is None:
                problems.append(f"[{index}] {key}: Invalid date {item[key]!r}")
    return problems


def _parse_date(text: str) -> datetime | None:
    """ISO dates/datetimes (``Z`` allowed) and the ``MM-DD-YYYY`` form the console uses."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.strptime(text, "%m-%d-%Y")
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bound(value: Any, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    moment = _parse_date(str(value))
    if moment is None:
        return None
    # A bare date as end bound means "through that day".
    if end and len(str(value).strip()) == 10:
        moment += timedelta(days=1) - timedelta(microseconds=1)
    return moment
