"""The emulator framework: server modes, control endpoints, knobs, registry, world."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.emulators import (
    PROVIDERS,
    Call,
    EmulatorControl,
    EmulatorServer,
    Endpoint,
    ErrorReason,
    Knobs,
    ProviderEmulator,
    World,
    env_for,
    latency_for_key,
    register_provider,
    sample_companies,
)
from tam.emulators.anthropic import expected_verdict
from tam.emulators.knobs import FaultPlan, RateWindow


# --- a provider defined in a test, the way a new provider module would be -------------------
class ToyEmulator(ProviderEmulator):
    name = "toy"
    concurrency_status = 503

    def api_key(self, request: Request) -> str | None:
        return request.query_params.get("key")

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        return JSONResponse({"ok": False, "code": reason.value, "message": message}, status)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "/v1/lookup",
                self.lookup,
                ("GET",),
                item_key=lambda call: call.request.query_params.get("domain"),
            )
        ]

    async def lookup(self, call: Call) -> Response:
        domain = call.request.query_params.get("domain") or ""
        company = self.world.company_for(domain)
        if call.malformed:
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": True, "name": company["name"]})


@pytest.fixture
def toy_server() -> Iterator[EmulatorServer]:
    register_provider(ToyEmulator)
    try:
        with EmulatorServer(providers=["toy"], config={"toy": {"retry_after_s": 2}}) as srv:
            yield srv
    finally:
        PROVIDERS.pop("toy", None)


def test_a_registered_provider_gets_the_whole_pipeline(toy_server: EmulatorServer):
    url = toy_server.base_url("toy") + "/v1/lookup"
    control = toy_server.control
    with httpx.Client() as http:
        assert http.get(url, params={"domain": "acme.io"}).status_code == 401
        denied = http.get(url, params={"domain": "acme.io", "key": "invalid-1"})
        assert denied.status_code == 401 and denied.json()["code"] == "auth"
        ok = http.get(url, params={"domain": "acme.io", "key": "k"})
        assert ok.json() == {"ok": True, "name": World(7).company_for("acme.io")["name"]}

        control.configure("toy", error_first_n={429: 1})
        limited = http.get(url, params={"domain": "acme.io", "key": "k"})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"

        missing = http.get(toy_server.base_url("toy") + "/nope", params={"key": "k"})
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    stats = control.stats("toy")
    assert stats["calls"] == 4  # the 404 never reached a provider route
    assert stats["calls_by_item"] == {"acme.io": 4}
    assert stats["success_by_item"] == {"acme.io": 1}
    assert stats["status_counts"] == {"200": 1, "401": 2, "429": 1}
    assert toy_server.providers == ["toy"]
    assert toy_server.emulator("toy").counters.calls == 4


def test_control_endpoints_and_partial_knob_updates(toy_server: EmulatorServer):
    control = toy_server.control
    knobs = control.configure("toy", latency_median_s=0.01, error_rates={"500": 0.1})
    assert knobs["latency_median_s"] == 0.01 and knobs["error_rates"] == {"500": 0.1}
    knobs = control.configure("toy", seed=11)
    assert knobs["seed"] == 11 and knobs["latency_median_s"] == 0.01  # others kept
    assert knobs["retry_after_s"] == 2

    for bad in ({"no_such_knob": 1}, {"error_rates": {"500": 2}}, {"hang_rate": -1}):
        with pytest.raises(httpx.HTTPStatusError) as info:
            control.configure("toy", **bad)
        assert info.value.response.status_code == 422
    assert control.configure("toy")["seed"] == 11  # a rejected update changes nothing

    httpx.get(toy_server.base_url("toy") + "/v1/lookup", params={"key": "k", "domain": "a.io"})
    assert control.stats("toy")["calls"] == 1
    assert "latencies_drawn" not in control.stats("toy", latencies=False)

    control.reset("toy")
    assert control.stats("toy")["calls"] == 0
    assert control.stats("toy")["knobs"]["seed"] == 11
    # knobs=true goes back to the knobs the server started with, not the class defaults
    knobs = control.reset("toy", knobs=True)["knobs"]
    assert knobs["seed"] == 7 and knobs["retry_after_s"] == 2

    root = httpx.get(toy_server.url + "/_emulator/stats").json()
    assert set(root) == {"toy"}
    assert control.health() == {"ok": True, "providers": ["toy"]}


async def test_async_control(toy_server: EmulatorServer):
    control = EmulatorControl(toy_server.url)
    assert (await control.aconfigure("toy", malformed_rate=1.0))["malformed_rate"] == 1.0
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            toy_server.base_url("toy") + "/v1/lookup", params={"key": "k", "domain": "a.io"}
        )
    assert answer.json() == {"ok": True}
    assert (await control.astats("toy"))["malformed"] == 1
    assert (await control.areset("toy", knobs=True))["knobs"]["malformed_rate"] == 0.0


async def _until(condition: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_max_concurrency_uses_the_provider_status(toy_server: EmulatorServer):
    control = toy_server.control
    # Held, the two admitted requests stay in flight however slowly the others arrive.
    control.configure("toy", max_concurrency=2)
    control.hold("toy")
    url = toy_server.base_url("toy") + "/v1/lookup"

    async def refused_and_held() -> bool:
        stats = await control.astats("toy", latencies=False)
        return stats["held"] == 2 and stats["status_counts"].get("503") == 6

    async with httpx.AsyncClient() as http:
        calls = [
            asyncio.create_task(http.get(url, params={"key": "k", "domain": f"d{i}.io"}))
            for i in range(8)
        ]
        await _until(refused_and_held)
        await control.arelease("toy")
        answers = await asyncio.gather(*calls)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200] + [503] * 6


async def test_hold_answers_n_then_holds_the_rest_until_released(toy_server: EmulatorServer):
    control = EmulatorControl(toy_server.url)
    url = toy_server.base_url("toy") + "/v1/lookup"
    knobs = await control.ahold("toy", after=3)
    assert knobs["hold_after"] == 3

    async def stats() -> dict[str, Any]:
        return await control.astats("toy", latencies=False)

    async def three_answered_two_held() -> bool:
        s = await stats()
        return s["status_counts"].get("200") == 3 and s["held"] == 2

    async with httpx.AsyncClient() as http:
        calls = [
            asyncio.create_task(http.get(url, params={"key": "k", "domain": f"h{i}.io"}))
            for i in range(5)
        ]
        await _until(three_answered_two_held)
        assert sum(c.done() for c in calls) == 3
        assert (await stats())["in_flight"] == 2  # held requests are in flight

        # A knob changed while they wait applies to them when they go.
        await control.aconfigure("toy", malformed_rate=1.0)
        await control.ahold("toy", after=1)  # one more, then hold again
        await _until(lambda: _held_is(control, 1))
        assert sum(c.done() for c in calls) == 4

        await control.arelease("toy")
        answers = await asyncio.gather(*calls)
        later = await http.get(url, params={"key": "k", "domain": "late.io"})
    assert [a.status_code for a in answers] == [200] * 5 and later.status_code == 200
    assert sorted(a.json() == {"ok": True} for a in answers) == [False, False, False, True, True]
    final = await stats()
    assert final["held"] == 0 and final["in_flight"] == 0 and final["knobs"]["hold_after"] is None


async def _held_is(control: EmulatorControl, n: int) -> bool:
    stats = await control.astats("toy", latencies=False)
    return bool(stats["held"] == n and stats["hold_passed"] == 1)


def test_a_reset_of_the_knobs_lets_held_requests_go(toy_server: EmulatorServer):
    """The per-test reset must not leave a request hanging into the next test."""
    emulator = toy_server.emulator("toy")
    emulator.configure({"hold_after": 0})  # from this thread, not the server's loop
    url = toy_server.base_url("toy") + "/v1/lookup"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.get, url, params={"key": "k", "domain": "r.io"}, timeout=20)
        deadline = time.monotonic() + 20
        while emulator.gate.held != 1:
            assert time.monotonic() < deadline and not answer.done()
            time.sleep(0.01)
        toy_server.control.reset("toy", knobs=True)
        assert answer.result(timeout=20).status_code == 200


def test_subprocess_mode_starts_and_stops():
    config = {"anthropic": {"latency_median_s": 0.05, "needs_review_pct": 0}}
    server = EmulatorServer(in_process=False, config=config)
    with server:
        assert "anthropic" in server.providers
        control = server.control
        assert control.stats("anthropic")["knobs"]["latency_median_s"] == 0.05
        assert control.configure("anthropic", seed=3)["seed"] == 3
        assert control.configure("anthropic")["needs_review_pct"] == 0
        assert control.reset("anthropic", knobs=True)["knobs"]["seed"] == 7
        with pytest.raises(RuntimeError):
            server.emulator("anthropic")
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)


def test_main_rejects_a_bad_config():
    result = subprocess.run(
        [sys.executable, "-m", "tam.emulators", "--port", "1", "--config", '{"nope": {}}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no emulator for" in result.stderr


def test_env_for_points_every_provider_at_the_server():
    env = env_for("http://127.0.0.1:9999/")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999/anthropic"
    assert env["GOOGLE_PLACES_BASE_URL"] == "http://127.0.0.1:9999/google_places"
    assert env["BRIGHTDATA_API_TOKEN"] == "emulator-key"
    assert sum(name.endswith("_BASE_URL") for name in env) == 7
    assert sum(value == "emulator-key" for value in env.values()) == 7


# --- knobs, faults and latency, without a server ------------------------------------------
def test_keys_accepted():
    assert Knobs().key_accepted("anything")
    for key in (None, "", "invalid", "invalid-123"):
        assert not Knobs().key_accepted(key)
    assert not Knobs(valid_keys=["a"]).key_accepted("b")
    assert Knobs(valid_keys=["a"]).key_accepted("a")


def test_knob_validation():
    with pytest.raises(ValidationError):
        Knobs(error_rates={429: 0.7, 500: 0.6})
    with pytest.raises(ValidationError):
        Knobs(error_first_n={999: 1})
    with pytest.raises(ValidationError):
        Knobs(fail_keys={"a.io": 42})
    assert Knobs().updated({"error_rates": {"429": 0.5}}).error_rates == {429: 0.5}


def test_first_n_then_fail_keys_then_nothing():
    plan = FaultPlan(seed=1)
    knobs = Knobs(error_first_n={429: 2, 500: 1}, fail_keys={"x.io": 503})
    got = [plan.injected_status(knobs, "x.io") for _ in range(6)]
    assert got == [429, 429, 500, 503, None, None]


def test_rate_window_reports_when_a_slot_frees():
    window = RateWindow()
    for t in (0.0, 0.5, 1.0):
        assert window.try_acquire(3, 10.0, now=t) is None
    assert window.try_acquire(3, 10.0, now=2.0) == pytest.approx(8.0)
    assert window.try_acquire(3, 10.0, now=10.0) is None  # the first stamp expired
    assert window.try_acquire(None, 10.0, now=10.0) is None


def test_per_item_latency_is_a_lognormal_around_the_median():
    draws = sorted(latency_for_key(f"c{i}.io", seed=7, median=1.0, sigma=0.5) for i in range(2001))
    assert draws[1000] == pytest.approx(1.0, rel=0.1)
    assert draws[0] < 0.4 and draws[-1] > 2.5
    assert latency_for_key("a.io", seed=7, median=1.0, sigma=0.5) != latency_for_key(
        "a.io", seed=8, median=1.0, sigma=0.5
    )
    assert latency_for_key("a.io", seed=7, median=0.0, sigma=0.5) == 0.0


# --- the synthetic world ------------------------------------------------------------------
def test_world_is_deterministic_and_prefix_stable():
    companies = sample_companies(200, seed=7)
    assert companies == sample_companies(200, seed=7)
    assert companies[:50] == World(7).companies(50)
    assert companies != sample_companies(200, seed=8)
    assert len({c["domain"] for c in companies}) == 200
    fields = {
        "domain",
        "name",
        "industry",
        "employee_count",
        "location",
        "description",
        "digital_footprint_score",
        "linkedin_url",
        "city",
        "state",
        "country",
    }
    for company in companies:
        assert fields <= set(company)
        assert 0 <= company["digital_footprint_score"] <= 100
    assert World(7).company_for("stripe.com") == World(7).company_for("STRIPE.com")
    assert World(7).company_for("stripe.com")["domain"] == "stripe.com"


def test_demo_icp_qualifies_about_half():
    def prompt(c: dict[str, str]) -> str:
        lines = [
            f"Company name: {c['name']}",
            f"Domain: {c['domain']}",
            f"Description: {c['description']}",
            f"Industry: {c['industry']}",
            "Industry keywords: saas, software, fintech",
        ]
        return "\n".join(lines)

    verdicts = [
        expected_verdict(prompt(c), seed=7, needs_review_pct=5) for c in sample_companies(200)
    ]
    assert 0.4 <= verdicts.count("qualified") / 200 <= 0.6
    assert 0 < verdicts.count("needs_review") < 25
