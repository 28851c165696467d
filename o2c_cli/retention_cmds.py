"""`o2c erase-traffic-data`: erase the traffic data past its retention once, straight in the database (the
nightly schedule runs the same service through Temporal), and print what was erased."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone


def _erase(args: argparse.Namespace) -> None:
    from config.settings import get_settings
    from persistence.db import migrate
    from services.traffic_retention import erase_expired_traffic_data

    settings = get_settings()
    migrate(settings.database_url)
    report = erase_expired_traffic_data(settings.database_url, datetime.now(timezone.utc), dry_run=args.dry_run)
    if not args.dry_run:
        from activities.traffic_retention import record_run_event
        from services.query import in_transaction

        if report.usage_records_erased or report.rejected_lines_erased or report.held_accounts:
            in_transaction(settings.database_url, record_run_event, report)
    print(json.dumps(report.model_dump(mode="json"), indent=2))


def register(sub) -> None:
    cmd = sub.add_parser("erase-traffic-data",
                         help="erase called numbers, roaming countries and exact times of usage billed six months ago or more, "
                              "and the source lines of rejected records received six months ago or more")
    cmd.add_argument("--dry-run", action="store_true", help="only count what would be erased")
    cmd.set_defaults(func=_erase)
