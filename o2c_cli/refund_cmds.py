"""`o2c poll-refunds`: re-read the pending gateway refunds once (the hourly schedule runs the same workflow) and print its report."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from o2c_cli.process_exit import exit_after_temporal


async def _run(pending_for_min: float) -> dict:
    from activities.refund_poll import RefundPollReport
    from adapters.temporal.client import connect
    from config.settings import get_settings
    from workflows.refund_poll import REFUND_POLL_WORKFLOW, RefundPollInput

    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    report = await client.execute_workflow(REFUND_POLL_WORKFLOW, RefundPollInput(pending_for_s=pending_for_min * 60),
                                           id=f"refund-poll-manual-{uuid.uuid4()}", task_queue=settings.task_queue,
                                           result_type=RefundPollReport)
    return report.model_dump(mode="json")


def _poll(args: argparse.Namespace) -> None:
    if args.pending_for_min < 0:
        sys.exit("--pending-for-min must not be negative")
    report = asyncio.run(_run(args.pending_for_min))
    print(json.dumps(report, indent=2))
    exit_after_temporal(1 if report["errors"] else 0)


def register(sub) -> None:
    cmd = sub.add_parser("poll-refunds", help="ask the payment gateway once where every pending refund stands and apply it")
    cmd.add_argument("--pending-for-min", type=float, default=0.0,
                     help="only refunds pending longer than this many minutes (default 0: all; the hourly schedule uses 30)")
    cmd.set_defaults(func=_poll)
