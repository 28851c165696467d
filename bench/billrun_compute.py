"""Invoice computation alone (issue 5): gathering an account's cycle charges (`cycle_charges`) + `compute_invoice`,
per account, in-process against PostgreSQL, with the bill-run bench's accounts (bench/billrun.py `seed`).

Usage: .venv/bin/python bench/billrun_compute.py [--accounts 300] [--records-per-account 100] [--db-url URL]
       [--keep] [--profile N] [--repeat 3] [--batch] [--workers N]

Without --db-url a fresh migrated database is created and seeded (dropped afterwards unless --keep, which prints
its URL so later runs can reuse the same rows with --db-url). `--profile N` prints a cProfile of the first N
accounts. Each repeat computes every account in one session and writes nothing; `fingerprint` is a hash of every
PendingCharge (line, keys, usage ids, billed fees) and of each invoice's totals, so two code versions run against
the same database can be compared for identical results. `--batch` also times the set-based
`cycle_charges_many` for all accounts (products and accounts read in one query each; its fingerprint must equal
the per-account one); `batch_cpu_accounts_per_s` counts this process's CPU time only (the rate it would have on
an idle machine, database work aside). `--workers N` (N > 1) also times the batch split over N processes, each
taking a contiguous share of the accounts (`workers_accounts_per_s`, wall clock from start to the last one
done; its fingerprint, over the same accounts in the same order, must equal the others). Final line: one JSON
object with `computation_accounts_per_s` (best of the repeats).
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import multiprocessing
import os
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlmodel import Session, select  # noqa: E402

import billrun  # noqa: E402


def _profile_spec():
    from config.profiles import load_billing_profiles
    from domain.billing_profile import BillingProfile

    profiles = load_billing_profiles()
    return BillingProfile(name=billrun.PROFILE, description="bench: one-day fixed cycle, otherwise standard", cycle_kind="fixed",
                          period_seconds=billrun.PERIOD_S, payment_terms=timedelta(days=14), dunning=profiles["standard"].dunning)


def run_once(engine, catalog, profile, account_ids: list[str], digest=None, profiler=None, profile_n: int = 0) -> float:
    from activities.invoice_charges import cycle_charges
    from domain.billing_cycle import period_containing
    from domain.invoicing import compute_invoice
    from persistence.tables import BillingAccount, Product

    started = time.perf_counter()
    with Session(engine) as session:
        for n, account_id in enumerate(account_ids):
            if profiler is not None and n == 0:
                profiler.enable()
            account = session.get(BillingAccount, account_id)
            spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
            period = period_containing(spec, account.cycle_anchor)
            products = list(session.exec(select(Product).where(Product.billing_account_id == account_id)))
            charges = cycle_charges(session, account_id, products, catalog, spec, period, grace=profile.usage_grace)
            computed = compute_invoice([c.line for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)])
            if profiler is not None and n + 1 == profile_n:
                profiler.disable()
            if digest is not None:
                for c in charges:
                    digest.update(repr((c.line.model_dump(), list(c.charge_keys), c.usage_ids,
                                        [f.model_dump() for f in c.billed_fees], c.vat_exemption)).encode())
                digest.update(repr(computed.model_dump()).encode())
        session.rollback()
    return time.perf_counter() - started


def run_batch(engine, catalog, profile, account_ids: list[str], digest=None, profiler=None) -> float:
    """The same for all accounts at once: `cycle_charges_many` (one query per table per chunk of accounts)."""
    from collections import defaultdict

    from activities.invoice_charges import CycleRequest, cycle_charges_many
    from domain.billing_cycle import period_containing
    from domain.invoicing import compute_invoice
    from persistence.tables import BillingAccount, Product

    started = time.perf_counter()
    with Session(engine) as session:
        if profiler is not None:
            profiler.enable()
        wanted = set(account_ids)
        products = defaultdict(list)
        for product in session.exec(select(Product).where(Product.billing_account_id.in_(account_ids))):
            products[product.billing_account_id].append(product)
        requests = []
        for account in session.exec(select(BillingAccount).where(BillingAccount.id.in_(account_ids))):
            if account.id in wanted:
                spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
                requests.append(CycleRequest(account.id, products[account.id], spec, period_containing(spec, account.cycle_anchor), profile.usage_grace))
        requests.sort(key=lambda r: account_ids.index(r.billing_account_id) if digest is not None else 0)
        by_account = cycle_charges_many(session, requests, catalog)
        for account_id in account_ids:
            charges = by_account[account_id]
            computed = compute_invoice([c.line for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)])
            if digest is not None:
                for c in charges:
                    digest.update(repr((c.line.model_dump(), list(c.charge_keys), c.usage_ids,
                                        [f.model_dump() for f in c.billed_fees], c.vat_exemption)).encode())
                digest.update(repr(computed.model_dump()).encode())
        if profiler is not None:
            profiler.disable()
        session.rollback()
    return time.perf_counter() - started


class _Collected(list):
    """What a worker process hashes, handed back so the parent hashes every account in order (one fingerprint)."""

    def update(self, data: bytes) -> None:
        self.append(data)


_worker_state: dict = {}


def _worker_init(db_url: str) -> None:
    from config.catalog_loader import load_catalog
    from config.settings import Settings
    from persistence.db import engine_for

    _worker_state.update(profile=_profile_spec(), catalog=load_catalog(Settings(database_url=db_url).catalog_path), engine=engine_for(db_url))


def _worker_batch(task: tuple[list[str], bool]) -> list[bytes] | None:
    account_ids, fingerprint = task
    digest = _Collected() if fingerprint else None
    run_batch(_worker_state["engine"], _worker_state["catalog"], _worker_state["profile"], account_ids, digest)
    return digest


def run_workers(pool, account_ids: list[str], workers: int, digest=None) -> float:
    """`run_batch` over `workers` processes (started beforehand), each a contiguous share of the accounts: wall seconds."""
    size = -(-len(account_ids) // workers)
    shares = [account_ids[n:n + size] for n in range(0, len(account_ids), size)]
    started = time.perf_counter()
    results = pool.map(_worker_batch, [(share, digest is not None) for share in shares])
    elapsed = time.perf_counter() - started
    if digest is not None:
        for collected in results:
            for data in collected:
                digest.update(data)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--records-per-account", type=int, default=100)
    parser.add_argument("--db-url", default=None, help="reuse a database seeded by an earlier --keep run")
    parser.add_argument("--pg-admin-url", default=os.environ.get("O2C_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", type=int, default=0, help="cProfile the first N accounts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", action="store_true", help="also measure the set-based cycle_charges_many and compare its fingerprint")
    parser.add_argument("--workers", type=int, default=1, help="with --batch: also time it split over this many processes")
    args = parser.parse_args()

    from config.catalog_loader import load_catalog
    from config.settings import Settings
    from persistence.db import engine_for, migrate

    load_before = billrun.load()
    name = None
    db_url = args.db_url
    if db_url is None:
        name, db_url = billrun.create_database(args.pg_admin_url)
        migrate(db_url)
        anchor = (datetime.now(UTC) - timedelta(seconds=billrun.PERIOD_S)).replace(microsecond=0)
        billrun.seed(db_url, args.accounts, args.records_per_account, anchor)
    try:
        profile = _profile_spec()
        catalog = load_catalog(Settings(database_url=db_url).catalog_path)
        engine = engine_for(db_url)
        from persistence.tables import BillingAccount

        with Session(engine) as session:
            account_ids = sorted(session.exec(select(BillingAccount.id)))[: args.accounts]
        digest = hashlib.sha256()
        profiler = cProfile.Profile() if args.profile else None
        run_once(engine, catalog, profile, account_ids, digest, profiler, args.profile)  # warm-up, fingerprint
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        times = [run_once(engine, catalog, profile, account_ids) for _ in range(args.repeat)]
        best = min(times)
        batch = {}
        if args.batch:
            batch_digest = hashlib.sha256()
            batch_profiler = cProfile.Profile() if args.profile else None
            run_batch(engine, catalog, profile, account_ids, batch_digest, batch_profiler)
            if batch_profiler is not None:
                pstats.Stats(batch_profiler).sort_stats("cumulative").print_stats(45)
            batch_times, batch_cpu = [], []
            for _ in range(args.repeat):
                cpu_before = time.process_time()
                batch_times.append(run_batch(engine, catalog, profile, account_ids))
                batch_cpu.append(time.process_time() - cpu_before)
            batch = {"batch_computation_accounts_per_s": round(len(account_ids) / min(batch_times), 1),
                     "batch_runs_s": [round(t, 3) for t in batch_times], "batch_fingerprint": batch_digest.hexdigest()[:16],
                     "batch_cpu_accounts_per_s": round(len(account_ids) / min(batch_cpu), 1)}
            if args.workers > 1:
                with multiprocessing.get_context("spawn").Pool(args.workers, _worker_init, (db_url,)) as pool:
                    workers_digest = hashlib.sha256()
                    run_workers(pool, account_ids, args.workers, workers_digest)  # warm-up, fingerprint
                    workers_times = [run_workers(pool, account_ids, args.workers) for _ in range(args.repeat)]
                batch.update({"workers": args.workers, "workers_accounts_per_s": round(len(account_ids) / min(workers_times), 1),
                              "workers_runs_s": [round(t, 3) for t in workers_times], "workers_fingerprint": workers_digest.hexdigest()[:16]})
        print(json.dumps({"accounts": len(account_ids), "computation_accounts_per_s": round(len(account_ids) / best, 1),
                          "runs_s": [round(t, 3) for t in times], "fingerprint": digest.hexdigest()[:16], **batch, "db_url": db_url if args.keep or args.db_url else None,
                          "load_before": load_before, "load_after": billrun.load()}))
    finally:
        if name is not None and not args.keep:
            billrun.drop_database(args.pg_admin_url, name)


if __name__ == "__main__":
    main()
