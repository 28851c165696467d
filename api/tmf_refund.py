"""TMF676 Refund as o2c shows it: a refund given by finance, or a chargeback taken by the payer's bank."""
from __future__ import annotations

from typing import Any

from api.tmf import PAYMENT_API, account_ref, iso, money_cents, payment, ref
from domain.payments import is_received_money
from persistence.tables import Payment, Refund

REFUND_TYPE = {"refund": "Refund", "chargeback": "Chargeback"}


def refund_href(refund_id: str) -> str:
    return f"{PAYMENT_API}/refund/{refund_id}"


def refund(row: Refund) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "href": refund_href(row.id),
        "@type": REFUND_TYPE.get(row.kind, "Refund"),
        "@baseType": "Refund",
        "correlatorId": row.correlator_id,
        "status": row.status,
        "statusDate": iso(row.updated_at),
        "refundDate": iso(row.created_at),
        "totalAmount": money_cents(row.amount_cents, row.currency),
        "account": account_ref(row.billing_account_id),
        "payment": ref("Payment", f"{PAYMENT_API}/payment/{row.payment_id}", row.payment_id),
        "paymentMethod": {"@type": "gateway" if row.method == "gateway" else "manual"},
        "description": row.reason,
        # o2c extensions
        "reason": row.reason,
        "reversed": row.reversed,
        "reversal": row.reversal,
        "recordedBy": row.recorded_by,
    }
    if row.gateway_refund_id:
        body["gatewayRefundId"] = row.gateway_refund_id
    if row.failure_reason:
        body["failureReason"] = row.failure_reason
    if row.kind == "chargeback":
        body["disputeId"] = row.dispute_id
        body["disputeStatus"] = row.dispute_status
        body["chargebackFee"] = money_cents(row.fee_cents, row.currency)
    return body


def payment_with_money_back(row: Payment, money_back: list[Refund]) -> dict[str, Any]:
    """TMF676 Payment (api.tmf.payment) with what went back from it (o2c extensions): `refundedAmount` (refunds
    that hold money: succeeded or still pending at the gateway, as Stripe's `amount_refunded` counts them),
    `chargedBackAmount` (chargebacks not won back), `refundableAmount` (what is left to refund; 0 for
    ledger entries that are no money received), and `refund`:
    a link to each refund and chargeback of it, failed ones included, oldest first."""
    body = payment(row)
    refunded = sum(r.amount_cents for r in money_back if r.kind == "refund" and r.reversed)
    charged_back = sum(r.amount_cents for r in money_back if r.kind == "chargeback" and r.reversed)
    body["refundedAmount"] = money_cents(refunded, row.currency)
    body["chargedBackAmount"] = money_cents(charged_back, row.currency)
    refundable = row.status == "succeeded" and is_received_money(row.method)  # a write-off or credit note gives nothing back
    body["refundableAmount"] = money_cents(row.amount_cents - refunded - charged_back if refundable else 0, row.currency)
    body["refund"] = [{**ref(REFUND_TYPE.get(r.kind, "Refund"), refund_href(r.id), r.id), "status": r.status,
                       "amount": money_cents(r.amount_cents, r.currency)} for r in money_back]
    return body
