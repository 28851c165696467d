"""`o2c reconcile-oss`: run the OSS reconciliation once (the nightly schedule runs the same workflow) and print its report."""
from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from o2c_cli.process_exit import exit_after_temporal


async def _run(repair: bool) -> dict:
    from activities.service_state import OssReconciliationReport
    from adapters.temporal.client import connect
    from config.settings import get_settings
    from workflows.service_state import OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput

    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    report = await client.execute_workflow(OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput(repair=repair),
                                           id=f"oss-reconciliation-manual-{uuid.uuid4()}", task_queue=settings.task_queue,
                                           result_type=OssReconciliationReport)
    return report.model_dump(mode="json")


def _reconcile(args: argparse.Namespace) -> None:
    report = asyncio.run(_run(not args.report_only))
    print(json.dumps(report, indent=2))
    exit_after_temporal(1 if report["unrepaired"] else 0)


def register(sub) -> None:
    cmd = sub.add_parser("reconcile-oss", help="compare o2c's service state with the OSS once, repair and print the differences")
    cmd.add_argument("--report-only", action="store_true", help="report the differences without repairing them")
    cmd.set_defaults(func=_reconcile)
