"""find_contacts then check_linkedin on qualified companies, against the contact providers'
emulators (Prospeo, Hunter, NeverBounce) and Bright Data's snapshots."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import BenchContext, flow_spec, new_job, run_worker, seed


def _account_bound(calls: int, latency: float, limit: Any) -> float:
    """The least time `calls` calls of `latency` need under one account's limit."""
    bound = calls * latency / limit.max_in_flight
    if limit.requests_per_interval and calls > limit.requests_per_interval:
        bound = max(bound, (calls - 1) // limit.requests_per_interval * limit.interval_s)
    return float(bound)


def contacts_and_linkedin(ctx: BenchContext, n: int = 500) -> dict[str, dict[str, Any]]:
    """find_contacts then check_linkedin on `n` qualified companies, default limits.

    ideal = the tightest single-account bound (Σ latency / in-flight, or the rate cap) over
    the accounts the step used — a lower bound that ignores the waterfall's dependencies
    (an email lookup can only start once its person is found)."""
    from tam.settings import get_settings

    latency = 0.05
    for provider in ("prospeo", "hunter", "neverbounce", "brightdata"):
        ctx.control.reset(provider, knobs=True)
        ctx.control.configure(provider, latency_median_s=latency, latency_sigma=0.0)
    ctx.control.configure("brightdata", snapshot_ready_s=2.0)
    url = ctx.sqlite_url("contacts")
    project_id, job_id = asyncio.run(seed(url, n, job_type="find_contacts", qualified=True))
    env = ctx.env(url, TAM_BRIGHTDATA_POLL_INTERVAL_S="0.25")
    contacts = run_worker(flow_spec("find_contacts", project_id, job_id), env)
    limits = get_settings().limits
    prospeo = ctx.control.stats("prospeo", latencies=False)["calls_by_endpoint"]
    accounts = {
        "prospeo": (sum(v for k, v in prospeo.items() if "search" in k), limits["prospeo"]),
        "prospeo_enrich": (
            sum(v for k, v in prospeo.items() if "enrich" in k),
            limits["prospeo_enrich"],
        ),
        "hunter": (ctx.control.stats("hunter", latencies=False)["calls"], limits["hunter"]),
        "neverbounce": (
            ctx.control.stats("neverbounce", latencies=False)["calls"],
            limits["neverbounce"],
        ),
    }
    bounds = {a: _account_bound(calls, latency, lim) for a, (calls, lim) in accounts.items()}
    ideal = max(bounds.values())
    summary = contacts["summary"]
    found = summary.get("contactsFound", 0)
    result_contacts = {
        "wall_s": contacts["wall_s"],
        "ideal_s": ideal,
        "ratio": contacts["wall_s"] / ideal if ideal else None,
        "companies": n,
        "contacts_found": found,
        "emails_found": summary.get("emailsFound"),
        "calls": {a: calls for a, (calls, _) in accounts.items()},
        "binding_account": max(bounds, key=lambda a: bounds[a]),
        # Rows written: each contact is inserted, then updated with its email outcome.
        "db_round_trips_per_1000_rows": (
            summary["dbRoundTrips"] * 1000 / (2 * found) if found else None
        ),
        "status": contacts["status"],
    }

    linkedin_job = asyncio.run(new_job(url, project_id, "check_linkedin"))
    linkedin = run_worker(flow_spec("check_linkedin", project_id, linkedin_job), env)
    bd = ctx.control.stats("brightdata", latencies=False)
    snapshots = int(bd.get("snapshots", 0))
    waves = -(-snapshots // limits["brightdata"].max_in_flight) if snapshots else 0
    # Each wave: trigger, the snapshot's build time, one progress poll and the download.
    ideal_li = waves * (2.0 + 3 * latency)
    li_summary = linkedin["summary"]
    result_linkedin = {
        "wall_s": linkedin["wall_s"],
        "ideal_s": ideal_li,
        "ratio": linkedin["wall_s"] / ideal_li if ideal_li else None,
        "profiles": li_summary.get("total"),
        "active": li_summary.get("active"),
        "snapshots": snapshots,
        "status": linkedin["status"],
    }
    return {"contacts_throughput": result_contacts, "linkedin_throughput": result_linkedin}
