"""Measures the in-memory rating core: CompiledTariff.rate_batch over N synthetic events.

Usage: .venv/bin/python bench/rating_core.py [--records 1000000] [--subscribers 1000] [--shuffled] [--repeat 3] [--workers 1]

Events are generated before the clock starts (a month of usage per subscriber: voice, SMS and
data, national/international/premium destinations, home/EU/world roaming, unanswered calls,
peak/off-peak/weekend/holiday times, allowances running out part-way). The timed part is what
the ingest path would call: one rate_batch per subscriber, including its sort by event time.
Rows arrive in event-time order by default, as CDR files do; --shuffled makes the sort work.
The first timed run starts with empty memos (cold); the best run is reported, all are listed.
Single process: the rate per wall second and per CPU second of the process (`time.process_time`,
which other jobs on the machine distort far less) are both reported, with the load average.
--ingest-gc rates under the garbage-collector setting the import paths use (services.gc_pause).

--workers N splits the subscribers over N forked processes (rating is per subscriber, so it
parallelises without coordination). Each worker keeps its results and sends back only counts
and totals, as a worker that stored its own results would; that summing pass is inside the
timed window there. The single-process figure is the rating core itself.
Prints one final JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import sys
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.tariff_loader import german_public_holidays, load_tariff_book  # noqa: E402
from domain.rating import Allowances  # noqa: E402
from domain.rating_engine import AllowanceLimits, AllowanceState, CompiledTariff  # noqa: E402
from services.gc_pause import fewer_gc_passes  # noqa: E402

MONTH_START_US = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000  # spans the March DST change
MONTH_US = 31 * 86_400 * 1_000_000

DESTINATIONS = [("4915", 35), ("4917", 25), ("4930", 20), ("49900", 3), ("33", 5), ("43", 4), ("44", 3), ("1", 3), ("7", 2)]
ZONES = [(None, 90), ("FR", 5), ("AT", 2), ("US", 2), ("TH", 1)]
DISPOSITIONS = [("ANSWERED", 85), ("NO ANSWER", 10), ("BUSY", 5)]


def weighted(rng: random.Random, choices: list[tuple]) -> list:
    values, weights = zip(*choices)
    return rng.choices(values, weights, k=1)


def subscriber_rows(rng: random.Random, subscriber: int, count: int) -> list[tuple]:
    rows = []
    dest_values, dest_weights = zip(*DESTINATIONS)
    zone_values, zone_weights = zip(*ZONES)
    disp_values, disp_weights = zip(*DISPOSITIONS)
    starts = sorted(MONTH_START_US + rng.randrange(MONTH_US) for _ in range(count))
    kinds = rng.choices(("voice", "sms", "data"), (50, 20, 30), k=count)
    prefixes = rng.choices(dest_values, dest_weights, k=count)
    zones = rng.choices(zone_values, zone_weights, k=count)
    dispositions = rng.choices(disp_values, disp_weights, k=count)
    for n in range(count):
        kind = kinds[n]
        record_id = f"s{subscriber}-{n}"
        number = prefixes[n] + str(rng.randrange(10_000_000, 99_999_999))
        if kind == "voice":
            seconds = int(rng.expovariate(1 / 120)) if dispositions[n] == "ANSWERED" else 0
            rows.append((starts[n], record_id, kind, seconds, number, zones[n], dispositions[n]))
        elif kind == "sms":
            rows.append((starts[n], record_id, kind, 1, number, zones[n], None))
        else:
            rows.append((starts[n], record_id, kind, int(rng.expovariate(1 / 8_000_000)), None, zones[n], None))
    return rows


_SHARED: dict = {}  # set before forking; workers read it through copy-on-write memory


def _rate_share(share: int) -> tuple[int, int, int, int]:
    """Rate every subscriber whose index % shares == share; (records, micros, split, errors)."""
    compiled, limits, eu_cap, batches, shares = (_SHARED[k] for k in ("compiled", "limits", "eu_cap", "batches", "shares"))
    # Keep every result until the share is done, as the single-process run keeps them all.
    results = [compiled.rate_batch(rows, limits, AllowanceState(), eu_cap) for rows in batches[share::shares]]
    rated = [row for batch in results for row in batch]
    return len(rated), sum(r[4] for r in rated), sum(1 for r in rated if r[8]), sum(1 for r in rated if r[9])


def _timed_single(compiled, limits, eu_cap, batches) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds of this process, rated rows)."""
    results = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    for rows in batches:
        results.append(compiled.rate_batch(rows, limits, AllowanceState(), eu_cap))
    elapsed = time.perf_counter() - started
    return elapsed, time.process_time() - cpu_started, [row for batch in results for row in batch]


def _timed_parallel(pool, shares: int) -> tuple[float, tuple[int, int, int, int]]:
    started = time.perf_counter()
    parts = pool.map(_rate_share, range(shares), chunksize=1)
    elapsed = time.perf_counter() - started
    return elapsed, tuple(sum(p[i] for p in parts) for i in range(4))  # type: ignore[return-value]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--shuffled", action="store_true", help="rows in random order within each subscriber")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported, all are listed")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="forked processes, each rating a share of the subscribers")
    parser.add_argument("--ingest-gc", action="store_true",
                        help="rate under services.gc_pause.fewer_gc_passes, as the CDR file import and the TMF635 POST do")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    per_subscriber = max(1, args.records // args.subscribers)
    batches = [subscriber_rows(rng, s, per_subscriber) for s in range(args.subscribers)]
    if args.shuffled:
        for rows in batches:
            rng.shuffle(rows)
    records = sum(len(rows) for rows in batches)

    tariff = load_tariff_book().get("de-mobile-2026", "1")
    compiled = CompiledTariff(tariff, german_public_holidays([2026]))
    limits = AllowanceLimits.from_allowances(Allowances(voice_minutes=100, sms=100, data_mb=5000))  # Mobile S
    fair_use = next(z.fair_use for z in tariff.roaming.zones if z.fair_use is not None)
    eu_cap = fair_use.data_cap_bytes(Decimal("9.99"))  # Mobile S, net

    timings: list[float] = []
    cpu_timings: list[float] = []  # process CPU time: what the rating costs whatever else runs on the machine
    load_before = os.getloadavg()[0]
    if args.workers == 1:
        with fewer_gc_passes() if args.ingest_gc else contextlib.nullcontext():
            for _ in range(args.repeat):
                elapsed, cpu, rated = _timed_single(compiled, limits, eu_cap, batches)
                timings.append(elapsed)
                cpu_timings.append(cpu)
        totals = (len(rated), sum(row[4] for row in rated), sum(1 for row in rated if row[8]), sum(1 for row in rated if row[9]))
    else:
        shares = args.workers * 8  # small shares so an idle worker picks up the next one
        _SHARED.update(compiled=compiled, limits=limits, eu_cap=eu_cap, batches=batches, shares=shares)
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            for _ in range(args.repeat):
                elapsed, totals = _timed_parallel(pool, shares)
                timings.append(elapsed)
    assert totals[0] == records
    best = min(timings)
    cpu_best = min(cpu_timings) if cpu_timings else None
    print(json.dumps({
        "records": records,
        "subscribers": args.subscribers,
        "shuffled": args.shuffled,
        "rating_core_records_per_s": round(records / best),
        "seconds_best": round(best, 3),
        "seconds_all": [round(t, 3) for t in timings],
        # Single process only: records per CPU second of the rating process (load does not distort it).
        "rating_core_records_per_cpu_s": round(records / cpu_best) if cpu_best else None,
        "cpu_us_per_record_best": round(cpu_best * 1e6 / records, 3) if cpu_best else None,
        "cpu_seconds_all": [round(t, 3) for t in cpu_timings],
        "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "workers": args.workers,
        "ingest_gc": args.ingest_gc,
        "cold_first_run_records_per_s": round(records / timings[0]),
        "split_records": totals[2],
        "error_records": totals[3],
        "total_amount_eur": str(Decimal(totals[1]).scaleb(-6)),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": _cpu_model(),
        "date": date.today().isoformat(),
    }))


if __name__ == "__main__":
    main()
