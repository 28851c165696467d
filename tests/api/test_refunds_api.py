"""TMF676 refund over the real app and database (both backends): roles, validation, idempotency, and what a
refund or a recorded chargeback does to the ledger, the bills, the hub events and the account's workflow."""
from __future__ import annotations

import uuid

from sqlmodel import select

from adapters.temporal.client import WorkflowGateway
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from api.app import create_app
from persistence.db import session_scope
from persistence.tables import AuditLog, OutboxMessage, Refund
from domain.payments import RefundOutcome
from services.refunds import apply_refund_outcome
from services.stripe_webhooks import PAYMENT_RESULT_TOPIC
from tests.api.conftest import ADMIN, CRM, FINANCE, SUPPORT, TASK_QUEUE, api_settings, client_for, make_account, signals_received
from tests.support.refunds import (
    bill, bill_states, fees_of, insert_bill, insert_payment, payment, refund_events, refund_row, results_for,
)

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"


def refund_body(account: dict, payment_id: str, value: str, reason: str = "goodwill, contract cancelled", **extra) -> dict:
    return {"account": {"id": account["id"]}, "payment": {"id": payment_id}, "totalAmount": {"unit": "EUR", "value": value},
            "reason": reason, **extra}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"rf-{uuid.uuid4().hex}"}


async def test_a_refund_takes_credit_first_then_reopens_the_bill(client, db_url) -> None:
    account = await make_account(client)
    invoice_id = insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 3000)  # 23.79 settle the bill, 6.21 are credit
    assert (bill(db_url, invoice_id).state, bill_states(db_url, invoice_id)) == ("settled", ["settled"])  # the ledger's change, announced

    headers = {**FINANCE, **key()}
    response = await client.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "10.00"))
    assert response.status_code == 201, response.text
    shown = response.json()
    assert (shown["@type"], shown["status"], shown["totalAmount"], shown["paymentMethod"], shown["payment"]["id"]) == (
        "Refund", "succeeded", {"unit": "EUR", "value": "10.00"}, {"@type": "manual"}, payment_id)
    assert shown["reversal"] == {"creditCents": 621, "invoices": [{"invoiceId": invoice_id, "amountCents": 379}]}
    assert response.headers["Location"] == f"{REFUND_PATH}/{shown['id']}"

    after = bill(db_url, invoice_id)
    assert (after.state, after.paid_cents) == ("partiallyPaid", 2000)
    assert payment(db_url, payment_id).allocated_cents == 3000  # all of it used up: 20.00 by the bill, 10.00 by the refund
    assert bill_states(db_url, invoice_id) == ["settled", "partiallyPaid"]
    assert refund_events(db_url, shown["id"]) == [("RefundCreateEvent", "succeeded")]
    assert results_for(db_url, payment_id) == [{"billingAccountId": account["id"], "paymentId": payment_id, "status": "reversed",
                                                "amountCents": 0, "source": "refund", "refundId": shown["id"]}]
    with session_scope(db_url) as session:
        [entry] = session.exec(select(AuditLog).where(AuditLog.resource_id == shown["id"])).all()
    assert (entry.action, entry.reason, entry.actor_role, entry.after["amount_cents"]) == (
        "refund.create", "goodwill, contract cancelled", "finance", 1000)

    # The same request again: the same refund, nothing booked twice.
    again = await client.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "10.00"))
    assert (again.status_code, again.json()["id"]) == (200, shown["id"])
    assert bill(db_url, invoice_id).paid_cents == 2000
    # The same key for another refund is refused.
    other = await client.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "11.00"))
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")

    # The rest: the bill is open in full again; then nothing is left on the payment.
    rest = await client.post(REFUND_PATH, headers={**FINANCE, **key()}, json=refund_body(account, payment_id, "20.00"))
    assert rest.status_code == 201
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)
    assert bill_states(db_url, invoice_id) == ["settled", "partiallyPaid", "sent"]
    too_much = await client.post(REFUND_PATH, headers={**FINANCE, **key()}, json=refund_body(account, payment_id, "0.01"))
    assert (too_much.status_code, too_much.json()["code"]) == (409, "refund_exceeds_payment")

    listed = await client.get(REFUND_PATH, params={"payment.id": payment_id}, headers=SUPPORT)
    assert (listed.status_code, sorted(r["totalAmount"]["value"] for r in listed.json())) == (200, ["10.00", "20.00"])
    assert (await client.get(f"{REFUND_PATH}/{shown['id']}", headers=SUPPORT)).json()["id"] == shown["id"]
    assert (await client.get(f"{REFUND_PATH}/nope", headers=SUPPORT)).status_code == 404


async def test_only_finance_and_admin_refund(client, db_url) -> None:
    account = await make_account(client)
    payment_id = insert_payment(db_url, account, 1000)
    for headers in (CRM, SUPPORT):
        response = await client.post(REFUND_PATH, headers={**headers, **key()}, json=refund_body(account, payment_id, "1.00"))
        assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert (await client.post(REFUND_PATH, headers=key(), json=refund_body(account, payment_id, "1.00"))).status_code == 401
    assert (await client.get(REFUND_PATH, headers=CRM)).status_code == 403
    assert (await client.post(REFUND_PATH, headers={**ADMIN, **key()}, json=refund_body(account, payment_id, "1.00"))).status_code == 201
    with session_scope(db_url) as session:
        assert len(session.exec(select(Refund).where(Refund.payment_id == payment_id)).all()) == 1


async def test_refund_validation(client, db_url) -> None:
    account = await make_account(client)
    other = await make_account(client)
    payment_id = insert_payment(db_url, account, 1000)
    declined = insert_payment(db_url, account, 1000, method="card", status="declined", gateway_payment_id="sbx_pi_declined", allocate=False)

    async def post(body: dict, headers: dict | None = None):
        return await client.post(REFUND_PATH, headers={**FINANCE, **(headers if headers is not None else key())}, json=body)

    def codes(response) -> dict[str, str]:
        assert response.status_code == 422, response.text
        return {e["field"]: e["code"] for e in response.json()["errors"]}

    no_reason = refund_body(account, payment_id, "1.00")
    del no_reason["reason"]
    assert codes(await post(no_reason)) == {"reason": "required"}
    assert codes(await post(refund_body(account, payment_id, "1.00", reason="  "))) == {"reason": "string_too_short"}
    assert codes(await post(refund_body(account, payment_id, "0"))) == {"totalAmount.value": "amount_not_positive"}
    assert codes(await post(refund_body(account, payment_id, "1.001"))) == {"totalAmount.value": "too_many_decimals"}
    missing_key = await post(refund_body(account, payment_id, "1.00"), headers={})
    assert (missing_key.status_code, missing_key.json()["code"]) == (422, "idempotency_key_required")
    assert codes(await post(refund_body(account, "no-such-payment", "1.00"))) == {"payment.id": "unknown_payment"}
    assert codes(await post(refund_body(other, payment_id, "1.00"))) == {"account.id": "payment_account_mismatch"}
    response = await post(refund_body(account, declined, "1.00"))
    assert (response.status_code, response.json()["code"]) == (409, "payment_not_refundable")
    # A correlatorId is a key too.
    by_correlator = await post(refund_body(account, payment_id, "1.00", correlatorId=f"c-{uuid.uuid4().hex}"), headers={})
    assert by_correlator.status_code == 201
    with session_scope(db_url) as session:
        assert len(session.exec(select(Refund).where(Refund.billing_account_id == account["id"])).all()) == 1


async def test_a_recorded_bank_chargeback_reopens_the_debt_adds_its_fee_and_wakes_the_workflow(client, db_url, temporal_client) -> None:
    account = await make_account(client)
    workflow_id = f"billing-account-{account['id']}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)  # no worker: history only
    invoice_id = insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 2379)
    body = refund_body(account, payment_id, "23.79", reason="SEPA return MD06 reported by the bank", **{"@type": "Chargeback"})
    response = await client.post(REFUND_PATH, headers={**FINANCE, **key()}, json=body)
    assert response.status_code == 201, response.text
    shown = response.json()
    assert (shown["@type"], shown["status"], shown["chargebackFee"]) == ("Chargeback", "succeeded", {"unit": "EUR", "value": "15.00"})
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)
    [fee] = fees_of(db_url, account["id"])
    assert (fee.key, fee.amount_cents, fee.kind, fee.status, fee.source) == (f"chargeback-fee:{shown['id']}", 1500, "chargeback_fee", "pending", shown["id"])
    signals = [p[0] for name, p in await signals_received(temporal_client, workflow_id) if name == "payment_received"]
    assert signals == [{"payment_id": payment_id, "amount_cents": 0, "source": "chargeback"}]
    [message] = results_for(db_url, payment_id)
    assert message["status"] == "reversed"


async def test_a_failed_gateway_refund_puts_the_money_back_on_the_bill(client, db_url) -> None:
    account = await make_account(client)
    invoice_id = insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    response = await client.post(REFUND_PATH, headers={**FINANCE, **key()}, json=refund_body(account, payment_id, "23.79"))
    shown = response.json()
    # The sandbox, like Stripe, keeps a SEPA refund pending; the ledger books it at once.
    assert (response.status_code, shown["status"], shown["paymentMethod"]["@type"]) == (201, "pending", "gateway")
    assert shown["gatewayRefundId"].startswith("sbx_re_")
    assert bill(db_url, invoice_id).state == "sent"

    failed = RefundOutcome(status="failed", gateway_refund_id=shown["gatewayRefundId"], amount_minor=2379, currency="EUR",
                           failure_reason="expired_or_canceled_card")
    with session_scope(db_url) as session:
        apply_refund_outcome(session, shown["id"], failed)
    with session_scope(db_url) as session:  # a late or repeated report changes nothing
        _row, changed, notice = apply_refund_outcome(session, shown["id"], failed)
        assert (changed, notice) == (False, None)
    row = refund_row(db_url, shown["id"])
    assert (row.status, row.reversed, row.failure_reason) == ("failed", False, "expired_or_canceled_card")
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    assert bill_states(db_url, invoice_id) == ["settled", "sent", "settled"]
    assert [p["status"] for p in results_for(db_url, payment_id)] == ["reversed", "restored"]
    assert [e for e, _ in refund_events(db_url, shown["id"])] == ["RefundCreateEvent", "RefundStateChangeEvent"]
    # The money is on the payment again: it can be refunded (e.g. to another account) once more.
    again = await client.post(REFUND_PATH, headers={**FINANCE, **key()}, json=refund_body(account, payment_id, "23.79"))
    assert again.status_code == 201


async def test_asking_again_reports_where_a_pending_sandbox_refund_stands(db_url, temporal_env) -> None:
    """The sandbox (no Stripe key) holds a SEPA refund pending for O2C_SEPA_SETTLE_DELAY_S; the same request
    again re-reads it rather than refunding again."""
    app = create_app(api_settings(db_url, sepa_settle_delay_s=0), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    async with client_for(app) as client:
        account = await make_account(client)
        invoice_id = insert_bill(db_url, account, 2379)
        payment_id = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
        headers = {**FINANCE, **key()}
        first = await client.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "5.00"))
        assert (first.status_code, first.json()["status"]) == (201, "pending")
        again = await client.post(REFUND_PATH, headers=headers, json=refund_body(account, payment_id, "5.00"))
        assert (again.status_code, again.json()["id"], again.json()["status"]) == (200, first.json()["id"], "succeeded")
        assert app.state.payment_gateway[1].refunds_created == 1
    assert refund_events(db_url, first.json()["id"]) == [("RefundCreateEvent", "pending"), ("RefundStateChangeEvent", "succeeded")]
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1879)


async def test_with_temporal_down_the_reopened_debt_reaches_the_workflow_through_the_outbox(db_url, temporal_env, temporal_client,
                                                                                            unused_tcp_port) -> None:
    app = create_app(api_settings(db_url, temporal_address=f"127.0.0.1:{unused_tcp_port}"))  # nothing listens there
    async with client_for(app) as api:
        account = await make_account(api)
        insert_bill(db_url, account, 2379)
        payment_id = insert_payment(db_url, account, 2379)
        response = await api.post(REFUND_PATH, headers={**FINANCE, **key()}, json=refund_body(account, payment_id, "23.79"))
    assert response.status_code == 201  # booked; the signal is owed by the outbox
    workflow_id = f"billing-account-{account['id']}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    with session_scope(db_url) as session:
        [message] = [m for m in session.exec(select(OutboxMessage).where(OutboxMessage.topic == PAYMENT_RESULT_TOPIC))
                     if m.payload.get("paymentId") == payment_id]
    assert message.delivered_at is None

    handler = workflow_handlers(WorkflowGateway(temporal_env.client, TASK_QUEUE))[PAYMENT_RESULT_TOPIC]
    assert await OutboxRelay(db_url, {PAYMENT_RESULT_TOPIC: handler}).deliver_due() >= 1
    signals = [p[0] for name, p in await signals_received(temporal_client, workflow_id) if name == "payment_received"]
    assert signals == [{"payment_id": payment_id, "amount_cents": 0, "source": "refund"}]
    with session_scope(db_url) as session:
        assert session.get(OutboxMessage, message.id).delivered_at is not None
