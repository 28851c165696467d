"""`o2c import-cdrs FILE...` and `o2c mediate --watch DIR`: CDR files into rated usage.

Both read the database, catalog and billing profiles from the usual O2C_* settings and bring the
schema up to date first, like the API and the worker do.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

# Only the light parts of mediation at import time: every `o2c` command builds this parser, and the
# importer pulls in the database layer (over half a second).
from mediation.detect import FORMATS


def register(subparsers: Any) -> None:
    """Add the mediation commands to the `o2c` parser's sub-commands."""
    imports = subparsers.add_parser("import-cdrs", help="import CDR files (Asterisk, FreeSWITCH, PGW) once each: rate, de-duplicate, keep rejects")
    imports.add_argument("files", nargs="+", metavar="FILE")
    _import_options(imports)
    imports.set_defaults(func=_import_cdrs)

    mediate = subparsers.add_parser("mediate", help="watch a directory and import CDR files as switches drop them")
    mediate.add_argument("--watch", required=True, metavar="DIR", help="the drop directory; files move to DIR/done or DIR/failed")
    mediate.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between looks at DIR (default 1)")
    mediate.add_argument("--settle", type=float, default=2.0, metavar="S",
                         help="a file is complete when its size and mtime have not changed for S seconds (default 2)")
    mediate.add_argument("--once", action="store_true", help="import what is complete now, then exit")
    _import_options(mediate)
    mediate.set_defaults(func=_mediate)


def _import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="the CDR format (default: detected per file)")
    parser.add_argument("--source", help="the switch's name; record ids are stored as SOURCE:KEY (default: the format name)")
    parser.add_argument("--timezone", default="UTC", help="IANA zone the switch writes local times in (default UTC)")
    parser.add_argument("--country-code", default="49", help="country code for national numbers (default 49)")
    parser.add_argument("--max-age-days", type=int, help="reject events older than this many days as out_of_window (default 90)")
    parser.add_argument("--batch-size", type=int, help="lines per transaction (default 100000, at most 200000)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """import_file's keyword arguments; options left out keep the importer's defaults."""
    from mediation.importer import check_import_options

    options = {"fmt": args.format, "source": args.source, "timezone": args.timezone, "country_code": args.country_code}
    options |= {name: value for name, value in (("max_age_days", args.max_age_days), ("batch_size", args.batch_size)) if value is not None}
    try:
        check_import_options(**options)
    except ValueError as exc:
        sys.exit(f"o2c: {exc}")
    return options


def _setup() -> tuple[str, Any, Any]:
    from config.catalog_loader import load_catalog
    from config.profiles import load_billing_profiles
    from config.settings import get_settings
    from persistence.db import migrate

    settings = get_settings()
    migrate(settings.database_url)
    return settings.database_url, load_catalog(settings.catalog_path), load_billing_profiles()


def _import_cdrs(args: argparse.Namespace) -> None:
    from mediation.importer import Counts, import_file

    options = _options(args)
    db_url, catalog, profiles = _setup()
    total = Counts()
    failed = 0
    for path in args.files:
        report = import_file(db_url, path, catalog=catalog, profiles=profiles, **options)
        print(report.summary(), flush=True)
        total.add(report)
        if report.status == "failed":
            failed += 1
    print(f"total: {len(args.files)} files ({failed} failed), {total.lines} lines: {total.accepted} accepted, "
          f"{total.duplicates} duplicates, {total.not_charged} not charged, {total.rejected} rejected", flush=True)
    sys.exit(1 if failed else 0)


def _mediate(args: argparse.Namespace) -> None:
    from mediation.watch import WatchedFile, watch

    options = _options(args)
    db_url, catalog, profiles = _setup()
    failed = 0

    def report(item: WatchedFile) -> None:
        nonlocal failed
        if item.report is None or item.report.status == "failed":
            failed += 1
        print(item.report.summary() if item.report else f"{item.name}: not imported (see the log); left in place to retry", flush=True)

    stop = threading.Event()
    if not args.once and threading.current_thread() is threading.main_thread():
        # Finish the file at hand, then stop. A file cut off mid-way would resume on the next run anyway.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"watching {args.watch} (imported files move to done/, unreadable ones to failed/)", flush=True)
    try:
        watch(db_url, args.watch, catalog=catalog, profiles=profiles, poll_s=args.poll, settle_s=args.settle, once=args.once,
              stop=stop, on_file=report, **options)
    except NotADirectoryError as exc:
        sys.exit(f"o2c: {exc}")
    # A failed file is handled (it is in failed/ with its reason); the exit code tells a cron job about it.
    sys.exit(1 if args.once and failed else 0)
