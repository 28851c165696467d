"""POST /webhooks/stripe: the real app, the real stripe SDK against the local fake Stripe, the real
charge activity, and a real Temporal dev server whose history shows the signals.

Each test charges an invoice the way the billing workflow does (BillingActivities.charge_invoice
with a StripeGateway), then delivers the events the fake Stripe emitted, signed as Stripe signs
them, in the order the test chooses."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
import stripe
from sqlmodel import select
from temporalio.exceptions import ApplicationError

from activities.billing import BillingActivities
from adapters.payments import StripeGateway
from adapters.temporal.client import WorkflowGateway
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from api.app import create_app
from domain.payments import ChargeRequest, PaymentOutcome, charge_idempotency_key
from persistence.db import session_scope
from persistence.tables import BillingAccount, BusinessEvent, Invoice, OutboxMessage, Payment, StripeWebhookEvent
from services.payment_methods import charge_method
from services.query import utcnow
from services.stripe_webhooks import PAYMENT_RESULT_TOPIC, StripeEvent, record_event
from tests.api.conftest import FINANCE, PAYMENT_PATH, TASK_QUEUE, api_settings, client_for, make_account, signals_received, utc
from tests.fakes.stripe_server import DEFAULT_WEBHOOK_SECRET, FakeStripeServer, sign_payload

WEBHOOK = "/webhooks/stripe"
GOOD_IBAN = "sepa:DE89370400440532013000"
BOUNCING_IBAN = "sepa:DE62370400440532013001"


# --- fixtures ----------------------------------------------------------------------------------


def stripe_settings(db_url: str, server: FakeStripeServer, **overrides):
    values = dict(stripe_api_key=server.api_key, stripe_api_base=server.url, stripe_webhook_secret=DEFAULT_WEBHOOK_SECRET)
    values.update(overrides)
    return api_settings(db_url, **values)


@pytest.fixture(scope="module")
def stripe_app(db_url, temporal_env, stripe_server):
    return create_app(stripe_settings(db_url, stripe_server), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))


@pytest.fixture(scope="module")
async def http(stripe_app) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(stripe_app) as client:
        yield client


@pytest.fixture
def gateway(fake_stripe) -> StripeGateway:
    return StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=0)


# --- helpers -----------------------------------------------------------------------------------


async def account_with(http: httpx.AsyncClient, payment_method: str) -> dict:
    return await make_account(http, defaultPaymentMethod={"id": payment_method})


def insert_invoice(db_url: str, account: dict, gross_cents: int = 2379) -> str:
    invoice_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Invoice(
            id=invoice_id, number=f"T-2026-{uuid.uuid4().hex[:8]}", billing_account_id=account["id"],
            customer_id=account["relatedParty"][0]["id"], state="sent",
            period_start=utc(2026, 1, 31, 23), period_end=utc(2026, 2, 28, 23),
            local_period_start=date(2026, 2, 1), local_period_end=date(2026, 3, 1),
            issued_at=utc(2026, 3, 1, 6), due_at=utc(2026, 3, 15, 6),
            net_cents=gross_cents - 380, vat_cents=380, gross_cents=gross_cents, lines=[], vat_breakdown=[],
        ))
    return invoice_id


async def charge(db_url: str, gateway: StripeGateway, invoice_id: str, attempt: int = 1):
    """What the billing workflow runs: the real charge activity, over the real SDK."""
    activities = BillingActivities(settings=api_settings(db_url), catalog=None, profiles={}, gateway=gateway, oss=None, notifier=None)
    return await activities.charge_invoice(invoice_id, attempt)


async def start_stand_in_workflow(temporal_client, account: dict) -> str:
    # No worker runs in API tests: the workflow stays pending and its history records the signals.
    workflow_id = f"billing-account-{account['id']}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    return workflow_id


async def deliver(http: httpx.AsyncClient, fake: FakeStripeServer, event: dict, **sign) -> httpx.Response:
    body, headers = fake.webhook_request(event, **sign)
    return await http.post(WEBHOOK, content=body, headers=headers)


def event_of(fake: FakeStripeServer, intent_id: str, type_: str) -> dict:
    [event] = fake.events_for(intent_id, type_)
    return event


def payment_row(db_url: str, payment_id: str) -> Payment:
    with session_scope(db_url) as session:
        return session.get(Payment, payment_id)


def outbox_for(db_url: str, payment_id: str) -> list[OutboxMessage]:
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.topic == PAYMENT_RESULT_TOPIC)).all()
        return [m for m in rows if m.payload["paymentId"] == payment_id]


def business_events(db_url: str, account_id: str, kind: str) -> list[BusinessEvent]:
    with session_scope(db_url) as session:
        return list(session.exec(select(BusinessEvent).where(BusinessEvent.billing_account_id == account_id, BusinessEvent.kind == kind)))


async def payment_signals(temporal_client, workflow_id: str) -> list[dict]:
    return [payloads[0] for name, payloads in await signals_received(temporal_client, workflow_id) if name == "payment_received"]


# --- signature ----------------------------------------------------------------------------------


async def test_bad_signatures_are_refused_with_a_code_and_change_nothing(http, fake_stripe, gateway, db_url) -> None:
    account = await account_with(http, "4242424242424242")
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    [pi] = fake_stripe.intents
    event = event_of(fake_stripe, pi, "payment_intent.succeeded")
    body, headers = fake_stripe.webhook_request(event)

    cases = {
        "signature_invalid": (body, {**headers, "Stripe-Signature": sign_payload(body, "whsec_someone_else")}),
        "signature_missing": (body, {k: v for k, v in headers.items() if k != "Stripe-Signature"}),
        "signature_expired": (body, {**headers, "Stripe-Signature": sign_payload(body, DEFAULT_WEBHOOK_SECRET, int(time.time()) - 3600)}),
    }
    tampered = body.replace(b'"amount": 2379', b'"amount": 1')
    cases["tampered"] = (tampered, headers)
    for name, (content, hdrs) in cases.items():
        response = await http.post(WEBHOOK, content=content, headers=hdrs)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["code"] == ("signature_invalid" if name == "tampered" else name)
    with session_scope(db_url) as session:
        assert session.get(StripeWebhookEvent, event["id"]) is None
    assert outcome.status == "succeeded"


async def test_a_signed_body_that_is_no_event_is_refused(http) -> None:
    body = json.dumps({"hello": "world"}).encode()
    response = await http.post(WEBHOOK, content=body, headers={"Stripe-Signature": sign_payload(body, DEFAULT_WEBHOOK_SECRET)})
    assert (response.status_code, response.json()["code"]) == (400, "malformed_event")


async def test_without_a_webhook_secret_stripe_is_told_to_retry(db_url, temporal_env, fake_stripe) -> None:
    app = create_app(stripe_settings(db_url, fake_stripe, stripe_webhook_secret=None), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    body = json.dumps({"id": "evt_x", "object": "event", "type": "ping", "data": {"object": {}}}).encode()
    async with client_for(app) as client:
        response = await client.post(WEBHOOK, content=body, headers={"Stripe-Signature": sign_payload(body, DEFAULT_WEBHOOK_SECRET)})
    assert (response.status_code, response.json()["code"]) == (503, "stripe_webhook_not_configured")


# --- SEPA: processing for days, then the bank's answer by webhook ---------------------------------------


async def test_sepa_processing_then_succeeded_by_webhook_signals_the_workflow(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account = await account_with(http, GOOD_IBAN)
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    invoice_id = insert_invoice(db_url, account)
    outcome = await charge(db_url, gateway, invoice_id)
    assert outcome.status == "processing"
    payment_id = outcome.payment_id
    assert payment_id == charge_idempotency_key(invoice_id, 1)
    [pi] = fake_stripe.intents

    # The `processing` event tells o2c nothing new.
    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.processing"))
    assert response.status_code == 200
    assert response.json() == {"received": True, "eventId": response.json()["eventId"], "result": "unchanged",
                               "paymentId": payment_id, "status": "processing"}

    fake_stripe.settle(pi)  # days later, the debit clears
    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.succeeded"))
    assert response.status_code == 200
    assert (response.json()["result"], response.json()["status"]) == ("applied", "succeeded")

    shown = (await http.get(f"{PAYMENT_PATH}/{payment_id}", headers=FINANCE)).json()
    assert (shown["status"], shown["totalAmount"], shown["paymentMethod"]) == (
        "succeeded", {"unit": "EUR", "value": "23.79"}, {"@type": "sepaDirectDebit"})
    assert await payment_signals(temporal_client, workflow_id) == [{"payment_id": payment_id, "amount_cents": 2379, "source": "webhook"}]
    [message] = outbox_for(db_url, payment_id)
    assert message.delivered_at is not None and message.attempts == 1
    assert [e.data["to"] for e in business_events(db_url, account["id"], "payment.succeeded")] == ["succeeded"]


async def test_sepa_bounce_by_webhook_is_a_hard_decline(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account = await account_with(http, BOUNCING_IBAN)
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    assert outcome.status == "processing"
    [pi] = fake_stripe.intents
    fake_stripe.settle(pi)

    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.payment_failed"))
    assert (response.status_code, response.json()["result"], response.json()["status"]) == (200, "applied", "declined")
    row = payment_row(db_url, outcome.payment_id)
    assert (row.status, row.decline_code) == ("declined", "debit_not_authorized")
    shown = (await http.get(f"{PAYMENT_PATH}/{outcome.payment_id}", headers=FINANCE)).json()
    assert (shown["status"], shown["declineCode"]) == ("declined", "debit_not_authorized")
    # The workflow is woken; nothing was received, and the payment row says why.
    assert await payment_signals(temporal_client, workflow_id) == [{"payment_id": outcome.payment_id, "amount_cents": 0, "source": "webhook"}]


# --- at least once, in any order -------------------------------------------------------------------


async def test_duplicate_event_is_answered_and_does_nothing(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account = await account_with(http, GOOD_IBAN)
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    [pi] = fake_stripe.intents
    fake_stripe.settle(pi)
    event = event_of(fake_stripe, pi, "payment_intent.succeeded")

    first = await deliver(http, fake_stripe, event)
    again = await deliver(http, fake_stripe, event)  # Stripe retries: same event id
    assert (first.json()["result"], again.status_code, again.json()["result"]) == ("applied", 200, "duplicate")

    reads = [r for r in fake_stripe.requests if r.method == "GET" and r.path == f"/v1/payment_intents/{pi}"]
    assert len(reads) == 1  # the duplicate is not even re-read
    assert len(await payment_signals(temporal_client, workflow_id)) == 1
    assert len(outbox_for(db_url, outcome.payment_id)) == 1
    assert len(business_events(db_url, account["id"], "payment.succeeded")) == 1
    with session_scope(db_url) as session:
        rows = session.exec(select(StripeWebhookEvent).where(StripeWebhookEvent.object_id == pi)).all()
    assert [(r.id, r.result, r.payment_id) for r in rows] == [(event["id"], "applied", outcome.payment_id)]


async def test_succeeded_before_processing_leaves_the_payment_succeeded(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account = await account_with(http, GOOD_IBAN)
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    [pi] = fake_stripe.intents
    fake_stripe.settle(pi)
    processing = event_of(fake_stripe, pi, "payment_intent.processing")
    succeeded = event_of(fake_stripe, pi, "payment_intent.succeeded")

    assert (await deliver(http, fake_stripe, succeeded)).json()["status"] == "succeeded"
    late = await deliver(http, fake_stripe, processing)  # the older event arrives last
    assert (late.status_code, late.json()["result"], late.json()["status"]) == (200, "unchanged", "succeeded")
    assert payment_row(db_url, outcome.payment_id).status == "succeeded"
    assert len(await payment_signals(temporal_client, workflow_id)) == 1


async def test_webhook_before_the_activity_records_the_payment_and_a_retry_charges_nothing(
    http, fake_stripe, gateway, db_url, temporal_client
) -> None:
    """The card is charged, the activity's write is lost (worker crash), Stripe's webhook comes
    first; the retried activity, same invoice and attempt, replays the same PaymentIntent."""
    account = await account_with(http, "4242424242424242")
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    invoice_id = insert_invoice(db_url, account)
    # The charge as the activity sends it, but nothing recorded by o2c yet.
    with session_scope(db_url) as session:  # the card saved at Stripe when the account was created
        method, customer_id, _ = charge_method(session, session.get(BillingAccount, account["id"]))
    request = ChargeRequest(invoice_id=invoice_id, attempt=1, amount_minor=2379, account_id=account["id"],
                            payment_method=method, gateway_customer_id=customer_id, description=f"Invoice {invoice_id}")
    assert (await gateway.charge(request)).status == "succeeded"
    [pi] = fake_stripe.intents

    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.succeeded"))
    assert (response.json()["result"], response.json()["paymentId"]) == ("applied", request.idempotency_key)
    row = payment_row(db_url, request.idempotency_key)
    assert (row.billing_account_id, row.invoice_id, row.amount_cents, row.method, row.status, row.gateway_payment_id) == (
        account["id"], invoice_id, 2379, "card", "succeeded", pi)

    outcome = await charge(db_url, gateway, invoice_id, attempt=1)  # Temporal retries the activity
    assert (outcome.status, outcome.payment_id) == ("succeeded", request.idempotency_key)
    assert list(fake_stripe.intents) == [pi]  # the fake's own record: one PaymentIntent
    with session_scope(db_url) as session:
        assert len(session.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()) == 1
    assert len(await payment_signals(temporal_client, workflow_id)) == 1


async def test_card_decline_and_authentication_events_change_nothing_the_activity_knew(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    # Stripe refuses to save this card (it fails the check on attach), so the account gets it unsaved, as
    # before payment methods were saved at the gateway: the charge itself is declined.
    account = await make_account(http)
    with session_scope(db_url) as session:
        session.get(BillingAccount, account["id"]).payment_method = "4000000000009995"  # insufficient funds
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    declined = await charge(db_url, gateway, insert_invoice(db_url, account))
    assert (declined.status, declined.decline_code, declined.decline_class) == ("declined", "insufficient_funds", "soft")
    [pi] = fake_stripe.intents
    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.payment_failed"))
    assert (response.json()["result"], response.json()["status"]) == ("unchanged", "declined")

    account_3ds = await account_with(http, "4000002760003184")
    needs_auth = await charge(db_url, gateway, insert_invoice(db_url, account_3ds))
    assert needs_auth.status == "requires_action"
    pi_3ds = next(p for p in fake_stripe.intents if p != pi)
    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi_3ds, "payment_intent.payment_failed"))
    assert (response.json()["result"], response.json()["status"]) == ("unchanged", "requires_action")
    assert await payment_signals(temporal_client, workflow_id) == []


async def test_events_o2c_does_not_act_on_are_acknowledged(http, fake_stripe, gateway, db_url) -> None:
    customer_id = await gateway.ensure_customer("ba-not-ours")
    [created] = fake_stripe.events_for(customer_id, "customer.created")
    response = await deliver(http, fake_stripe, created)
    assert (response.status_code, response.json()["result"]) == (200, "ignored")

    # An intent of this Stripe account that is not an o2c charge (no invoice in its metadata).
    client = stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    foreign = client.v1.payment_intents.create({"amount": 500, "currency": "eur", "payment_method": "pm_card_visa", "confirm": True})
    response = await deliver(http, fake_stripe, event_of(fake_stripe, foreign.id, "payment_intent.succeeded"))
    assert (response.status_code, response.json()["result"]) == (200, "unmatched")

    # An intent Stripe does not know (another mode or account).
    ghost = {**created, "id": "evt_ghost", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_ghost", "object": "payment_intent"}}}
    response = await deliver(http, fake_stripe, ghost)
    assert (response.status_code, response.json()["result"]) == (200, "unmatched")


# --- when Stripe or Temporal cannot be reached ----------------------------------------------------------


async def test_stripe_unreachable_on_re_read_is_503_and_recorded_later(http, fake_stripe, gateway, db_url, monkeypatch) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.001)  # the SDK's own GET retries, without waiting
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.001)
    account = await account_with(http, GOOD_IBAN)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    [pi] = fake_stripe.intents
    fake_stripe.settle(pi)
    event = event_of(fake_stripe, pi, "payment_intent.succeeded")

    fake_stripe.fail_next(3, status=503)  # the first try and both SDK retries
    response = await deliver(http, fake_stripe, event)
    assert (response.status_code, response.json()["code"]) == (503, "stripe_unavailable")
    with session_scope(db_url) as session:
        assert session.get(StripeWebhookEvent, event["id"]) is None  # not recorded: Stripe delivers again
    assert payment_row(db_url, outcome.payment_id).status == "processing"

    retried = await deliver(http, fake_stripe, event)
    assert (retried.status_code, retried.json()["result"]) == (200, "applied")
    assert payment_row(db_url, outcome.payment_id).status == "succeeded"


async def test_temporal_down_the_result_waits_in_the_outbox_for_the_relay(
    db_url, fake_stripe, gateway, temporal_env, temporal_client, unused_tcp_port
) -> None:
    # An API whose Temporal is unreachable (nothing listens on that port).
    app = create_app(stripe_settings(db_url, fake_stripe, temporal_address=f"127.0.0.1:{unused_tcp_port}"))
    async with client_for(app) as api:
        account = await account_with(api, GOOD_IBAN)
        workflow_id = await start_stand_in_workflow(temporal_client, account)
        outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
        [pi] = fake_stripe.intents
        fake_stripe.settle(pi)
        response = await deliver(api, fake_stripe, event_of(fake_stripe, pi, "payment_intent.succeeded"))
    # Answered 200: the result is recorded, and the signal is owed by the outbox.
    assert (response.status_code, response.json()["result"]) == (200, "applied")
    assert payment_row(db_url, outcome.payment_id).status == "succeeded"
    [message] = outbox_for(db_url, outcome.payment_id)
    assert message.delivered_at is None
    assert await payment_signals(temporal_client, workflow_id) == []

    # The worker's relay delivers it (only this topic's handler, so other tests' messages stay put).
    handler = workflow_handlers(WorkflowGateway(temporal_env.client, TASK_QUEUE))[PAYMENT_RESULT_TOPIC]
    assert await OutboxRelay(db_url, {PAYMENT_RESULT_TOPIC: handler}).deliver_due() >= 1
    assert await payment_signals(temporal_client, workflow_id) == [{"payment_id": outcome.payment_id, "amount_cents": 2379, "source": "webhook"}]
    [message] = outbox_for(db_url, outcome.payment_id)
    assert message.delivered_at is not None


# --- unknown outcomes and stale reads -----------------------------------------------------------------


async def test_lost_charge_answer_is_reconciled_by_the_webhook(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account = await account_with(http, "4242424242424242")
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    invoice_id = insert_invoice(db_url, account)
    fake_stripe.drop_next_response()  # Stripe charged the card; the activity never hears back
    fake_stripe.search_lag = True  # and the activity's own reconciling read does not see the new intent yet
    with pytest.raises(ApplicationError) as lost:
        await charge(db_url, gateway, invoice_id)
    assert lost.value.type == "PaymentOutcomeUnknown" and not lost.value.non_retryable  # Temporal retries the same attempt
    payment_id = charge_idempotency_key(invoice_id, 1)
    row = payment_row(db_url, payment_id)
    assert (row.status, row.gateway_payment_id) == ("unknown", None)
    [pi] = fake_stripe.intents

    response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.succeeded"))
    assert (response.json()["result"], response.json()["paymentId"]) == ("applied", payment_id)
    row = payment_row(db_url, payment_id)
    assert (row.status, row.gateway_payment_id) == ("succeeded", pi)
    assert await payment_signals(temporal_client, workflow_id) == [{"payment_id": payment_id, "amount_cents": 2379, "source": "webhook"}]

    # The same attempt sent again (what the retried activity does) replays; still one PaymentIntent.
    fake_stripe.search_lag = False
    again = await charge(db_url, gateway, invoice_id)
    assert again.status == "succeeded" and list(fake_stripe.intents) == [pi]


def test_a_stale_read_never_moves_a_payment_back(db_url) -> None:
    """The ordering rule inside the webhook's transaction: a `processing` observation (a replayed
    first answer, a lagging read) arriving for a settled payment changes nothing."""
    key = charge_idempotency_key(f"inv-{uuid.uuid4()}", 1)
    with session_scope(db_url) as session:
        session.add(Payment(id=key, correlator_id=key, billing_account_id="ba-stale", amount_cents=2379, method="sepa_debit",
                            status="succeeded", attempt=1, gateway_payment_id=f"pi_{uuid.uuid4().hex}", created_at=utcnow()))
    invoice_id, attempt = key.removeprefix("o2c-charge-").rsplit("-", 1)
    stale = PaymentOutcome(status="processing", gateway_payment_id=None, amount_minor=2379, currency="EUR",
                           invoice_id=invoice_id, attempt=int(attempt), account_id="ba-stale", payment_method_kind="sepa_debit")
    event = StripeEvent(id=f"evt_{uuid.uuid4().hex}", type="payment_intent.processing", object_type="payment_intent", object_id="pi_x")
    with session_scope(db_url) as session:
        applied = record_event(session, event, stale, utcnow())
    assert (applied.result.result, applied.result.status, applied.message_id) == ("unchanged", "succeeded", None)
    assert payment_row(db_url, key).status == "succeeded"
    with session_scope(db_url) as session:
        assert session.get(StripeWebhookEvent, event.id).result == "unchanged"
