"""Several qualify jobs, each in its own worker process, on one Anthropic account whose
budget is leased from the Prefect server; and one job against a provider's hidden rate cap."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.harness import (
    LIMIT,
    BenchContext,
    anthropic,
    bare_client,
    flow_spec,
    run_worker,
    seed,
    start_workers,
    target,
    timeline,
)


def _jobs_on_one_account(
    ctx: BenchContext, name: str, jobs: int, n: int, start_in_s: float
) -> dict[str, Any]:
    """`jobs` qualify jobs of `n` companies in as many processes, started together, sharing
    one account's LIMIT slots through Prefect leases; ideal = Σ latency the emulator drew
    ÷ LIMIT, as if one process had run every call back to back at full window."""
    anthropic(ctx, latency_median_s=0.1, latency_sigma=0.5, latency_mode="per_item")
    specs = []
    # Every process imports Prefect first, then they start together.
    start_at = time.time() + start_in_s
    for i in range(jobs):
        url = ctx.sqlite_url(f"{name}_{i}")
        project_id, job_id = asyncio.run(seed(url, n))
        spec = flow_spec("qualify", project_id, job_id, start_at=start_at, sample=True)
        specs.append((spec, ctx.env(url, TAM_LIMITER_BACKEND="prefect")))
    results = start_workers(specs)
    (ctx.work_dir / f"{name}_samples.json").write_text(
        json.dumps([r.pop("samples", []) for r in results])
    )
    stats = ctx.control.stats("anthropic", latencies=False)
    ideal = float(stats["latency_sum_s"]) / LIMIT
    started, ended = min(r["started"] for r in results), max(r["ended"] for r in results)
    wall = ended - started
    return {
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal,
        "items": jobs * n,
        "max_in_flight": stats["max_in_flight"],
        **timeline(stats, started, ended),
        "per_job_start_s": [round(r["started"] - start_at, 2) for r in results],
        "per_job_wall_s": [round(r["wall_s"], 2) for r in results],
        "status": [r["status"] for r in results],
    }


def two_jobs_one_account(ctx: BenchContext, n: int = 500) -> dict[str, Any]:
    """Two qualify jobs in two processes share one account's 10 slots via Prefect leases."""
    row = _jobs_on_one_account(ctx, "two_jobs", 2, n, start_in_s=12)
    row["targets"] = {
        "max_in_flight": target(row["max_in_flight"], LIMIT),
        "ratio": target(row["ratio"], 1.2),
    }
    return row


def four_workers_one_account(ctx: BenchContext, n: int = 250) -> dict[str, Any]:
    """Four qualify jobs of `n` companies in four worker processes on one account (limit
    10, leases through the Prefect server). Beside it, the bare client's ms per call: the
    same SDK calls at the same concurrency with no orchestration, on `n` companies."""
    row = _jobs_on_one_account(ctx, "four_workers", 4, n, start_in_s=20)
    calls = row["items"]
    anthropic(ctx, latency_median_s=0.1, latency_sigma=0.5, latency_mode="per_item")
    bare = bare_client(ctx, "four_workers_bare", n)
    bare_ideal = float(ctx.control.stats("anthropic", latencies=False)["latency_sum_s"]) / LIMIT
    row |= {
        "wall_ms_per_call": row["wall_s"] * 1000 / calls,
        "ideal_ms_per_call": row["ideal_s"] * 1000 / calls,
        "bare_client_ms_per_call": bare["wall_s"] * 1000 / n,
        "bare_client_ratio": bare["wall_s"] / bare_ideal,
        "targets": {
            "max_in_flight": target(row["max_in_flight"], LIMIT),
            "ratio": target(row["ratio"], 1.2),
        },
    }
    return row


def rate_limit_storm(
    ctx: BenchContext, n: int = 600, cap: int = 100, interval: float = 10.0
) -> dict[str, Any]:
    """The emulator caps requests per interval and answers 429 + retry-after above it; the
    pipeline is not told the cap."""
    median = 0.05
    anthropic(
        ctx,
        latency_median_s=median,
        latency_sigma=0.3,
        needs_review_pct=0,
        requests_per_interval=cap,
        interval_s=interval,
    )
    url = ctx.sqlite_url("rate_limit_storm")
    project_id, job_id = asyncio.run(seed(url, n))
    flow = run_worker(flow_spec("qualify", project_id, job_id), ctx.env(url))
    stats = ctx.control.stats("anthropic", latencies=False)
    # The cap lets `cap` requests start per window: the last one can start no earlier than
    # after (n - 1) // cap full windows, and then takes one latency.
    ideal = ((n - 1) // cap) * interval + median
    summary = flow["summary"]
    judged = summary.get("total", 0) if flow["status"] == "completed" else 0
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": ideal,
        "ratio": flow["wall_s"] / ideal,
        "items": n,
        "failed_items": n - judged,
        "http_429_seen": stats["http_429"],
        "status": flow["status"],
    }
