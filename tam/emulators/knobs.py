"""Knobs (what an emulator does) and counters (what it saw), shared by every provider.

Latency is the knob benchmarks lean on. In ``per_item`` mode it is a pure function of the
item key and the seed (:func:`latency_for_key`), so two strategies run over the same items
meet the same latency per item and a benchmark can compute its ideal wall time up front.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LATENCY_LIST_CAP = 100_000
_STD_NORMAL = NormalDist()


class Knobs(BaseModel):
    """Behaviour of one provider emulator; every field can be changed at runtime.

    A provider with knobs of its own subclasses this (see ``AnthropicKnobs``).
    """

    model_config = ConfigDict(extra="forbid")

    latency_median_s: float = Field(default=0.0, ge=0)
    latency_sigma: float = Field(default=0.0, ge=0, le=5)
    # per_item: derived from the request's item key (same item → same latency, in every run);
    # per_request: a seeded RNG stream (depends on arrival order).
    latency_mode: Literal["per_item", "per_request"] = "per_item"
    seed: int = 7
    # status → probability, drawn per request from a seeded RNG.
    error_rates: dict[int, float] = Field(default_factory=dict)
    # status → N: the first N requests (counted since this knob was last set) get that status.
    error_first_n: dict[int, int] = Field(default_factory=dict)
    # item key → status, on the first attempt for that key only.
    fail_keys: dict[str, int] = Field(default_factory=dict)
    retry_after_s: int = Field(default=1, ge=0)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    requests_per_interval: int | None = Field(default=None, ge=1)
    interval_s: float = Field(default=60.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    # None: any non-empty key works. Keys "invalid" / "invalid-*" are always rejected.
    valid_keys: list[str] | None = None
    out_of_credits: bool = False
    # None: answer every request. N: let N more requests through (counted since this knob
    # was last set), then hold the rest, unanswered, until it is set again. Tests hold a
    # provider to keep a run in progress for exactly as long as they need, whatever the
    # machine's speed, instead of hoping the run is slower than what they do meanwhile.
    hold_after: int | None = Field(default=None, ge=0)

    @field_validator("error_rates")
    @classmethod
    def _rates_are_probabilities(cls, value: dict[int, float]) -> dict[int, float]:
        if any(not 0 <= p <= 1 for p in value.values()):
            raise ValueError("each error rate must be within 0..1")
        if sum(value.values()) > 1 + 1e-9:
            raise ValueError("error rates must sum to at most 1")
        return value

    @field_validator("error_rates", "error_first_n")
    @classmethod
    def _keys_are_statuses(cls, value: dict[int, Any]) -> dict[int, Any]:
        _check_statuses(value.keys())
        return value

    @field_validator("fail_keys")
    @classmethod
    def _values_are_statuses(cls, value: dict[str, int]) -> dict[str, int]:
        _check_statuses(value.values())
        return value

    def updated(self, patch: dict[str, Any]) -> Knobs:
        """A validated copy with `patch` applied (raises pydantic.ValidationError)."""
        return type(self).model_validate({**self.model_dump(), **patch})

    def key_accepted(self, key: str | None) -> bool:
        if not key or key == "invalid" or key.startswith("invalid-"):
            return False
        return self.valid_keys is None or key in self.valid_keys


def _check_statuses(codes: Iterable[int]) -> None:
    if any(not 100 <= code <= 599 for code in codes):
        raise ValueError("status codes must be within 100..599")


def unit_hash(*parts: object) -> float:
    """A stable number in (0, 1) from `parts` (same in every process, unlike ``hash``)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64


def lognormal(median: float, sigma: float, u: float) -> float:
    """The `u`-quantile of a lognormal with this median and log-space sigma."""
    if median <= 0:
        return 0.0
    if sigma <= 0:
        return median
    return median * math.exp(sigma * _STD_NORMAL.inv_cdf(u))


def latency_for_key(key: str, *, seed: int, median: float, sigma: float) -> float:
    """The latency an emulator in ``per_item`` mode applies to item `key`.

    Benchmarks call this to compute ``Σ latency`` (the ideal) without making a request.
    """
    return lognormal(median, sigma, unit_hash("latency", seed, key))


class RateWindow:
    """A sliding-window request cap: at most `limit` accepted requests per `interval_s`."""

    def __init__(self) -> None:
        self._stamps: deque[float] = deque()

    def try_acquire(self, limit: int | None, interval_s: float, now: float) -> float | None:
        """Record a request and return None, or return seconds until a slot frees."""
        if limit is None:
            return None
        while self._stamps and self._stamps[0] <= now - interval_s:
            self._stamps.popleft()
        if len(self._stamps) >= limit:
            return self._stamps[len(self._stamps) - limit] + interval_s - now
        self._stamps.append(now)
        return None

    def used(self, interval_s: float, now: float) -> int:
        return sum(1 for stamp in self._stamps if stamp > now - interval_s)

    def clear(self) -> None:
        self._stamps.clear()


class Gate:
    """Where requests wait while a provider is held (the `hold_after` knob).

    Opened from the emulator's event loop (the control endpoint) or from any other thread
    (an in-process test calling ``configure``), so waiters are woken thread-safely.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._limit = limit
        self.passed = 0
        self.held = 0

    def set_limit(self, limit: int | None) -> None:
        """Let `limit` more requests through from now on (None: all), waking the held."""
        with self._lock:
            self._limit = limit
            self.passed = 0
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self) -> bool:
        """Return once this request may go on; True if it was held on the way."""
        loop = asyncio.get_running_loop()
        was_held = False
        while True:
            with self._lock:
                if self._limit is None or self.passed < self._limit:
                    self.passed += 1
                    return was_held
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
                self.held += 1
            was_held = True
            try:
                await future
            finally:
                with self._lock:
                    self.held -= 1
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Counters:
    """What one provider emulator saw. Safe to read from any thread while it serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.calls_by_endpoint: dict[str, int] = {}
            self.status_counts: dict[int, int] = {}
            self.in_flight = 0
            self.max_in_flight = 0
            self.http_429 = 0
            self.rate_cap_429 = 0
            self.hangs = 0
            self.malformed = 0
            self.latency_sum_s = 0.0
            self.latency_count = 0
            self.latencies_drawn: list[float] = []
            self.calls_by_item: dict[str, int] = {}
            self.success_by_item: dict[str, int] = {}
            self.extra: dict[str, float] = {}
            self.started_at = time.time()
            # When the first request arrived and the last one was answered, and the time
            # integral of requests in flight: a benchmark's start-up, tail and utilisation.
            self.first_begin_at: float | None = None
            self.last_end_at: float | None = None
            self.in_flight_seconds = 0.0
            self._in_flight_since = time.monotonic()

    def _integrate(self) -> None:
        now = time.monotonic()
        self.in_flight_seconds += self.in_flight * (now - self._in_flight_since)
        self._in_flight_since = now

    def begin(self, endpoint: str, item_key: str | None) -> None:
        with self._lock:
            self._integrate()
            if self.first_begin_at is None:
                self.first_begin_at = time.time()
            self.calls += 1
            self.calls_by_endpoint[endpoint] = self.calls_by_endpoint.get(endpoint, 0) + 1
            if item_key is not None:
                self.calls_by_item[item_key] = self.calls_by_item.get(item_key, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, status: int, item_key: str | None) -> None:
        with self._lock:
            self._integrate()
            self.last_end_at = time.time()
            self.in_flight -= 1
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            if status == 429:
                self.http_429 += 1
            if item_key is not None and 200 <= status < 300:
                self.success_by_item[item_key] = self.success_by_item.get(item_key, 0) + 1

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency_sum_s += seconds
            self.latency_count += 1
            if len(self.latencies_drawn) < LATENCY_LIST_CAP:
                self.latencies_drawn.append(seconds)

    def bump(self, name: str, amount: float = 1) -> None:
        """Count something: built-in names (hangs, malformed, ...) or provider-specific."""
        with self._lock:
            if name in ("hangs", "malformed", "rate_cap_429"):
                setattr(self, name, getattr(self, name) + int(amount))
            else:
                self.extra[name] = self.extra.get(name, 0) + amount

    def snapshot(self, *, latencies: bool = True) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {
                "calls": self.calls,
                "calls_by_endpoint": dict(self.calls_by_endpoint),
                "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "http_429": self.http_429,
                "rate_cap_429": self.rate_cap_429,
                "hangs": self.hangs,
                "malformed": self.malformed,
                "latency_sum_s": self.latency_sum_s,
                "latency_count": self.latency_count,
                "calls_by_item": dict(self.calls_by_item),
                "success_by_item": dict(self.success_by_item),
                "uptime_s": time.time() - self.started_at,
                "first_begin_at": self.first_begin_at,
                "last_end_at": self.last_end_at,
                "in_flight_seconds": self.in_flight_seconds,
            }
            if latencies:
                data["latencies_drawn"] = list(self.latencies_drawn)
            for name, value in self.extra.items():
                data[name] = int(value) if float(value).is_integer() else value
            return data


class FaultPlan:
    """Seeded randomness and one-shot fault bookkeeping for one provider.

    Separate RNG streams per concern, so turning on error injection does not shift the
    per-request latencies a benchmark already measured.
    """

    def __init__(self, seed: int) -> None:
        self.reseed(seed)
        self.first_n_seen = 0
        self.failed_keys: set[str] = set()

    def reseed(self, seed: int) -> None:
        self.latency_rng = random.Random(f"{seed}|latency")
        self.error_rng = random.Random(f"{seed}|errors")
        self.content_rng = random.Random(f"{seed}|content")

    def injected_status(self, knobs: Knobs, item_key: str | None) -> int | None:
        """The status a request must fail with, if any (first-N, per-key, then random)."""
        if knobs.error_first_n:
            index = self.first_n_seen
            self.first_n_seen += 1
            for status, count in knobs.error_first_n.items():
                if index < count:
                    return status
                index -= count
        if item_key is not None and item_key in knobs.fail_keys:
            if item_key not in self.failed_keys:
                self.failed_keys.add(item_key)
                return knobs.fail_keys[item_key]
        if knobs.error_rates:
            draw = self.error_rng.random()
            for status, rate in sorted(knobs.error_rates.items()):
                if draw < rate:
                    return status
                draw -= rate
        return None

    def latency(self, knobs: Knobs, item_key: str | None) -> float:
        if knobs.latency_mode == "per_item" and item_key is not None:
            return latency_for_key(
                item_key, seed=knobs.seed, median=knobs.latency_median_s, sigma=knobs.latency_sigma
            )
        u = min(max(self.latency_rng.random(), 1e-12), 1 - 1e-12)
        return lognormal(knobs.latency_median_s, knobs.latency_sigma, u)

    def hangs(self, knobs: Knobs) -> bool:
        return knobs.hang_rate > 0 and self.error_rng.random() < knobs.hang_rate

    def malformed(self, knobs: Knobs) -> bool:
        return knobs.malformed_rate > 0 and self.content_rng.random() < knobs.malformed_rate
