"""`tam serve`: every flow as a deployment served from this process (local development).

Prefect's `serve` runs each flow run in a subprocess and watches for cancellation, so the
UI's Cancel and Retry work as they do under a worker.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEPLOYMENT_NAME = "tam"


def runner_deployments(only: list[str] | None = None) -> list[Any]:
    from flows import SERVED_FLOWS

    return [
        flow.to_deployment(
            name=DEPLOYMENT_NAME,
            tags=["tam", flow.name],
            description=(flow.description or "").strip().splitlines()[0],
            **extra,
        )
        for flow, extra in SERVED_FLOWS
        if not only or flow.name in only
    ]


def serve(only: list[str] | None = None, limit: int | None = None) -> None:
    from prefect import serve as prefect_serve

    # Each served run is its own process: only leased budgets hold across them (an explicit
    # TAM_LIMITER_BACKEND wins). The runs inherit this environment.
    os.environ.setdefault("TAM_LIMITER_BACKEND", "prefect")
    prefect_serve(*runner_deployments(only), limit=limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flow", action="append", help="serve only this flow (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    args = parser.parse_args()
    serve(args.flow, args.limit)


if __name__ == "__main__":
    main()
