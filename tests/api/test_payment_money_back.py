"""TMF676 payment with what went back from it (both backends): refundedAmount, chargedBackAmount, refundableAmount and
links to its refunds and chargebacks, on GET /payment/{id}, the list and a repeated POST."""
from __future__ import annotations

import uuid

from domain.payments import RefundOutcome
from persistence.db import session_scope
from services.refunds import apply_refund_outcome
from tests.api.conftest import FINANCE, PAYMENT_PATH, SUPPORT, make_account
from tests.support.refunds import insert_bill, insert_payment

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"


def eur(value: str) -> dict:
    return {"unit": "EUR", "value": value}


async def give_back(client, account: dict, payment_id: str, value: str, **extra) -> dict:
    body = {"account": {"id": account["id"]}, "payment": {"id": payment_id}, "totalAmount": eur(value), "reason": "goodwill", **extra}
    response = await client.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"}, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_payment_shows_what_was_refunded_and_charged_back(client, db_url) -> None:
    account = await make_account(client)
    insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 3000)
    untouched = await client.get(f"{PAYMENT_PATH}/{payment_id}", headers=SUPPORT)
    assert untouched.status_code == 200
    assert (untouched.json()["refundedAmount"], untouched.json()["chargedBackAmount"], untouched.json()["refundableAmount"],
            untouched.json()["refund"]) == (eur("0.00"), eur("0.00"), eur("30.00"), [])

    refund = await give_back(client, account, payment_id, "10.00")
    chargeback = await give_back(client, account, payment_id, "5.50", reason="SEPA return MD06", **{"@type": "Chargeback"})
    shown = (await client.get(f"{PAYMENT_PATH}/{payment_id}", headers=SUPPORT)).json()
    assert (shown["totalAmount"], shown["status"]) == (eur("30.00"), "succeeded")  # what was received stays as it was
    assert (shown["refundedAmount"], shown["chargedBackAmount"], shown["refundableAmount"]) == (eur("10.00"), eur("5.50"), eur("14.50"))
    assert shown["refund"] == [
        {"id": refund["id"], "href": f"{REFUND_PATH}/{refund['id']}", "@referredType": "Refund", "status": "succeeded", "amount": eur("10.00")},
        {"id": chargeback["id"], "href": f"{REFUND_PATH}/{chargeback['id']}", "@referredType": "Chargeback", "status": "succeeded",
         "amount": eur("5.50")},
    ]
    # The links lead to the refund records.
    followed = await client.get(shown["refund"][1]["href"], headers=SUPPORT)
    assert (followed.status_code, followed.json()["@type"], followed.json()["payment"]["id"]) == (200, "Chargeback", payment_id)

    listed = await client.get(PAYMENT_PATH, headers=SUPPORT, params={"account.id": account["id"]})
    assert listed.status_code == 200
    assert listed.json() == [shown]


async def test_a_failed_gateway_refund_is_linked_but_not_counted(client, db_url) -> None:
    account = await make_account(client)
    insert_bill(db_url, account, 2379)
    sepa = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    declined = insert_payment(db_url, account, 1000, method="card", status="declined", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}",
                              allocate=False)
    pending = await give_back(client, account, sepa, "20.00")
    assert pending["status"] == "pending"
    shown = (await client.get(f"{PAYMENT_PATH}/{sepa}", headers=SUPPORT)).json()
    assert (shown["refundedAmount"], shown["refundableAmount"]) == (eur("20.00"), eur("3.79"))  # pending money is on its way back

    with session_scope(db_url) as session:
        apply_refund_outcome(session, pending["id"], RefundOutcome(status="failed", gateway_refund_id=pending["gatewayRefundId"],
                                                                   amount_minor=2000, currency="EUR", failure_reason="account_closed"))
    shown = (await client.get(f"{PAYMENT_PATH}/{sepa}", headers=SUPPORT)).json()
    assert (shown["refundedAmount"], shown["chargedBackAmount"], shown["refundableAmount"]) == (eur("0.00"), eur("0.00"), eur("23.79"))
    assert [(r["id"], r["status"]) for r in shown["refund"]] == [(pending["id"], "failed")]

    never = (await client.get(f"{PAYMENT_PATH}/{declined}", headers=SUPPORT)).json()
    assert (never["status"], never["refundableAmount"], never["refund"]) == ("declined", eur("0.00"), [])


async def test_a_repeated_payment_post_shows_its_refunds(client, db_url) -> None:
    account = await make_account(client)
    body = {"correlatorId": f"bank-{uuid.uuid4()}", "account": {"id": account["id"]}, "totalAmount": eur("12.00"),
            "paymentMethod": {"@type": "bankTransfer"}, "description": "Überweisung"}
    first = await client.post(PAYMENT_PATH, headers=FINANCE, json=body)
    assert (first.status_code, first.json()["refundedAmount"], first.json()["refund"]) == (201, eur("0.00"), [])
    refund = await give_back(client, account, first.json()["id"], "2.00")
    again = await client.post(PAYMENT_PATH, headers=FINANCE, json=body)
    assert (again.status_code, again.json()["refundedAmount"], again.json()["refundableAmount"]) == (200, eur("2.00"), eur("10.00"))
    assert [r["id"] for r in again.json()["refund"]] == [refund["id"]]
