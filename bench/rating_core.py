"""Measures the in-memory rating core: CompiledTariff.rate_batch over N synthetic events.

Usage: .venv/bin/python bench/rating_core.py [--records 1000000] [--subscribers 1000] [--shuffled] [--repeat 3]

Events are generated before the clock starts (a month of usage per subscriber: voice, SMS and
data, national/international/premium destinations, home/EU/world roaming, unanswered calls,
peak/off-peak/weekend/holiday times, allowances running out part-way). The timed part is what
the ingest path would call: one rate_batch per subscriber, including its sort by event time.
Rows arrive in event-time order by default, as CDR files do; --shuffled makes the sort work.
Prints one final JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.tariff_loader import german_public_holidays, load_tariff_book  # noqa: E402
from domain.rating import Allowances  # noqa: E402
from domain.rating_engine import AllowanceLimits, AllowanceState, CompiledTariff  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--shuffled", action="store_true", help="rows in random order within each subscriber")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported, all are listed")
    parser.add_argument("--seed", type=int, default=4)
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
    eu_cap = tariff.roaming.zones[0].fair_use.data_cap_bytes(__import__("decimal").Decimal("9.99"))  # type: ignore[union-attr]

    timings = []
    for _ in range(args.repeat):
        results = []
        started = time.perf_counter()
        for rows in batches:
            results.append(compiled.rate_batch(rows, limits, AllowanceState(), eu_cap))
        timings.append(time.perf_counter() - started)

    rated = [row for batch in results for row in batch]
    split = sum(1 for row in rated if row[8])
    errors = sum(1 for row in rated if row[9])
    total_micros = sum(row[4] for row in rated)
    best = min(timings)
    print(json.dumps({
        "records": records,
        "subscribers": args.subscribers,
        "shuffled": args.shuffled,
        "rating_core_records_per_s": round(records / best),
        "seconds_best": round(best, 3),
        "seconds_all": [round(t, 3) for t in timings],
        "split_records": split,
        "error_records": errors,
        "total_amount_eur": str(__import__("decimal").Decimal(total_micros).scaleb(-6)),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": date.today().isoformat(),
    }))


if __name__ == "__main__":
    main()
