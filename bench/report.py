"""Render bench/results.json as the README's Markdown table: python -m bench.report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {
    "qualify_throughput": "ratio ≤ 1.15, baseline_batch_ratio ≥ 1.6",
    "overhead_10k": "overhead_ms_per_item ≤ 0.5, peak_rss_mb ≤ 400",
    "two_jobs_one_account": "max_in_flight ≤ 10, ratio ≤ 1.2",
    "four_workers_one_account": "max_in_flight ≤ 10, ratio ≤ 1.2",
    "rate_limit_storm": "failed_items = 0, ratio ≤ 1.2",
    "db_round_trips": "≤ 40 per 1,000 rows",
    "scale_100k": "peak_rss_mb ≤ 300, within 15 % of the 10,000 run (rss_growth ≤ 1.15)",
}
SKIP = {"scenario", "wall_s", "ideal_s", "ratio", "status", "targets"}


def checks(row: dict[str, Any]) -> str:
    """This run's verdict on each target the scenario measured itself against."""
    return "; ".join(
        f"{name} {fmt(c['measured'])} ≤ {fmt(c['at_most'])}: {'met' if c['met'] else 'missed'}"
        for name, c in (row.get("targets") or {}).items()
    )


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "/".join(fmt(v) for v in value)
    return str(value)


def render(path: Path) -> str:
    doc = json.loads(path.read_text())
    machine = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {machine['cpus']} cores, Python {machine['python']}.",
        "",
        "| scenario | wall s | ideal s | ratio | figures | target | this run |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in doc["scenarios"]:
        figures = "; ".join(f"{k} {fmt(v)}" for k, v in row.items() if k not in SKIP)
        lines.append(
            f"| {row['scenario']} | {fmt(row.get('wall_s'))} | {fmt(row.get('ideal_s'))} "
            f"| {fmt(row.get('ratio'))} | {figures} | {TARGETS.get(row['scenario'], '—')} "
            f"| {checks(row) or '—'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.json")
    sys.stdout.write(render(target) + "\n")
