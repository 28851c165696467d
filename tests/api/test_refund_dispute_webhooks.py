"""Refunds and disputes with Stripe: the real app, the real SDK against the local fake Stripe, the real charge
activity, and the webhooks Stripe sends, delivered in the order (and as often as) each test chooses."""
from __future__ import annotations

import uuid

from activities.ledger import allocate_payments
from persistence.db import session_scope
from tests.api.conftest import FINANCE, TASK_QUEUE, make_account, signals_received
from tests.api.test_stripe_webhooks import (  # noqa: F401 - fixtures `stripe_app`, `http`, `gateway` (module-scoped per test module)
    charge, deliver, event_of, gateway, http, insert_invoice, payment_row, stripe_app,
)
from tests.fakes.stripe_server import FakeStripeServer
from tests.support.refunds import bill, bill_states, fees_of, refund_events, refund_row, results_for

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"
GOOD_IBAN = "sepa:DE89370400440532013000"


async def paid_bill(http, db_url, gateway, fake_stripe, payment_method: str = "4242424242424242") -> tuple[dict, str, str, str]:
    """(account, invoice id, payment id, PaymentIntent id): a bill charged through Stripe and allocated by the ledger."""
    account = await make_account(http, defaultPaymentMethod={"id": payment_method})
    invoice_id = insert_invoice(db_url, account)
    outcome = await charge(db_url, gateway, invoice_id)
    pi = payment_row(db_url, outcome.payment_id).gateway_payment_id
    assert pi in fake_stripe.intents
    if outcome.status == "processing":
        fake_stripe.settle(pi)
        response = await deliver(http, fake_stripe, event_of(fake_stripe, pi, "payment_intent.succeeded"))
        assert response.json()["status"] == "succeeded"
    with session_scope(db_url) as session:
        allocate_payments(session, account["id"])
    assert bill(db_url, invoice_id).state == "settled"
    return account, invoice_id, outcome.payment_id, pi


def refund_body(account: dict, payment_id: str, value: str) -> dict:
    return {"account": {"id": account["id"]}, "payment": {"id": payment_id}, "totalAmount": {"unit": "EUR", "value": value},
            "reason": "customer cancelled within the withdrawal period"}


async def start_stand_in_workflow(temporal_client, account: dict) -> str:
    workflow_id = f"billing-account-{account['id']}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    return workflow_id


# --- refunds -----------------------------------------------------------------------------------------


async def test_a_card_refund_goes_to_stripe_once(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    headers = {**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"}
    response = await http.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "10.00"))
    assert response.status_code == 201, response.text
    shown = response.json()
    assert (shown["status"], shown["paymentMethod"]["@type"]) == ("succeeded", "gateway")
    [stripe_refund] = fake_stripe.refunds.values()
    assert (shown["gatewayRefundId"], stripe_refund["amount"], stripe_refund["payment_intent"]) == (stripe_refund["id"], 1000, pi)
    [sent] = fake_stripe.requests_to("POST", "/v1/refunds")
    assert sent.idempotency_key == f"o2c-refund-{shown['id']}"

    again = await http.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "10.00"))
    assert (again.status_code, again.json()["id"]) == (200, shown["id"])
    assert len(fake_stripe.requests_to("POST", "/v1/refunds")) == 1  # nothing sent twice
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)

    # Stripe's own events about it tell o2c nothing new.
    for type_ in ("refund.created",):
        result = await deliver(http, fake_stripe, event_of(fake_stripe, stripe_refund["id"], type_))
        assert (result.status_code, result.json()["result"], result.json()["status"]) == (200, "unchanged", "succeeded")
    [refunded] = [e for e in fake_stripe.events if e["type"] == "charge.refunded"]
    assert (await deliver(http, fake_stripe, refunded)).json()["result"] == "unmatched"  # no refund of it is pending

    # More than is left is refused before Stripe is asked.
    too_much = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                               json=refund_body(account, payment_id, "13.80"))
    assert (too_much.status_code, too_much.json()["code"]) == (409, "refund_exceeds_payment")
    assert len(fake_stripe.requests_to("POST", "/v1/refunds")) == 1


async def test_sepa_refunds_follow_the_banks_answer_by_webhook(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe, GOOD_IBAN)
    first = (await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                             json=refund_body(account, payment_id, "10.00"))).json()
    second = (await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                              json=refund_body(account, payment_id, "5.00"))).json()
    assert (first["status"], second["status"]) == ("pending", "pending")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 879)

    # The first comes back from the bank: refund.failed, then refund.updated, and Stripe retries one of them.
    fake_stripe.settle_refund(first["gatewayRefundId"], succeed=False)
    failed_event = event_of(fake_stripe, first["gatewayRefundId"], "refund.failed")
    updated_event = event_of(fake_stripe, first["gatewayRefundId"], "refund.updated")
    applied = await deliver(http, fake_stripe, failed_event)
    assert (applied.status_code, applied.json()["result"], applied.json()["status"]) == (200, "applied", "failed")
    assert (await deliver(http, fake_stripe, updated_event)).json()["result"] == "unchanged"
    assert (await deliver(http, fake_stripe, failed_event)).json()["result"] == "duplicate"
    row = refund_row(db_url, first["id"])
    assert (row.status, row.reversed, row.failure_reason) == ("failed", False, "lost_or_stolen_card")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1879)  # 10.00 back on the bill

    # The second succeeds; an older charge.refunded event (sent when it was created) makes o2c re-read it.
    fake_stripe.settle_refund(second["gatewayRefundId"])
    charge_refunded = [e for e in fake_stripe.events if e["type"] == "charge.refunded"][-1]
    result = await deliver(http, fake_stripe, charge_refunded)
    assert (result.json()["result"], result.json()["status"]) == ("applied", "succeeded")
    assert refund_row(db_url, second["id"]).status == "succeeded"
    assert [s for _, s in refund_events(db_url, second["id"])][-1].startswith("succeeded")
    assert [p["status"] for p in results_for(db_url, payment_id)] == ["succeeded", "reversed", "reversed", "restored"]


# --- disputes ----------------------------------------------------------------------------------------


async def test_a_lost_dispute_reopens_the_debt_with_its_fee(http, fake_stripe, gateway, db_url, temporal_client) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    workflow_id = await start_stand_in_workflow(temporal_client, account)
    dispute = fake_stripe.open_dispute(pi)
    created = event_of(fake_stripe, dispute["id"], "charge.dispute.created")

    response = await deliver(http, fake_stripe, created)
    assert (response.status_code, response.json()["result"], response.json()["paymentId"], response.json()["status"]) == (
        200, "applied", payment_id, "needs_response")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)
    [fee] = fees_of(db_url, account["id"])
    assert (fee.key, fee.amount_cents, fee.status) == (f"chargeback-fee:{dispute['id']}", 1500, "pending")
    assert (await deliver(http, fake_stripe, created)).json()["result"] == "duplicate"
    signals = [p[0] for name, p in await signals_received(temporal_client, workflow_id) if name == "payment_received"]
    assert signals == [{"payment_id": payment_id, "amount_cents": 0, "source": "chargeback"}]

    fake_stripe.close_dispute(dispute["id"], won=False)
    closed = await deliver(http, fake_stripe, event_of(fake_stripe, dispute["id"], "charge.dispute.closed"))
    assert (closed.json()["result"], closed.json()["status"]) == ("applied", "lost")
    assert bill(db_url, invoice_id).state == "sent"
    assert len(fees_of(db_url, account["id"])) == 1
    chargebacks = (await http.get(REFUND_PATH, params={"payment.id": payment_id}, headers=FINANCE)).json()
    assert [(c["@type"], c["disputeStatus"], c["reversed"], c["chargebackFee"]["value"]) for c in chargebacks] == [("Chargeback", "lost", True, "15.00")]


async def test_a_won_dispute_restores_the_payment_even_when_closed_arrives_first(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    dispute = fake_stripe.open_dispute(pi)
    fake_stripe.close_dispute(dispute["id"], won=True)
    created = event_of(fake_stripe, dispute["id"], "charge.dispute.created")
    closed = event_of(fake_stripe, dispute["id"], "charge.dispute.closed")

    first = await deliver(http, fake_stripe, closed)  # the later event arrives first
    assert (first.json()["result"], first.json()["status"]) == ("applied", "won")
    late = await deliver(http, fake_stripe, created)
    assert (late.json()["result"], late.json()["status"]) == ("unchanged", "won")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    assert bill_states(db_url, invoice_id) == ["settled", "sent", "settled"]
    assert len(fees_of(db_url, account["id"])) == 1  # the dispute fee stays
    assert [p["status"] for p in results_for(db_url, payment_id)] == ["reversed", "restored"]


async def test_a_dispute_won_in_order_restores_the_payment(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    dispute = fake_stripe.open_dispute(pi)
    assert (await deliver(http, fake_stripe, event_of(fake_stripe, dispute["id"], "charge.dispute.created"))).json()["result"] == "applied"
    assert bill(db_url, invoice_id).state == "sent"
    fake_stripe.close_dispute(dispute["id"], won=True)
    assert (await deliver(http, fake_stripe, event_of(fake_stripe, dispute["id"], "charge.dispute.closed"))).json()["status"] == "won"
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    [chargeback] = (await http.get(REFUND_PATH, params={"payment.id": payment_id}, headers=FINANCE)).json()
    assert (chargeback["disputeStatus"], chargeback["reversed"]) == ("won", False)
    assert [e for e, _ in refund_events(db_url, chargeback["id"])] == ["RefundCreateEvent", "RefundStateChangeEvent"]
