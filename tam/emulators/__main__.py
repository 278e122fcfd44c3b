"""``python -m tam.emulators --host 127.0.0.1 --port 8787 [--config JSON]``.

Serves every provider emulator in the foreground and prints the env vars that point the
product at it (``eval``-able: ``export ANTHROPIC_BASE_URL=...``).
"""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from rich.console import Console

from tam.emulators.base import build_app
from tam.emulators.server import env_for, uvicorn_config
from tam.emulators.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tam.emulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--config",
        default=None,
        help='initial knobs per provider, JSON: {"anthropic": {"latency_median_s": 0.5}}',
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic world")
    parser.add_argument("--providers", default=None, help="comma-separated subset to mount")
    args = parser.parse_args(argv)

    try:
        config = json.loads(args.config) if args.config else {}
        providers = args.providers.split(",") if args.providers else None
        app = build_app(config, providers=providers, world=World(args.seed))
    except (ValueError, TypeError) as exc:  # bad JSON, unknown provider, invalid knob
        parser.error(str(exc))

    console = Console(stderr=True)
    root = f"http://{args.host}:{args.port}"
    console.print(f"[bold]TAM emulators[/] on {root}  (providers: {', '.join(app.emulators)})")
    console.print(f"control: {root}/<provider>/_emulator/(stats|config|reset)")
    for name, value in env_for(root).items():
        print(f"export {name}={value}")  # noqa: T201 - the entrypoint's output
    sys.stdout.flush()
    uvicorn.Server(uvicorn_config(app.asgi, args.host, args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
