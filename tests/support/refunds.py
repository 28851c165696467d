"""Helpers for refund and chargeback tests: an issued bill and a payment that settled it, as the ledger leaves them."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

from sqlmodel import select

from activities.ledger import allocate_payments
from persistence.db import session_scope
from persistence.tables import HubEvent, Invoice, OutboxMessage, Payment, PendingOneTimeCharge, Refund


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def insert_bill(db_url: str, account: dict, gross_cents: int = 2379, *, due_day: int = 15, state: str = "sent") -> str:
    invoice_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Invoice(
            id=invoice_id, number=f"R-2026-{uuid.uuid4().hex[:8]}", billing_account_id=account["id"],
            customer_id=account["relatedParty"][0]["id"], state=state,
            period_start=utc(2026, 1, 31, 23), period_end=utc(2026, 2, 28, 23),
            local_period_start=date(2026, 2, 1), local_period_end=date(2026, 3, 1),
            issued_at=utc(2026, 3, 1, 6), due_at=utc(2026, 3, due_day, 6),
            net_cents=gross_cents - 380, vat_cents=380, gross_cents=gross_cents, lines=[], vat_breakdown=[],
        ))
    return invoice_id


def insert_payment(db_url: str, account: dict, amount_cents: int, *, method: str = "bank_transfer", status: str = "succeeded",
                   gateway_payment_id: str | None = None, allocate: bool = True) -> str:
    """A payment as the ledger leaves it: allocated to the account's open bills, oldest first."""
    payment_id = f"pay-{uuid.uuid4().hex[:12]}"
    with session_scope(db_url) as session:
        session.add(Payment(id=payment_id, correlator_id=payment_id, billing_account_id=account["id"], amount_cents=amount_cents,
                            currency="EUR", method=method, status=status, gateway_payment_id=gateway_payment_id, recorded_by="test",
                            created_at=datetime.now(timezone.utc)))
    if allocate:
        with session_scope(db_url) as session:
            allocate_payments(session, account["id"])
    return payment_id


def bill(db_url: str, invoice_id: str) -> Invoice:
    with session_scope(db_url) as session:
        return session.get(Invoice, invoice_id)


def payment(db_url: str, payment_id: str) -> Payment:
    with session_scope(db_url) as session:
        return session.get(Payment, payment_id)


def refund_row(db_url: str, refund_id: str) -> Refund:
    with session_scope(db_url) as session:
        return session.get(Refund, refund_id)


def bill_states(db_url: str, invoice_id: str) -> list[str]:
    """The states the CustomerBillStateChangeEvents of a bill announced, in order."""
    with session_scope(db_url) as session:
        rows = session.exec(select(HubEvent).where(HubEvent.resource_key == f"customerBill:{invoice_id}",
                                                   HubEvent.event_type == "CustomerBillStateChangeEvent").order_by(HubEvent.sequence)).all()
        return [r.state for r in rows]


def refund_events(db_url: str, refund_id: str) -> list[tuple[str, str]]:
    with session_scope(db_url) as session:
        rows = session.exec(select(HubEvent).where(HubEvent.resource_key == f"refund:{refund_id}").order_by(HubEvent.sequence)).all()
        return [(r.event_type, r.state) for r in rows]


def results_for(db_url: str, payment_id: str) -> list[dict]:
    """payment.result outbox payloads about a payment (status reversed / restored for refunds and chargebacks)."""
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.topic == "payment.result").order_by(OutboxMessage.id)).all()
        return [m.payload for m in rows if m.payload.get("paymentId") == payment_id]


def fees_of(db_url: str, account_id: str) -> list[PendingOneTimeCharge]:
    with session_scope(db_url) as session:
        return list(session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.billing_account_id == account_id)))
