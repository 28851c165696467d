"""CDR file ingest end to end: generated switch files -> mediation.importer.import_file -> PostgreSQL.

Usage: .venv/bin/python bench/ingest.py [--records 1000000] [--subscribers 20000] [--batch-size N]
       [--slices S] [--now 2026-11-30T12:00:00+00:00] [--pg-admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--keep-files DIR] [--debug]

1. A fresh PostgreSQL database, migrated (persistence.db.migrate), with a subscriber base set up directly:
   `--subscribers` MSISDNs, one product each (85 % mobile-s on tariff de-mobile-2026 with allowances,
   10 % mobile-l, 5 % the retired mobile-legacy), on about 0.8 accounts per product (families share an
   account), bill-cycle days 1-28, Europe/Berlin; 5 % of the accounts have a spending limit (the
   spending-monitor hook runs for them); 1 % of the products ended 10 days ago.
2. N CDR lines written as files, as switches write them: per time slice (the last 28 days cut into
   `--slices`) an Asterisk Master.csv (voice, Berlin wall-clock time, chronological) and a PGW data-record
   CSV (data sessions with 1-3 rating-group containers, opening times with an offset). The mix: 62 %
   voice (85 % answered; German mobile, fixed, 0900, EU, UK, US and world numbers, national and
   extension spellings; every hour, weekdays and weekends), 38 % data (8 % roaming in the EU, 1 % in
   Switzerland); subscribers' activity is skewed, so light users stay inside their allowances and heavy
   ones run past them. Duplicates: 0.2 % of the lines are written twice in a row, and each file repeats
   the last 20 records of the previous file of its kind. About 0.05 % of the lines are malformed, 0.3 %
   come from unknown numbers. (No CDR format o2c reads carries SMS; SMS reach o2c through TMF635.)
3. The files are imported in a separate process, one import_file call per file in time order, exactly
   as `o2c import-cdrs` does (sources ast-fra1 and pgw-fra1); its wall time, CPU time and peak RSS are
   reported. CHECKPOINT before each timed phase so both start with a clean WAL.
4. The COPY floor: the usage_record rows the import produced are read back (COPY TO a file), then
   COPYed in one transaction into a fresh table made with LIKE usage_record INCLUDING ALL (the same
   primary key, the same indexes (4 and a partial one since migration 0015), defaults and constraints);
   `--old-index-floor` also COPYs them into a table with the indexes before 0015. copy_ratio = import time / COPY time.

The final line is one JSON object: records (lines in the files), ingest_per_s (lines per second end to
end), accepted_per_s, copy_per_s (rows per second of the floor), copy_ratio, peak_rss_mb of the import
process, python_cpu_seconds and pg_cpu_seconds (the import process's CPU and its PostgreSQL backends', read
from /proc: steadier than wall time on a shared machine), the Python CPU per line split into parsing (main thread
outside BatchMaker.make), make (guiding, grouping, rating, COPY text) and the writer thread, the counts, and the
load average before and after.
`--debug` logs where each batch's time goes (mediation.bulk at DEBUG) to stderr.
`results_md5` digests what the import stored (usage_record and allowance_counter rows, rejected_usage and
outbox_message by content); with a fixed `--now` (and the same --seed and sizes) the files are the same, so
two versions of the code must print the same digest: a speed-up that changes a stored value shows here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from scratch_db import create_database, drop_database  # noqa: E402 - bench/scratch_db.py

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
PGW_HEADER = ("servedIMSI,servedMSISDN,chargingID,nodeID,recordSequenceNumber,recordOpeningTime,duration,ratingGroup,"
              "datavolumeFBCUplink,datavolumeFBCDownlink,servingNodePLMN,userLocationInformation\n")
# (weight, generator of a dialled number as the switch writes it)
DESTINATIONS = (
    (30, lambda r: f"4915{r.randrange(10**8, 10**9)}"), (10, lambda r: f"4917{r.randrange(10**8, 10**9)}"),
    (6, lambda r: f"4916{r.randrange(10**7, 10**8)}"), (20, lambda r: f"4930{r.randrange(10**6, 10**8)}"),
    (8, lambda r: f"4989{r.randrange(10**6, 10**8)}"), (1, lambda r: f"49900{r.randrange(10**6, 10**7)}"),
    (3, lambda r: f"33{r.randrange(10**8, 10**9)}"), (2, lambda r: f"34{r.randrange(10**8, 10**9)}"),
    (2, lambda r: f"39{r.randrange(10**8, 10**10)}"), (1, lambda r: f"43{r.randrange(10**8, 10**10)}"),
    (3, lambda r: f"44{r.randrange(10**9, 10**10)}"), (3, lambda r: f"1{r.randrange(10**9, 10**10)}"),
    (2, lambda r: f"90{r.randrange(10**9, 10**10)}"), (1, lambda r: f"86{r.randrange(10**9, 10**11)}"),
    (4, lambda r: f"0{r.choice(('151', '171', '30', '40'))}{r.randrange(10**6, 10**8)}"),  # national spelling
    (1, lambda r: f"+4915{r.randrange(10**8, 10**9)}"),
    (1, lambda r: str(r.randrange(1000, 1100))),  # an extension: no E.164 destination
)
ROAMING = (("208-01", 30), ("214-07", 20), ("222-10", 20), ("232-01", 10), ("204-08", 10), ("228-01", 10))


# --- the database ---------------------------------------------------------------------------------


def libpq_url(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://", 1)


def seed(db_url: str, subscribers: int, now: datetime, rng: random.Random) -> list[str]:
    """Customers, accounts and products straight into the tables; returns the MSISDNs."""
    from sqlalchemy import insert

    from persistence.db import engine_for
    from persistence.tables import BillingAccount, Customer, Product

    start = (now - timedelta(days=60)).replace(microsecond=0)
    ended = (now - timedelta(days=10)).replace(microsecond=0)
    customers, accounts, products, msisdns = [], [], [], []
    account_id = None
    for n in range(subscribers):
        if account_id is None or rng.random() < 0.8:  # about 1.25 lines per account
            customer_id = f"bench-customer-{n:07d}"
            account_id = f"bench-account-{n:07d}"
            customers.append(Customer(id=customer_id, name=f"Kunde {n}", email=f"k{n}@example.org", created_at=start).model_dump())
            limited = rng.random() < 0.05
            accounts.append(BillingAccount(id=account_id, customer_id=customer_id, name="Main", timezone="Europe/Berlin",
                                           bill_cycle_day=rng.randrange(1, 29), billing_profile="standard", payment_method="4242424242424242",
                                           created_at=start, spending_limit_cents=2_000 if limited else None,
                                           spending_hard_cap=limited and rng.random() < 0.5).model_dump())
        draw = rng.random()
        offering = "mobile-s" if draw < 0.85 else "mobile-l" if draw < 0.95 else "mobile-legacy"
        version = {"mobile-s": "1", "mobile-l": "1", "mobile-legacy": "3"}[offering]
        msisdn = f"49176{n:08d}"
        terminated = rng.random() < 0.01
        products.append(Product(id=f"bench-product-{n:07d}", customer_id=customers[-1]["id"], billing_account_id=account_id,
                                offering_id=offering, offering_version=version, catalog_version="2026.1", name=offering, msisdn=msisdn,
                                status="terminated" if terminated else "active", order_id=f"bench-order-{n:07d}", order_item_id="1",
                                start_date=start, termination_date=ended if terminated else None, billing_start=start).model_dump())
        msisdns.append(msisdn)
    engine = engine_for(db_url)
    with engine.begin() as conn:
        for table, rows in ((Customer, customers), (BillingAccount, accounts), (Product, products)):
            for offset in range(0, len(rows), 5_000):
                conn.execute(insert(table.__table__), rows[offset:offset + 5_000])  # type: ignore[attr-defined]
    return msisdns


# --- the files ------------------------------------------------------------------------------------


class Clock:
    """Wall-clock text of UTC instants, cached per minute (strftime per line would dominate generation)."""

    def __init__(self, zone: ZoneInfo | None) -> None:
        self.zone = zone
        self.minutes: dict[int, str] = {}

    def text(self, epoch_s: int) -> str:
        minute = epoch_s // 60
        prefix = self.minutes.get(minute)
        if prefix is None:
            moment = datetime.fromtimestamp(minute * 60, UTC)
            if self.zone is not None:
                moment = moment.astimezone(self.zone)
            prefix = self.minutes[minute] = moment.strftime("%Y-%m-%d %H:%M:")
        return f"{prefix}{epoch_s % 60:02d}"


def pick_msisdn(rng: random.Random, msisdns: list[str]) -> str:
    if rng.random() < 0.003:
        return f"49179{rng.randrange(10**7, 10**8)}"  # nobody's number
    return msisdns[int(len(msisdns) * rng.random() ** 2)]  # skewed: low indexes are the heavy users


def asterisk_lines(rng: random.Random, msisdns: list[str], count: int, t0: int, t1: int, seq: list[int], clock: Clock) -> list[str]:
    weights = [w for w, _ in DESTINATIONS]
    makers = [m for _, m in DESTINATIONS]
    lines = []
    for start in sorted(rng.randrange(t0, t1) for _ in range(count)):
        src = pick_msisdn(rng, msisdns)
        dst = rng.choices(makers, weights)[0](rng)
        draw = rng.random()
        disposition = "ANSWERED" if draw < 0.85 else "NO ANSWER" if draw < 0.95 else "BUSY"
        billsec = min(int(rng.expovariate(1 / 95)), 7200) if disposition == "ANSWERED" else 0
        ring = rng.randrange(2, 25)
        start_text = clock.text(start)
        answer = f'"{clock.text(start + ring)}"' if disposition == "ANSWERED" else ""
        end_text = clock.text(start + ring + billsec)
        seq[0] += 1
        uniqueid = f"{start}.{seq[0]}"
        line = (f'"","{src}","{dst}","from-internal","""Kunde"" <{src}>","PJSIP/{src}-0001a2b3","PJSIP/telekom-0001a2b4",'
                f'"Dial","PJSIP/{dst}@telekom,60,tT","{start_text}",{answer},"{end_text}",{billsec + ring},{billsec},'
                f'"{disposition}","DOCUMENTATION","{uniqueid}",""\n')
        lines.append(line)
    return lines


def pgw_lines(rng: random.Random, msisdns: list[str], count: int, t0: int, t1: int, seq: list[int]) -> list[str]:
    lines: list[str] = []
    starts = sorted(rng.randrange(t0, t1) for _ in range(max(1, count // 2)))
    index = 0
    while len(lines) < count:
        start = starts[min(index, len(starts) - 1)]
        index += 1
        msisdn = pick_msisdn(rng, msisdns)
        seq[0] += 1
        charging_id = seq[0] % 2**32
        opening = datetime.fromtimestamp(start, UTC).strftime("%y%m%d%H%M%S+0000")
        duration = rng.randrange(30, 3600)
        draw = rng.random()
        plmn = "262-01"
        if draw < 0.08:
            plmn = rng.choices([p for p, _ in ROAMING[:-1]], [w for _, w in ROAMING[:-1]])[0]
        elif draw < 0.09:
            plmn = "228-01"  # Switzerland: a world zone, priced per MB
        sequence = "" if rng.random() < 0.7 else str(rng.randrange(1, 5))
        for rating_group in rng.sample((10, 20, 30), rng.choice((1, 1, 2, 3))):
            volume = int(math.exp(rng.uniform(math.log(1_000), math.log(200_000_000))))
            up = volume // 10
            lines.append(f"26201{msisdn[-10:]},{msisdn},{charging_id},pgw01.fra.example.net,{sequence},{opening},{duration},"
                         f"{rating_group},{up},{volume - up},{plmn},\n")
    return lines[:count]


def spoil(rng: random.Random, line: str) -> str:
    """A malformed line, as a broken switch or a cut file writes one."""
    kind = rng.randrange(3)
    if kind == 0:
        return line[: len(line) // 2] + "\n"  # cut short: wrong column count or broken quoting
    if kind == 1:
        return line.replace(":", "x", 1) if line.count(":") else line  # a broken timestamp or key
    return line[:-1] + ',"extra"\n'  # a shifted column


def write_files(folder: Path, records: int, slices: int, msisdns: list[str], now: datetime, seed_value: int) -> list[tuple[Path, str, str]]:
    """The CDR files in import order: (path, source, timezone)."""
    rng = random.Random(seed_value)
    end = int((now - timedelta(hours=1)).timestamp())
    begin = end - 28 * 86_400
    voice_total = int(records * 0.62)
    per_slice = [(voice_total * (s + 1) // slices - voice_total * s // slices,
                  (records - voice_total) * (s + 1) // slices - (records - voice_total) * s // slices) for s in range(slices)]
    files: list[tuple[Path, str, str]] = []
    previous: dict[str, list[str]] = {"voice": [], "data": []}
    voice_seq, data_seq = [0], [rng.randrange(10**6)]
    clock = Clock(BERLIN)
    for s, (voice_n, data_n) in enumerate(per_slice):
        t0, t1 = begin + (end - begin) * s // slices, begin + (end - begin) * (s + 1) // slices
        for kind, n in (("voice", voice_n), ("data", data_n)):
            if n <= 0:
                continue
            # Lines written twice in a row, and the previous file's last records at the start: both
            # count against N, so the file has exactly n lines.
            repeats = previous[kind][-20:] if previous[kind] else []
            fresh = n - len(repeats) - n // 500
            fresh_lines = (asterisk_lines(rng, msisdns, fresh, t0, t1, voice_seq, clock) if kind == "voice"
                           else pgw_lines(rng, msisdns, fresh, t0, t1, data_seq))
            doubled = set(rng.sample(range(len(fresh_lines)), n // 500)) if fresh_lines else set()
            lines = list(repeats)
            for index, line in enumerate(fresh_lines):
                lines.append(spoil(rng, line) if rng.random() < 0.0005 else line)
                if index in doubled:
                    lines.append(line)
            previous[kind] = fresh_lines[-20:]
            name = f"{s:03d}-Master.csv" if kind == "voice" else f"{s:03d}-pgw.csv"
            path = folder / name
            with open(path, "w", encoding="utf-8") as handle:
                if kind == "data":
                    handle.write(PGW_HEADER)
                handle.writelines(lines)
            del lines, fresh_lines
            files.append((path, "ast-fra1" if kind == "voice" else "pgw-fra1", "Europe/Berlin" if kind == "voice" else "UTC"))
    return files


# --- the phases -----------------------------------------------------------------------------------


def checkpoint(db_url: str) -> None:
    import psycopg
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run_import_child(db_url: str, files: list[tuple[Path, str, str]], batch_size: int | None, now: datetime, debug: bool,
                     profile: str | None = None) -> dict:
    """The import, in a process of its own, so its peak RSS is its own."""
    spec = {"db_url": db_url, "files": [[str(p), s, tz] for p, s, tz in files], "batch_size": batch_size, "now": now.isoformat(),
            "debug": debug, "profile": profile}
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the import failed (exit {result.returncode}); see above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(spec_text: str) -> None:
    from config.catalog_loader import load_catalog
    from config.profiles import load_billing_profiles
    from config.settings import REPO_ROOT
    from mediation import bulk
    from mediation.importer import _COUNT_FIELDS, Counts, import_file

    spec = json.loads(spec_text)
    if spec.get("debug"):
        import logging
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("mediation.bulk").setLevel(logging.DEBUG)
    catalog = load_catalog(REPO_ROOT / "catalog" / "catalog.yaml")
    profiles = load_billing_profiles()
    options = {"batch_size": spec["batch_size"]} if spec["batch_size"] else {}
    now = datetime.fromisoformat(spec["now"])
    total = Counts()
    # CPU split of the Python side: the main thread parses and runs BatchMaker.make (guide, group,
    # rate, format the COPY text); the writer thread runs the batches' transactions.
    make_cpu = [0.0]
    make = bulk.BatchMaker.make
    profiler = None
    if spec.get("profile"):
        import cProfile
        profiler = cProfile.Profile()

    def timed_make(self, *args, **kwargs):
        cpu_started = time.thread_time()
        if profiler is not None:
            profiler.enable()
        try:
            return make(self, *args, **kwargs)
        finally:
            if profiler is not None:
                profiler.disable()
            make_cpu[0] += time.thread_time() - cpu_started

    bulk.BatchMaker.make = timed_make
    started, cpu_started, main_cpu_started = time.perf_counter(), time.process_time(), time.thread_time()
    for path, source, zone in spec["files"]:
        file_started = time.perf_counter()
        report = import_file(spec["db_url"], path, catalog=catalog, profiles=profiles, source=source, timezone=zone, now=now, **options)
        if report.status != "done":
            raise SystemExit(f"{path}: {report.summary()}")
        total.add(report)
        elapsed = time.perf_counter() - file_started
        print(f"  {os.path.basename(path)}: {report.lines:,} lines in {elapsed:.2f} s ({report.lines / elapsed:,.0f}/s), "
              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    main_cpu = time.thread_time() - main_cpu_started
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lines = max(1, total.lines)
    split = {"python_cpu_us_per_line": round(cpu * 1e6 / lines, 2),
             "parse_cpu_us_per_line": round((main_cpu - make_cpu[0]) * 1e6 / lines, 2),  # reading, parsing, hashing, claims
             "make_cpu_us_per_line": round(make_cpu[0] * 1e6 / lines, 2),  # guide, group, rate, COPY text, snapshot reads
             "writer_cpu_us_per_line": round((cpu - main_cpu) * 1e6 / lines, 2)}  # the writer thread (and any other)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "pg_cpu_seconds": backend_cpu_seconds(spec["db_url"]), **split,
                      "peak_rss_mb": round(peak_kb / 1024, 1), **{name: getattr(total, name) for name in _COUNT_FIELDS}}))


def backend_cpu_seconds(db_url: str) -> float | None:
    """CPU time of the PostgreSQL backends serving this process's connections (still open in the
    engine's pool), read from /proc: what the import cost the server, whatever else ran meanwhile."""
    import psycopg
    with psycopg.connect(libpq_url(db_url)) as conn:
        pids = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                               "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")]
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                values = stat.read().rsplit(")", 1)[1].split()
            total += int(values[11]) + int(values[12])  # utime, stime (fields 14 and 15)
    except OSError:
        return None  # not the same machine, or not allowed
    return round(total / os.sysconf("SC_CLK_TCK"), 2)


# usage_record's indexes before migration 0015 (besides those it kept), for --old-index-floor.
_PRE_0015_INDEXES = ("CREATE INDEX ON {t} (product_id)", "CREATE INDEX ON {t} (period_start)", "CREATE INDEX ON {t} (event_time)",
                     "CREATE INDEX ON {t} (invoice_id)")


def copy_floor(db_url: str, folder: Path, old_indexes: bool = False) -> tuple[float, int, float | None]:
    """Seconds to COPY the usage_record rows the import produced into a fresh table with the same
    indexes and constraints (read back first into a file, so memory stays flat); with `old_indexes`
    also into one with usage_record's indexes before migration 0015 (same run, same rows)."""
    import psycopg
    dump = folder / "usage_record.copy"
    rows = 0
    with psycopg.connect(libpq_url(db_url)) as conn:
        with conn.cursor() as cursor, open(dump, "wb") as out:
            with cursor.copy("COPY usage_record TO STDOUT") as copy:
                for chunk in copy:
                    out.write(chunk)
        rows = conn.execute("SELECT count(*) FROM usage_record").fetchone()[0]  # type: ignore[index]
        conn.execute("CREATE TABLE usage_record_floor (LIKE usage_record INCLUDING ALL)")
        if old_indexes:
            conn.execute("CREATE TABLE usage_record_floor_old (LIKE usage_record INCLUDING ALL)")
            conn.execute("DROP INDEX usage_record_floor_old_invoice_id_idx")  # the partial one: the old index was full
            for statement in _PRE_0015_INDEXES:
                conn.execute(statement.format(t="usage_record_floor_old"))
        conn.commit()

    def timed(table: str) -> float:
        checkpoint(db_url)
        with psycopg.connect(libpq_url(db_url)) as conn:
            started = time.perf_counter()
            with conn.cursor() as cursor, open(dump, "rb") as source:
                with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
            conn.commit()
            return time.perf_counter() - started

    seconds = timed("usage_record_floor")
    old_seconds = timed("usage_record_floor_old") if old_indexes else None
    dump.unlink()
    return seconds, rows, old_seconds


def check_result(db_url: str, counts: dict) -> dict:
    """What the import left: every line accounted for, one row per accepted record, counters, outbox."""
    import psycopg
    with psycopg.connect(libpq_url(db_url)) as conn:
        stored, amount, allowance = conn.execute(
            "SELECT count(*), coalesce(sum(amount_micros), 0), count(*) FILTER (WHERE allowance_units > 0) FROM usage_record").fetchone()  # type: ignore[misc]
        rejected = conn.execute("SELECT count(*) FROM rejected_usage").fetchone()[0]  # type: ignore[index]
        counters = conn.execute("SELECT count(*) FROM allowance_counter").fetchone()[0]  # type: ignore[index]
        outbox = conn.execute("SELECT count(*) FROM outbox_message").fetchone()[0]  # type: ignore[index]
        # What the import stored, as one digest: runs with the same --now and --seed must agree whatever the
        # batch sizes or the code's speed (rejected_usage and outbox rows by content, not by serial id). Each
        # table's rows are hashed one by one and the hashes summed: any row order, and no 1 GB string to build.
        digests = [row[0] for row in conn.execute(" UNION ALL ".join(
            f"SELECT sum(('x' || left(md5({value}), 15))::bit(60)::bigint::numeric)::text FROM {table}" for value, table in (
                ("r::text", "usage_record r"), ("c::text", "allowance_counter c"),
                ("concat_ws('|', record_id, reason_code, reason, payload::text, received_at)", "rejected_usage"),
                ("concat_ws('|', key, topic, payload::text, created_at)", "outbox_message"))))]
        print(f"results digests (usage_record, allowance_counter, rejected_usage, outbox_message): {digests}", file=sys.stderr)
        digest = hashlib.md5("".join(d or "" for d in digests).encode()).hexdigest()
        # The counters' running cost (allowance_counter.usage_micros) must equal the stored usage, summed.
        drift = conn.execute(
            "SELECT count(*) FROM (SELECT product_id, period_start, sum(amount_micros) AS s FROM usage_record GROUP BY 1, 2) u "
            "FULL JOIN allowance_counter c USING (product_id, period_start) "
            "WHERE coalesce(c.usage_micros, 0) <> coalesce(u.s, 0)").fetchone()[0]  # type: ignore[index]
    if drift:
        raise SystemExit(f"allowance_counter.usage_micros differs from the stored usage for {drift} (product, period) pairs")
    lines = counts["lines"]
    parts = sum(counts[n] for n in ("accepted", "duplicates", "not_charged", "rejected_parse", "rejected_window", "rejected_rating"))
    if parts != lines or stored != counts["accepted"] or rejected != counts["rejected_parse"] + counts["rejected_window"] + counts["rejected_rating"]:
        raise SystemExit(f"the import lost track: {counts}, {stored} stored, {rejected} rejected rows")
    return {"stored": stored, "amount_eur": f"{amount / 1_000_000:.2f}", "in_allowance_records": allowance, "counters": counters,
            "outbox_messages": outbox, "results_md5": digest}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, help="import_file batch_size (default: the importer's)")
    parser.add_argument("--slices", type=int, help="time slices (one Asterisk and one PGW file each); default about 250k lines per file")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep-files", metavar="DIR", help="write the files here and keep them (default: a temporary directory)")
    parser.add_argument("--debug", action="store_true", help="log each batch's phases (mediation.bulk at DEBUG) to stderr")
    parser.add_argument("--old-index-floor", action="store_true",
                        help="also COPY the rows into a table with usage_record's indexes before migration 0015 (same run)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile BatchMaker.make in the import and dump the stats here (slows it)")
    parser.add_argument("--now", help="the run's 'now' (ISO, UTC; default the current second): the same --now and --seed give the same "
                        "files and, imported, the same results_md5")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from persistence.db import engine_for, migrate

    slices = args.slices or max(1, min(40, round(args.records / 500_000)))
    now = datetime.fromisoformat(args.now).astimezone(UTC) if args.now else datetime.now(UTC).replace(microsecond=0)
    name, db_url = create_database(args.pg_admin_url, "o2c_bench_ingest")
    folder = Path(args.keep_files) if args.keep_files else Path(tempfile.mkdtemp(prefix="o2c-bench-ingest-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        migrate(db_url)
        rng = random.Random(args.seed)
        msisdns = seed(db_url, args.subscribers, now, rng)
        engine_for(db_url).dispose()
        started = time.perf_counter()
        files = write_files(folder, args.records, slices, msisdns, now, args.seed)
        size_mb = sum(p.stat().st_size for p, _, _ in files) / 1e6
        print(f"wrote {len(files)} files, {args.records:,} lines, {size_mb:.0f} MB in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        checkpoint(db_url)
        load_before = load()
        imported = run_import_child(db_url, files, args.batch_size, now, args.debug, args.profile)
        load_after_import = load()
        result = check_result(db_url, imported)
        copy_seconds, copy_rows, old_copy_seconds = copy_floor(db_url, folder, args.old_index_floor)
        load_after = load()
        seconds = imported["seconds"]
        summary = {
            "records": imported["lines"], "files": len(files), "subscribers": args.subscribers, "batch_size": args.batch_size,
            "seconds": round(seconds, 2), "ingest_per_s": round(imported["lines"] / seconds),
            "accepted_per_s": round(imported["accepted"] / seconds), "ingest_records_per_cpu_s": round(imported["lines"] / imported["cpu_seconds"]),
            "python_cpu_seconds": round(imported["cpu_seconds"], 2), "pg_cpu_seconds": imported["pg_cpu_seconds"],
            **{k: imported[k] for k in ("python_cpu_us_per_line", "parse_cpu_us_per_line", "make_cpu_us_per_line", "writer_cpu_us_per_line")},
            "pg_cpu_us_per_line": round(imported["pg_cpu_seconds"] * 1e6 / imported["lines"], 2) if imported["pg_cpu_seconds"] else None,
            "copy_rows": copy_rows, "copy_seconds": round(copy_seconds, 2), "copy_per_s": round(copy_rows / copy_seconds),
            "copy_ratio": round(seconds / copy_seconds, 3), "peak_rss_mb": imported["peak_rss_mb"],
            **({"copy_pre_0015_indexes_per_s": round(copy_rows / old_copy_seconds)} if old_copy_seconds else {}),
            **{k: imported[k] for k in ("accepted", "duplicates", "not_charged", "rejected_parse", "rejected_window", "rejected_rating")},
            **result, "file_mb": round(size_mb), "load_before": load_before, "load_after_import": load_after_import, "load_after": load_after,
        }
        print(json.dumps(summary))
    finally:
        engine_for(db_url).dispose()
        drop_database(args.pg_admin_url, name)
        if not args.keep_files:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()


if __name__ == "__main__":
    main()
