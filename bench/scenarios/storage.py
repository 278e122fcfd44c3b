"""Database round trips per 1,000 rows written, on SQLite and (when available) Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import BenchContext, anthropic, flow_spec, run_worker, seed

# The budget: at most 1 round trip per 25 rows, i.e. 40 per 1,000 rows.
ROUND_TRIPS_PER_1000 = 40


def db_round_trips(ctx: BenchContext, n: int = 1000) -> dict[str, Any]:
    """Round trips per 1,000 rows written, on SQLite and (when available) Postgres."""
    anthropic(ctx, latency_median_s=0.01)
    out: dict[str, Any] = {}
    walls = []
    for backend, url in (
        ("sqlite", ctx.sqlite_url("db_round_trips")),
        ("postgres", ctx.postgres_url("round_trips")),
    ):
        if url is None:
            out[f"qualify_{backend}_per_1000_rows"] = None
            continue
        project_id, job_id = asyncio.run(seed(url, n))
        flow = run_worker(flow_spec("qualify", project_id, job_id), ctx.env(url))
        rows = flow["summary"]["total"]
        out[f"qualify_{backend}_per_1000_rows"] = flow["summary"]["dbRoundTrips"] * 1000 / rows
        walls.append(flow["wall_s"])
    worst = max(v for k, v in out.items() if v is not None)
    return {
        "wall_s": sum(walls),
        "ideal_s": None,
        "ratio": worst / ROUND_TRIPS_PER_1000,
        **out,
        "round_trips_per_1000_rows": worst,
    }


def merge_round_trips(results: dict[str, dict[str, Any]]) -> None:
    """db_round_trips covers qualify and find_contacts; the latter is measured in the
    contacts run, so its figure is folded in here."""
    rt, contacts = results.get("db_round_trips"), results.get("contacts_throughput")
    if rt is None or contacts is None or contacts.get("db_round_trips_per_1000_rows") is None:
        return
    rt["find_contacts_sqlite_per_1000_rows"] = contacts["db_round_trips_per_1000_rows"]
    worst = max(v for k, v in rt.items() if k.endswith("_per_1000_rows") and v is not None)
    rt["round_trips_per_1000_rows"] = worst
    rt["ratio"] = worst / ROUND_TRIPS_PER_1000
