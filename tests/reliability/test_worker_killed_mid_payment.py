"""Kill the worker in the middle of a payment activity and start a fresh one: the customer is charged exactly
once, checked against the gateway's own record of charges (issue 6).

Everything is a real, separate OS process: the Temporal dev server, the fake Stripe server speaking Stripe's
wire format (so its ledger outlives the worker) and the o2c worker (worker.build_activities: the real
charge_invoice, StripeGateway and database). The fake holds the PaymentIntent create while the test SIGKILLs
the worker, in both windows that matter:

- `before`: the request reached the gateway and nothing is committed yet; the gateway runs it after the worker
  died (the answer is lost);
- `after`: the gateway committed the charge and the worker dies before it has the answer or recorded anything.

Temporal retries the activity on the fresh worker once its start-to-close timeout passes; the retry sends the
same idempotency key (invoice + attempt), the gateway replays the first result, and the invoice ends settled
with one succeeded PaymentIntent and one payment row.

The workflow is tests/reliability/charge_probe.py (the billing workflow's charge + allocation steps with a 4 s
activity timeout): with BillingAccountWorkflow's 60 s the same recovery takes a minute per kill."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import httpx
import pytest
from sqlmodel import select
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.payments import charge_idempotency_key
from persistence.db import session_scope
from persistence.tables import BillingAccount, Customer, Invoice, Payment
from tests.fakes.stripe_server import DEFAULT_API_KEY
from workflows.messages import SEARCH_ATTRIBUTES

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROBE_WORKFLOW = "ChargeProbeWorkflow"  # tests/reliability/charge_probe.py


def wait_until(check, timeout_s: float, what: str, processes: list[subprocess.Popen] = ()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: {process.args} exited with {process.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


@pytest.fixture(scope="module")
def stripe_url(tmp_path_factory) -> Iterator[str]:
    log = open(tmp_path_factory.mktemp("stripe") / "stripe.log", "wb")
    process = subprocess.Popen([sys.executable, str(HERE / "stripe_process.py")], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                               start_new_session=True)
    try:
        url = process.stdout.readline().decode().strip()
        assert url.startswith("http://"), f"the fake Stripe process did not start (see {log.name})"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
async def temporal(temporal_cli) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


def stripe_state(url: str) -> dict:
    return httpx.get(f"{url}/__control/state", timeout=5).json()


def insert_account_and_invoice(db_url: str, gross_cents: int = 2379) -> tuple[str, str]:
    customer_id, account_id, invoice_id = (str(uuid.uuid4()) for _ in range(3))
    utc = lambda *a: datetime(*a, tzinfo=timezone.utc)  # noqa: E731
    with session_scope(db_url) as session:
        session.add(Customer(id=customer_id, name="Kill Kunde", email="kill@example.org", created_at=utc(2026, 1, 1)))
        session.flush()
        session.add(BillingAccount(id=account_id, customer_id=customer_id, name="Kill", payment_method="4242424242424242", created_at=utc(2026, 1, 1)))
        session.flush()
        session.add(Invoice(
            id=invoice_id, number=f"K-2026-{uuid.uuid4().hex[:8]}", billing_account_id=account_id, customer_id=customer_id, state="sent",
            period_start=utc(2026, 1, 31, 23), period_end=utc(2026, 2, 28, 23), local_period_start=date(2026, 2, 1),
            local_period_end=date(2026, 3, 1), issued_at=utc(2026, 3, 1, 6), due_at=utc(2026, 3, 15, 6),
            net_cents=gross_cents - 380, vat_cents=380, gross_cents=gross_cents, lines=[], vat_breakdown=[],
        ))
    return account_id, invoice_id


async def test_a_worker_killed_mid_charge_charges_exactly_once(db_url, temporal, stripe_url, tmp_path) -> None:
    queue = f"o2c-kill-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, O2C_DATABASE_URL=db_url, O2C_TASK_QUEUE=queue, O2C_TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
               O2C_STRIPE_API_KEY=DEFAULT_API_KEY, O2C_STRIPE_API_BASE=stripe_url, PYTHONPATH=str(REPO))
    workers: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(workers)}.log", "wb")
        workers.append(subprocess.Popen([sys.executable, str(HERE / "worker_process.py")], cwd=REPO, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True))
        return workers[-1]

    start_worker()
    try:
        for phase in ("before", "after"):
            account_id, invoice_id = insert_account_and_invoice(db_url)
            key = charge_idempotency_key(invoice_id, 1)
            httpx.post(f"{stripe_url}/__control/hold", json={"phase": phase, "seconds": 30}, timeout=5).raise_for_status()
            handle = await temporal.client.start_workflow(PROBE_WORKFLOW, args=[invoice_id, account_id], id=f"kill-{invoice_id}", task_queue=queue)

            # The charge is in flight at the gateway (received, or committed and unanswered): kill the worker now.
            victim = workers[-1]
            flag = "arrived" if phase == "before" else "committed"
            wait_until(lambda: stripe_state(stripe_url)[flag], 60, f"the charge reaching the gateway ({phase})", [victim])
            victim.kill()
            assert victim.wait(timeout=10) == -9
            with session_scope(db_url) as session:  # the dead worker recorded nothing
                assert session.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all() == []
            httpx.post(f"{stripe_url}/__control/release", timeout=5).raise_for_status()  # `before`: the gateway runs it now, for nobody

            start_worker()
            result = await asyncio.wait_for(handle.result(), timeout=60)

            assert result["status"] == "succeeded" and result["paymentId"] == key, phase
            state = stripe_state(stripe_url)
            intents = [i for i in state["intents"] if i["metadata"].get("invoice_id") == invoice_id]
            assert [(i["status"], i["amount"], i["metadata"]["idempotency_key"]) for i in intents] == [("succeeded", 2379, key)], phase
            sent = [c for c in state["charges"] if c["idempotencyKey"] == key]
            assert len(sent) >= 2, f"{phase}: the retried activity never reached the gateway: {sent}"
            assert [c["replayed"] for c in sent] == [False] + [True] * (len(sent) - 1), phase  # the retry replayed the first result
            with session_scope(db_url) as session:
                payments = session.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()
                assert [(p.id, p.status, p.amount_cents, p.gateway_payment_id) for p in payments] == [(key, "succeeded", 2379, intents[0]["id"])], phase
                invoice = session.get(Invoice, invoice_id)
                assert (invoice.state, invoice.paid_cents) == ("settled", 2379), phase
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
