"""A worker process for tests/test_leases.py: fake provider calls through the Prefect-backed
account limiter, against the server named by PREFECT_API_URL.

    python lease_worker.py '<json spec>'

spec: provider, max_in_flight, optional requests_per_interval / interval_s, mode ("work" or
"hold"), calls, min_ms, max_ms, out (file for the call log), optional go_file (wait for it
to exist before starting). "work" runs the calls and writes one JSON line per call
({"start", "end"} from time.time()) plus a final {"stats": ...} line. "hold" takes every
slot, prints "held" and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from orchestration.limits import account_limiter, close_account_limiters, lease_source
from tam.settings import LimitConfig, Settings


async def main(spec: dict[str, Any]) -> None:
    provider = spec["provider"]
    config = LimitConfig(
        max_in_flight=spec["max_in_flight"],
        requests_per_interval=spec.get("requests_per_interval"),
        interval_s=spec.get("interval_s", 60.0),
    )
    settings = Settings(limits={provider: config}, limiter_backend="prefect")
    limiter = account_limiter(provider, settings)
    print("ready", flush=True)
    go = spec.get("go_file")
    while go and not Path(go).exists():
        await asyncio.sleep(0.02)

    if spec["mode"] == "hold":
        for _ in range(config.max_in_flight):
            asyncio.get_running_loop().create_task(hold(limiter))
        while limiter.stats.in_flight < config.max_in_flight:
            await asyncio.sleep(0.02)
        print("held", flush=True)
        await asyncio.sleep(3600)
        return

    calls: list[dict[str, float]] = []

    async def call() -> None:
        async with limiter.slot():
            start = time.time()
            await asyncio.sleep(random.uniform(spec["min_ms"], spec["max_ms"]) / 1000)
            calls.append({"start": start, "end": time.time()})

    await asyncio.gather(*(call() for _ in range(spec["calls"])))
    source = lease_source(provider)
    assert source is not None
    stats = dataclasses.asdict(source.stats)
    await close_account_limiters()
    with open(spec["out"], "w") as out:
        for record in calls:
            out.write(json.dumps(record) + "\n")
        out.write(json.dumps({"stats": stats}) + "\n")


async def hold(limiter: Any) -> None:
    async with limiter.slot():
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
