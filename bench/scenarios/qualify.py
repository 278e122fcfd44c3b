"""One qualify job against the Anthropic emulator: throughput under latency, orchestration
overhead at zero latency, and memory at 10,000 and 100,000 companies."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import (
    LIMIT,
    BenchContext,
    anthropic,
    bare_client,
    flow_spec,
    latency_sum,
    run_worker,
    seed,
    target,
    timeline,
)


def qualify_throughput(ctx: BenchContext, n: int = 1000) -> dict[str, Any]:
    """Sliding window vs the old fixed batches, on the same per-company latency draws."""
    knobs = {"latency_median_s": 0.1, "latency_sigma": 0.5, "latency_mode": "per_item"}
    anthropic(ctx, **knobs)
    url = ctx.sqlite_url("qualify_throughput")
    project_id, job_id = asyncio.run(seed(url, n))
    flow = run_worker(flow_spec("qualify", project_id, job_id), ctx.env(url))
    stats = ctx.control.stats("anthropic", latencies=False)
    ideal = float(stats["latency_sum_s"]) / LIMIT

    anthropic(ctx, **knobs)
    base_url = ctx.sqlite_url("qualify_baseline")
    base_project, _ = asyncio.run(seed(base_url, n))
    baseline = run_worker(
        {"mode": "fixed_batches", "project_id": str(base_project), "batch": LIMIT},
        ctx.env(base_url),
    )
    base_ideal = latency_sum(ctx) / LIMIT
    summary = flow["summary"]
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": ideal,
        "ratio": flow["wall_s"] / ideal,
        "items": n,
        "max_in_flight": stats["max_in_flight"],
        **timeline(stats, flow["started"], flow["ended"]),
        "baseline_batch_wall_s": baseline["wall_s"],
        "baseline_batch_ratio": baseline["wall_s"] / base_ideal,
        "db_round_trips": summary.get("dbRoundTrips"),
        "task_retries": flow["task_retries"],
        "status": flow["status"],
    }


def _zero_latency_qualify(ctx: BenchContext, name: str, n: int) -> dict[str, Any]:
    anthropic(ctx, latency_median_s=0.0)
    url = ctx.sqlite_url(name)
    project_id, job_id = asyncio.run(seed(url, n))
    return run_worker(flow_spec("qualify", project_id, job_id), ctx.env(url))


def overhead_10k(ctx: BenchContext, n: int = 10_000) -> dict[str, Any]:
    """Zero provider latency. `overhead_ms_per_item` is what orchestration (Prefect tasks,
    job row, limiter, batched writes, paginated reads) adds per company over the bare SDK
    calls at the same concurrency against the same emulator; `wall_ms_per_item` is the
    flow's whole wall time per company, client included."""
    flow = _zero_latency_qualify(ctx, "overhead_10k", n)
    ideal = latency_sum(ctx) / LIMIT
    bare = bare_client(ctx, "overhead_10k_bare", n)
    overhead = (flow["wall_s"] - bare["wall_s"]) * 1000 / n
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": bare["wall_s"],
        "ratio": flow["wall_s"] / bare["wall_s"],
        "items": n,
        "overhead_ms_per_item": overhead,
        "wall_ms_per_item": flow["wall_s"] * 1000 / n,
        "bare_client_ms_per_item": bare["wall_s"] * 1000 / n,
        "emulator_latency_ideal_s": ideal,
        "peak_rss_mb": flow["peak_rss_mb"],
        "targets": {"overhead_ms_per_item": target(overhead, 0.5)},
        "task_runs": flow["task_runs"],
        "task_retries": flow["task_retries"],
        "status": flow["status"],
    }


def scale_100k(ctx: BenchContext, n: int = 100_000, small: int = 10_000) -> dict[str, Any]:
    """One qualify job of `n` companies at zero latency, and the same run at `small`: a job's
    memory must not grow with its size (peak RSS at `n` within 15 % of the one at `small`,
    and at most 300 MB). The ideal is the bare client over the same `n` companies."""
    flow_small = _zero_latency_qualify(ctx, "scale_small", small)
    flow = _zero_latency_qualify(ctx, "scale_100k", n)
    bare = bare_client(ctx, "scale_100k_bare", n)
    rss, rss_small = flow["peak_rss_mb"], flow_small["peak_rss_mb"]
    growth = rss / rss_small
    return {
        "wall_s": flow["wall_s"],
        "ideal_s": bare["wall_s"],
        "ratio": flow["wall_s"] / bare["wall_s"],
        "items": n,
        "peak_rss_mb": rss,
        f"peak_rss_mb_at_{small}": rss_small,
        "rss_growth": growth,
        "wall_ms_per_item": flow["wall_s"] * 1000 / n,
        "bare_client_ms_per_item": bare["wall_s"] * 1000 / n,
        f"wall_ms_per_item_at_{small}": flow_small["wall_s"] * 1000 / small,
        "targets": {"peak_rss_mb": target(rss, 300.0), "rss_growth": target(growth, 1.15)},
        "status": [flow_small["status"], flow["status"]],
    }
