"""`o2c hub-dispatcher`: deliver TMF hub events (docs/events.md) as a process of its own, for a
deployment that does not run it inside the worker. Reads O2C_DATABASE_URL and the O2C_HUB_* settings."""
from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("hub-dispatcher", help="POST TMF hub events to the registered listeners (signed, retried, in order)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between looks for due deliveries (default 1)")
    parser.set_defaults(func=_hub_dispatcher)


def _hub_dispatcher(args: argparse.Namespace) -> None:
    import asyncio
    import signal

    from adapters.http.hub_dispatcher import run_hub_dispatcher
    from config.settings import get_settings
    from persistence.db import migrate

    settings = get_settings()
    migrate(settings.database_url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_hub_dispatcher(settings.database_url, stop, interval_s=args.interval)

    asyncio.run(main())
