"""pytest plugin: tallies what the reliability suite injected and prints it at the end.

Registered from tests/conftest.py (not tests/reliability/conftest.py) because a conftest's
report hooks only see the tests below it, and tests elsewhere (the reaper cases in
tests/test_job_states.py) are part of the suite through `@pytest.mark.reliability`.

Tests count through `TALLY` (faults injected, bad inputs tried, items checked, lost and
duplicated); a test outside this package may instead declare fixed counts on its marker,
`@pytest.mark.reliability(faults={"stale heartbeat": 1})`, added when it passes.

Full mode (`TAM_RELIABILITY_FULL=1`, what `make reliability` sets) runs the larger variants
and writes the figures to `bench/reliability.json` (or `TAM_RELIABILITY_REPORT`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("TAM_RELIABILITY_FULL", "").lower() in ("1", "true", "yes")
REPORT_PATH = Path(
    os.environ.get("TAM_RELIABILITY_REPORT")
    or Path(__file__).resolve().parents[2] / "bench" / "reliability.json"
)


@dataclass
class Tally:
    """Counters the reliability tests add to; read by the terminal summary."""

    faults: Counter[str] = field(default_factory=Counter)
    bad_inputs: Counter[str] = field(default_factory=Counter)
    items_checked: int = 0
    items_lost: int = 0
    duplicates: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    def fault(self, kind: str, n: int = 1) -> None:
        if n > 0:
            self.faults[kind] += n

    def bad_input(self, kind: str, n: int = 1) -> None:
        if n > 0:
            self.bad_inputs[kind] += n

    def items(self, *, checked: int, lost: int = 0, duplicates: int = 0) -> None:
        """Record before asserting, so a failing run still reports what it lost."""
        self.items_checked += checked
        self.items_lost += lost
        self.duplicates += duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "full" if FULL else "ci",
            "cases": self.passed + self.failed,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "faultsInjected": sum(self.faults.values()),
            "faultsByKind": dict(sorted(self.faults.items())),
            "badInputsTried": sum(self.bad_inputs.values()),
            "badInputsByKind": dict(sorted(self.bad_inputs.items())),
            "itemsChecked": self.items_checked,
            "itemsLost": self.items_lost,
            "duplicates": self.duplicates,
            "wallSeconds": round(time.monotonic() - self.started, 1),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }


TALLY = Tally()


def _marker_counts(item: pytest.Item) -> None:
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return
    for kind, n in (marker.kwargs.get("faults") or {}).items():
        TALLY.fault(kind, n)
    for kind, n in (marker.kwargs.get("bad_inputs") or {}).items():
        TALLY.bad_input(kind, n)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("reliability") is None:
        return
    if report.when == "call" and report.passed:
        TALLY.passed += 1
        _marker_counts(item)
    elif report.failed:
        # A setup or teardown error fails the case as surely as a failed assertion.
        TALLY.failed += 1
    elif report.skipped and report.when in ("setup", "call"):
        TALLY.skipped += 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if TALLY.passed + TALLY.failed + TALLY.skipped == 0:
        return
    data = TALLY.as_dict()
    write = terminalreporter.write_line
    terminalreporter.section(f"reliability ({data['mode']})")
    write(f"{data['passed']} passed, {data['failed']} failed")
    write(f"faults injected: {data['faultsInjected']} " + _breakdown(data["faultsByKind"]))
    write(f"bad inputs tried: {data['badInputsTried']} " + _breakdown(data["badInputsByKind"]))
    write(
        f"items checked: {data['itemsChecked']}, items lost: {data['itemsLost']}, "
        f"duplicates: {data['duplicates']}"
    )
    if data["skipped"]:
        write(f"skipped: {data['skipped']} (a skipped case proves nothing)")
    if FULL and not config.getoption("collectonly"):
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        write(f"figures written to {REPORT_PATH}")


def _breakdown(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{kind}: {n}" for kind, n in counts.items()) + ")" if counts else ""
