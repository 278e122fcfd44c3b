"""Fixtures of the reliability suite (the counters and the summary live in plugin.py)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import pytest

from tam.settings import get_settings
from tests.reliability.plugin import FULL, TALLY, Tally


@pytest.fixture
def tally() -> Tally:
    return TALLY


@pytest.fixture
def full() -> bool:
    """Whether to run the large variants (make reliability) rather than the CI-sized ones."""
    return FULL


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch, tam_env: dict[str, str]) -> Iterator[None]:
    """Heartbeats and progress often enough for a test to see a dead worker in seconds."""
    monkeypatch.setenv("TAM_HEARTBEAT_INTERVAL_S", "0.3")
    monkeypatch.setenv("TAM_PROGRESS_INTERVAL_S", "0.2")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def quick_task_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every task's retries but drop their 5-30 s delays, so outage cases stay short.

    The number of retries is the product's; only the wait between them is the test's.
    """
    for module_name, task_names in {
        "flows.qualify": ["qualify_chunk_task"],
        "flows.find_contacts": ["search_people_task", "find_emails_task"],
        "flows.source_companies": ["source_chunk_task"],
        "flows.check_linkedin": ["check_linkedin_task"],
        "flows.refine_discolike": ["refine_discover_task"],
    }.items():
        # NOTE: `flows.qualify` the attribute is the flow; the module is in sys.modules.
        module = importlib.import_module(module_name)
        for name in task_names:
            task = getattr(module, name)
            monkeypatch.setattr(module, name, task.with_options(retry_delay_seconds=0))


@pytest.fixture
def roomy_limits(monkeypatch: pytest.MonkeyPatch, tam_env: dict[str, str]) -> Iterator[None]:
    """Account limits without the per-minute caps of Prospeo's and Hunter's entry tiers.

    These cases are about faults, not pacing (tests/test_limiter.py and the benchmarks
    cover that); at 5 enrichments a second the email waterfall alone would take minutes.
    """
    limits = {
        name: {"max_in_flight": 10}
        for name in ("prospeo", "prospeo_enrich", "hunter", "neverbounce")
    }
    monkeypatch.setenv("TAM_LIMITS", json.dumps(limits))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
