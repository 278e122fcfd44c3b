"""The bench's scenarios, one module per kind of run; each returns measured figures beside
the ideal (from what the emulator did, or the bare client) and its targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import BenchContext
from bench.scenarios.accounts import (
    four_workers_one_account,
    rate_limit_storm,
    two_jobs_one_account,
)
from bench.scenarios.contacts import contacts_and_linkedin
from bench.scenarios.qualify import overhead_10k, qualify_throughput, scale_100k
from bench.scenarios.storage import db_round_trips, merge_round_trips

SCENARIOS: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "qualify_throughput": qualify_throughput,
    "overhead_10k": overhead_10k,
    "two_jobs_one_account": two_jobs_one_account,
    "four_workers_one_account": four_workers_one_account,
    "rate_limit_storm": rate_limit_storm,
    "db_round_trips": db_round_trips,
    "scale_100k": scale_100k,
}
# Scenarios that report several rows.
MULTI_SCENARIOS: dict[str, Callable[[BenchContext], dict[str, dict[str, Any]]]] = {
    "contacts_and_linkedin": contacts_and_linkedin,
}

__all__ = ["MULTI_SCENARIOS", "SCENARIOS", "merge_round_trips"]
