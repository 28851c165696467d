"""Stripe early fraud inquiries (dispute statuses warning_*) over the real app, the real SDK and the fake Stripe, on
both databases: recorded and shown, but no money taken back and no fee until the inquiry escalates to a dispute."""
from __future__ import annotations

from tests.api.conftest import FINANCE
from tests.api.test_refund_dispute_webhooks import (  # noqa: F401 - fixtures
    REFUND_PATH, gateway, http, paid_bill, stripe_app,
)
from tests.api.test_stripe_webhooks import deliver, event_of
from tests.support.refunds import bill, fees_of, refund_row, results_for


async def shown(http, payment_id: str) -> list[dict]:
    response = await http.get(REFUND_PATH, params={"payment.id": payment_id}, headers=FINANCE)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_inquiry_that_closes_takes_nothing_back(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    inquiry = fake_stripe.open_dispute(pi, status="warning_needs_response")
    opened = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.created"))
    assert (opened.status_code, opened.json()["result"], opened.json()["status"]) == (200, "applied", "warning_needs_response")

    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    assert fees_of(db_url, account["id"]) == []
    assert "reversed" not in [r["status"] for r in results_for(db_url, payment_id)]  # the account's workflow is not woken
    [record] = await shown(http, payment_id)
    assert (record["@type"], record["status"], record["disputeStatus"], record["reversed"], record["chargebackFee"]["value"]) == (
        "Chargeback", "inquiry", "warning_needs_response", False, "0.00")
    money = (await http.get(f"/tmf-api/paymentManagement/v4/payment/{payment_id}", headers=FINANCE)).json()
    assert (money["chargedBackAmount"]["value"], money["refundableAmount"]["value"]) == ("0.00", "23.79")

    fake_stripe.close_dispute(inquiry["id"])
    closed = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.closed"))
    assert (closed.json()["result"], closed.json()["status"]) == ("applied", "warning_closed")
    row = refund_row(db_url, record["id"])
    assert (row.status, row.dispute_status, row.reversed, row.fee_cents) == ("inquiryClosed", "warning_closed", False, 0)
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    assert fees_of(db_url, account["id"]) == []

    # A refund of the whole payment is still possible: the inquiry held nothing.
    refund = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-inq-{pi}"},
                             json={"account": {"id": account["id"]}, "payment": {"id": payment_id},
                                   "totalAmount": {"unit": "EUR", "value": "23.79"}, "reason": "goodwill"})
    assert refund.status_code == 201, refund.text


async def test_an_inquiry_that_escalates_becomes_a_chargeback_once(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    inquiry = fake_stripe.open_dispute(pi, status="warning_under_review")
    created = event_of(fake_stripe, inquiry["id"], "charge.dispute.created")
    assert (await deliver(http, fake_stripe, created)).json()["status"] == "warning_under_review"
    assert bill(db_url, invoice_id).state == "settled"

    fake_stripe.escalate_dispute(inquiry["id"])  # the same dispute object moves on to needs_response
    withdrawn = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.funds_withdrawn"))
    assert (withdrawn.json()["result"], withdrawn.json()["status"]) == ("applied", "needs_response")
    updated = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.updated"))
    assert updated.json()["result"] == "unchanged"
    assert (await deliver(http, fake_stripe, created)).json()["result"] == "duplicate"

    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)
    [fee] = fees_of(db_url, account["id"])
    assert (fee.key, fee.amount_cents) == (f"chargeback-fee:{inquiry['id']}", 1500)
    [record] = await shown(http, payment_id)
    assert (record["status"], record["disputeStatus"], record["reversed"], record["totalAmount"]["value"]) == (
        "succeeded", "needs_response", True, "23.79")
    assert [r["status"] for r in results_for(db_url, payment_id) if r.get("refundId") == record["id"]] == ["reversed"]

    fake_stripe.close_dispute(inquiry["id"], won=True)
    won = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.closed"))
    assert won.json()["status"] == "won"
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("settled", 2379)
    assert len(fees_of(db_url, account["id"])) == 1


async def test_an_escalated_inquiry_read_late_is_charged_back_from_its_first_event(http, fake_stripe, gateway, db_url) -> None:
    """Events are hints: the first one delivered after the escalation re-reads needs_response and books the chargeback."""
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    inquiry = fake_stripe.open_dispute(pi, status="warning_needs_response")
    fake_stripe.escalate_dispute(inquiry["id"])
    first = await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.created"))
    assert (first.json()["result"], first.json()["status"]) == ("applied", "needs_response")
    assert (bill(db_url, invoice_id).state, len(fees_of(db_url, account["id"]))) == ("sent", 1)


async def test_a_new_dispute_after_a_closed_inquiry_is_a_chargeback(http, fake_stripe, gateway, db_url) -> None:
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    inquiry = fake_stripe.open_dispute(pi, status="warning_needs_response")
    fake_stripe.close_dispute(inquiry["id"])
    assert (await deliver(http, fake_stripe, event_of(fake_stripe, inquiry["id"], "charge.dispute.closed"))).json()["status"] == "warning_closed"
    assert bill(db_url, invoice_id).state == "settled"
    dispute = fake_stripe.open_dispute(pi)
    assert (await deliver(http, fake_stripe, event_of(fake_stripe, dispute["id"], "charge.dispute.created"))).json()["status"] == "needs_response"
    assert (bill(db_url, invoice_id).state, [f.key for f in fees_of(db_url, account["id"])]) == ("sent", [f"chargeback-fee:{dispute['id']}"])
    assert sorted((r["status"], r["reversed"]) for r in await shown(http, payment_id)) == [("inquiryClosed", False), ("succeeded", True)]
