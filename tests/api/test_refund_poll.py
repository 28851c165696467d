"""The hourly refund poll (workflows.refund_poll) on both databases with a real Temporal dev server and a worker
that runs only it: pending gateway refunds are re-read through the gateway and moved forward with the webhook's
rule; a failed one puts the money back. With the sandbox (no webhooks at all) and with the real Stripe SDK
against the fake Stripe over HTTP."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlmodel import select
from temporalio.client import Client
from temporalio.worker import Worker

from activities.refund_poll import RefundPollActivities, RefundPollReport
from adapters.payments import SandboxGateway, StripeGateway
from adapters.payments.port import PaymentGateway
from adapters.temporal.client import WorkflowGateway
from adapters.temporal.schedules import ensure_refund_poll_schedule
from api.app import create_app
from persistence.db import session_scope
from persistence.tables import BusinessEvent
from tests.api.conftest import FINANCE, TASK_QUEUE, api_settings, client_for, make_account, signals_received
from tests.api.test_refund_dispute_webhooks import paid_bill
from tests.api.test_stripe_webhooks import deliver, event_of, stripe_settings
from tests.fakes.stripe_server import FakeStripeServer
from tests.support.refunds import bill, insert_bill, insert_payment, refund_events, refund_row, results_for
from worker import activities_of
from workflows.refund_poll import REFUND_POLL_SCHEDULE_ID, REFUND_POLL_WORKFLOW, RefundPollInput, RefundPollWorkflow

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"
GOOD_IBAN = "sepa:DE89370400440532013000"
SETTLE_S = 60.0  # the sandbox's SEPA settle delay in these tests, on a clock the test moves


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refund_body(account: dict, payment_id: str, value: str) -> dict:
    return {"account": {"id": account["id"]}, "payment": {"id": payment_id}, "totalAmount": {"unit": "EUR", "value": value},
            "reason": "customer cancelled within the withdrawal period"}


async def post_refund(http: httpx.AsyncClient, account: dict, payment_id: str, value: str) -> dict:
    response = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                               json=refund_body(account, payment_id, value))
    assert response.status_code == 201, response.text
    return response.json()


@asynccontextmanager
async def poll_worker(client: Client, db_url: str, gateway: PaymentGateway) -> AsyncIterator[str]:
    """A worker that runs the refund poll only, on its own task queue (the API tests' queue has none)."""
    queue = f"refund-poll-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(client, task_queue=queue, workflows=[RefundPollWorkflow],
                          activities=activities_of(RefundPollActivities(db_url, gateway)), activity_executor=executor):
            yield queue


async def poll(client: Client, queue: str, account: dict, *, pending_for_s: float = 0, as_of: datetime | None = None) -> RefundPollReport:
    # Scoped to the test's account: the database is shared with other tests' refunds.
    return await client.execute_workflow(REFUND_POLL_WORKFLOW, RefundPollInput(as_of=as_of, pending_for_s=pending_for_s,
                                                                               billing_account_ids=[account["id"]]),
                                         id=f"refund-poll-{uuid.uuid4()}", task_queue=queue, result_type=RefundPollReport)


def poll_events(db_url: str, as_of: datetime) -> list[BusinessEvent]:
    with session_scope(db_url) as session:
        return list(session.exec(select(BusinessEvent).where(BusinessEvent.kind == "refund_poll.checked", BusinessEvent.at == as_of)))


def counts(report: RefundPollReport) -> tuple[int, int, int, int, int, list[str]]:
    return report.checked, report.succeeded, report.returned, report.still_pending, report.unanswered, report.errors


# --- the sandbox: no webhooks, the poll is the only way a SEPA refund moves ---------------------------------


@pytest.fixture
async def sandbox_api(db_url, temporal_env) -> AsyncIterator[tuple[httpx.AsyncClient, SandboxGateway, Clock]]:
    """The app with the sandbox (no Stripe key); its sandbox runs on a clock the test moves."""
    settings = api_settings(db_url, sepa_settle_delay_s=SETTLE_S)
    app = create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    clock = Clock()
    sandbox = SandboxGateway(sepa_settle_delay_s=SETTLE_S, clock=clock)
    # The app builds its one gateway on first use under this key (api.deps.payment_gateway): this one is used.
    app.state.payment_gateway = ((settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s), sandbox)
    async with client_for(app) as http:
        yield http, sandbox, clock


async def test_the_poll_settles_a_sandbox_refund_and_puts_a_failed_one_back(db_url, sandbox_api, temporal_client) -> None:
    http, sandbox, clock = sandbox_api
    account = await make_account(http)
    workflow_id = f"billing-account-{account['id']}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)  # no worker: history only
    invoice_id = insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    settles = await post_refund(http, account, payment_id, "10.00")
    returns = await post_refund(http, account, payment_id, "5.00")
    assert (settles["status"], returns["status"]) == ("pending", "pending")
    assert bill(db_url, invoice_id).paid_cents == 879
    assert sandbox.refunds_created == 2  # the API's sandbox: the poll reads the same one here

    async with poll_worker(temporal_client, db_url, sandbox) as queue:
        # Younger than the poll's threshold: left to webhooks, nothing re-read, no report written.
        young = datetime.now(timezone.utc)
        report = await poll(temporal_client, queue, account, pending_for_s=3600, as_of=young)
        assert counts(report) == (0, 0, 0, 0, 0, [])
        assert poll_events(db_url, young) == []

        # The bank sends one back; the other is still travelling (the settle delay has not passed).
        sandbox.fail_refund(returns["gatewayRefundId"])
        first = await poll(temporal_client, queue, account)
        assert counts(first) == (2, 0, 1, 1, 0, [])
        row = refund_row(db_url, returns["id"])
        assert (row.status, row.reversed, row.failure_reason) == ("failed", False, "lost_or_stolen_card")
        assert refund_row(db_url, settles["id"]).status == "pending"
        assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)  # 5.00 back on the bill
        assert [p["status"] for p in results_for(db_url, payment_id)] == ["reversed", "reversed", "restored"]
        signals = [p[0] for name, p in await signals_received(temporal_client, workflow_id) if name == "payment_received"]
        assert signals[-1] == {"payment_id": payment_id, "amount_cents": 0, "source": "refund"}
        [event] = poll_events(db_url, first.as_of)
        assert (event.data["checked"], event.data["returned"], event.data["still_pending"]) == (2, 1, 1)

        clock.now += SETTLE_S  # the bank has paid it out
        second = await poll(temporal_client, queue, account)
        assert counts(second) == (1, 1, 0, 0, 0, [])  # the failed one is final: not asked again
        assert refund_row(db_url, settles["id"]).status == "succeeded"
        assert refund_events(db_url, settles["id"]) == [("RefundCreateEvent", "pending"), ("RefundStateChangeEvent", "succeeded")]
        assert refund_events(db_url, returns["id"]) == [("RefundCreateEvent", "pending"), ("RefundStateChangeEvent", "failed")]
        assert counts(await poll(temporal_client, queue, account)) == (0, 0, 0, 0, 0, [])
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)
    assert sandbox.refunds_created == 2  # re-read, never refunded again


async def test_a_worker_sandbox_that_never_saw_the_refund_makes_it_again_under_its_key(db_url, sandbox_api, temporal_client) -> None:
    """The API and the worker are separate processes, each with its own in-memory sandbox: the worker's does not
    know the API's refund, makes it again under the same idempotency key (the same id) and reads it."""
    http, _sandbox, _clock = sandbox_api
    account = await make_account(http)
    invoice_id = insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    made = await post_refund(http, account, payment_id, "23.79")
    worker_sandbox = SandboxGateway(sepa_settle_delay_s=0)
    async with poll_worker(temporal_client, db_url, worker_sandbox) as queue:
        report = await poll(temporal_client, queue, account)
    assert counts(report) == (1, 1, 0, 0, 0, [])
    row = refund_row(db_url, made["id"])
    assert (row.status, row.gateway_refund_id, row.reversed) == ("succeeded", made["gatewayRefundId"], True)
    assert worker_sandbox.refunds_created == 1
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)


# --- Stripe: the real SDK over HTTP against the fake Stripe; the poll catches what webhooks missed ------------


@pytest.fixture(scope="module")
async def stripe_http(db_url, temporal_env, stripe_server) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stripe_settings(db_url, stripe_server), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    async with client_for(app) as http:
        yield http


@pytest.fixture
def stripe_gateway(fake_stripe) -> StripeGateway:
    return StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=0)


async def test_the_poll_reads_stripe_refunds_whose_webhooks_were_lost(db_url, stripe_http, fake_stripe, stripe_gateway, temporal_client,
                                                                     unused_tcp_port) -> None:
    account, invoice_id, payment_id, _pi = await paid_bill(stripe_http, db_url, stripe_gateway, fake_stripe, GOOD_IBAN)
    ok = await post_refund(stripe_http, account, payment_id, "10.00")
    bad = await post_refund(stripe_http, account, payment_id, "5.00")
    assert (ok["status"], bad["status"]) == ("pending", "pending")
    fake_stripe.settle_refund(ok["gatewayRefundId"])
    fake_stripe.settle_refund(bad["gatewayRefundId"], succeed=False)  # the webhooks are never delivered

    # Stripe cannot be reached: nothing changes, the next run asks again.
    unreachable = StripeGateway(fake_stripe.api_key, api_base=f"http://127.0.0.1:{unused_tcp_port}", max_network_retries=0)
    async with poll_worker(temporal_client, db_url, unreachable) as queue:
        assert counts(await poll(temporal_client, queue, account)) == (2, 0, 0, 0, 2, [])
    assert (refund_row(db_url, ok["id"]).status, refund_row(db_url, bad["id"]).status) == ("pending", "pending")

    reads_before = len(fake_stripe.requests_to("GET", f"/v1/refunds/{ok['gatewayRefundId']}"))
    async with poll_worker(temporal_client, db_url, stripe_gateway) as queue:
        report = await poll(temporal_client, queue, account)
        assert counts(report) == (2, 1, 1, 0, 0, [])
        assert counts(await poll(temporal_client, queue, account)) == (0, 0, 0, 0, 0, [])
    assert len(fake_stripe.requests_to("GET", f"/v1/refunds/{ok['gatewayRefundId']}")) == reads_before + 1
    assert len(fake_stripe.refunds) == 2  # read, never made again
    assert refund_row(db_url, ok["id"]).status == "succeeded"
    row = refund_row(db_url, bad["id"])
    assert (row.status, row.reversed, row.failure_reason) == ("failed", False, "lost_or_stolen_card")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)

    # The webhooks arrive late: the same forward-only rule, so they change nothing.
    late = await deliver(stripe_http, fake_stripe, event_of(fake_stripe, bad["gatewayRefundId"], "refund.failed"))
    assert (late.status_code, late.json()["result"], late.json()["status"]) == (200, "unchanged", "failed")
    assert [p["status"] for p in results_for(db_url, payment_id)] == ["succeeded", "reversed", "reversed", "restored"]
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)


async def test_the_poll_sends_a_refund_stripe_never_received(db_url, temporal_env, fake_stripe, stripe_gateway, stripe_http, temporal_client,
                                                            unused_tcp_port) -> None:
    """Stripe was down when finance refunded: the refund is booked, pending, without a gateway id; the poll sends
    it under its idempotency key."""
    account, invoice_id, payment_id, pi = await paid_bill(stripe_http, db_url, stripe_gateway, fake_stripe)
    settings = stripe_settings(db_url, fake_stripe, stripe_api_base=f"http://127.0.0.1:{unused_tcp_port}")
    async with client_for(create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as down:
        made = await post_refund(down, account, payment_id, "23.79")
    assert (made["status"], made.get("gatewayRefundId"), fake_stripe.refunds) == ("pending", None, {})
    async with poll_worker(temporal_client, db_url, stripe_gateway) as queue:
        assert counts(await poll(temporal_client, queue, account)) == (1, 1, 0, 0, 0, [])
    [sent] = fake_stripe.requests_to("POST", "/v1/refunds")
    assert (sent.idempotency_key, sent.form["payment_intent"], sent.form["amount"]) == (f"o2c-refund-{made['id']}", pi, "2379")
    row = refund_row(db_url, made["id"])
    assert (row.status, row.gateway_refund_id) == ("succeeded", next(iter(fake_stripe.refunds)))
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)


# --- the schedule -------------------------------------------------------------------------------------------


async def test_the_hourly_schedule_is_created_once(temporal_client) -> None:
    handle = temporal_client.get_schedule_handle(REFUND_POLL_SCHEDULE_ID)
    try:
        await handle.delete()  # left by an earlier run on this dev server
    except Exception:  # noqa: BLE001 - not there: the normal case
        pass
    try:
        assert await ensure_refund_poll_schedule(temporal_client, TASK_QUEUE) is True
        assert await ensure_refund_poll_schedule(temporal_client, TASK_QUEUE) is False
        described = await handle.describe()
        [interval] = described.schedule.spec.intervals
        assert interval.every == timedelta(hours=1)
        assert (described.schedule.action.workflow, described.schedule.action.task_queue) == (REFUND_POLL_WORKFLOW, TASK_QUEUE)
    finally:
        await handle.delete()


# --- `o2c poll-refunds` -------------------------------------------------------------------------------------


async def test_o2c_poll_refunds_runs_the_poll_once_and_prints_its_report(db_url, sandbox_api, temporal_env, temporal_client,
                                                                           unused_tcp_port) -> None:
    """The command, as its own process, starts the poll on the worker's task queue and prints the report. The worker
    here asks a Stripe nobody answers, so every pending refund of the shared database stays as it is."""
    http, _sandbox, _clock = sandbox_api
    account = await make_account(http)
    payment_id = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    made = await post_refund(http, account, payment_id, "1.00")
    nobody = StripeGateway("sk_test_nobody", api_base=f"http://127.0.0.1:{unused_tcp_port}", max_network_retries=0)
    async with poll_worker(temporal_client, db_url, nobody) as queue:
        env = dict(os.environ, O2C_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host, O2C_TASK_QUEUE=queue,
                   O2C_DATABASE_URL=db_url)
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "o2c_cli.main", "poll-refunds", env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["checked"] >= 1 and report["unanswered"] == report["checked"] and report["errors"] == []
    assert refund_row(db_url, made["id"]).status == "pending"
