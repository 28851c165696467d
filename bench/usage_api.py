"""TMF635 usage ingestion through the API, in-process: POSTs batches of TMF635 records to the o2c app
(httpx ASGITransport, no network) on a fresh PostgreSQL database, and measures records per second.

Usage: .venv/bin/python bench/usage_api.py [--records 50000] [--batch 10000] [--subscribers 1000]
       [--pg-admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
The mix: 60% voice (German mobile, fixed and EU numbers, all hours), 25% data (10% roaming in the
EU), 15% SMS, over February 2026, for mobile-s subscribers (tariff de-mobile-2026). Request bodies
are encoded before the clock starts; the time is the API's: parse, de-duplicate, guide, rate, store.
Prints one line per batch, then one final JSON line: {"records": N, "api_records_per_s": ...}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app  # noqa: E402
from config.settings import Settings  # noqa: E402
from scratch_db import create_database, drop_database  # noqa: E402 - bench/scratch_db.py
from persistence.db import engine_for, session_scope  # noqa: E402
from persistence.tables import BillingAccount, Customer, Product  # noqa: E402

USAGE = "/tmf-api/usageManagement/v4/usage"
PERIOD_START = datetime(2026, 2, 1, tzinfo=timezone.utc)
DESTINATIONS = ["+4915112345678", "+4917612345678", "+493012345678", "+33123456789", "+4916098765432"]


def seed_subscribers(db_url: str, count: int) -> list[str]:
    """One customer and account, `count` mobile-s products active since January; their MSISDNs."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    msisdns = [f"49170{n:08d}" for n in range(count)]
    with session_scope(db_url) as session:
        session.add(Customer(id="bench-customer", name="Bench", created_at=now))
        session.flush()  # no ORM relationship orders these inserts
        session.add(BillingAccount(id="bench-account", customer_id="bench-customer", name="Bench", created_at=now))
        session.flush()
        session.add_all(Product(id=f"bench-product-{n}", customer_id="bench-customer", billing_account_id="bench-account",
                                offering_id="mobile-s", offering_version="1", catalog_version="2026.1", name="mobile-s", msisdn=m,
                                status="active", order_id="bench-order", order_item_id=str(n), start_date=now, billing_start=now)
                        for n, m in enumerate(msisdns))
    return msisdns


def usage_record(rng: random.Random, msisdn: str, n: int) -> dict:
    when = PERIOD_START + timedelta(seconds=rng.randrange(27 * 86_400))
    characteristics = [{"name": "msisdn", "value": f"+{msisdn}"}]
    draw = rng.random()
    if draw < 0.60:
        kind = "voice"
        characteristics += [{"name": "duration", "value": rng.randrange(1, 600)}, {"name": "destination", "value": rng.choice(DESTINATIONS)}]
    elif draw < 0.85:
        kind = "data"
        characteristics.append({"name": "volume", "value": rng.randrange(1_000, 50_000_000)})
        if rng.random() < 0.10:
            characteristics.append({"name": "roamingCountry", "value": rng.choice(["FR", "ES", "IT", "AT"])})
    else:
        kind = "sms"
        characteristics.append({"name": "destination", "value": rng.choice(DESTINATIONS)})
    return {"id": f"bench-{n}", "usageType": kind, "usageDate": when.isoformat(), "usageCharacteristic": characteristics}


async def run(db_url: str, records: int, batch: int, subscribers: int) -> tuple[float, float]:
    app = create_app(Settings(database_url=db_url))
    msisdns = seed_subscribers(db_url, subscribers)
    rng = random.Random(7)
    bodies = []
    for start in range(0, records, batch):
        body = [usage_record(rng, rng.choice(msisdns), n) for n in range(start, min(records, start + batch))]
        bodies.append((len(body), json.dumps(body).encode()))
    headers = {"X-API-Key": "dev-crm-key", "Content-Type": "application/json"}
    total = cpu = 0.0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o2c.bench", timeout=600) as client:
        for size, content in bodies:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = await client.post(USAGE, content=content, headers=headers)
            elapsed = time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            response.raise_for_status()
            summary = response.json()
            if summary["accepted"] != size:
                raise SystemExit(f"expected {size} accepted, got {summary['accepted']} (rejected {summary['rejected']}): "
                                 f"{[r for r in summary['results'] if r['status'] == 'rejected'][:3]}")
            total += elapsed
            print(f"batch of {size}: {elapsed:.2f} s, {size / elapsed:,.0f} records/s", flush=True)
    return total, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    name, db_url = create_database(args.pg_admin_url)
    load_before = os.getloadavg()[0]
    try:
        elapsed, cpu = asyncio.run(run(db_url, args.records, args.batch, args.subscribers))
    finally:
        engine_for(db_url).dispose()
        drop_database(args.pg_admin_url, name)
    print(json.dumps({"records": args.records, "batch": args.batch, "seconds": round(elapsed, 3),
                      "api_records_per_s": round(args.records / elapsed),
                      # the API process's CPU per record (steadier than wall time on a shared machine); PostgreSQL's is not included
                      "python_cpu_us_per_record": round(cpu * 1e6 / args.records, 1),
                      "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
