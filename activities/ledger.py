"""The account's ledger: allocating received payments to open invoices and reading the open balance."""
from __future__ import annotations

from sqlmodel import Session, select

from activities.order_records import utcnow
from domain.allocation import OpenItem, allocate
from persistence.tables import Invoice, Payment, PaymentAllocation
from workflows.messages import BalanceView, OpenInvoice

OPEN_STATES = ("new", "validated", "sent", "partiallyPaid")


def open_invoices(session: Session, billing_account_id: str) -> list[Invoice]:
    return list(
        session.exec(
            select(Invoice).where(Invoice.billing_account_id == billing_account_id, Invoice.state.in_(OPEN_STATES)).order_by(Invoice.due_at, Invoice.id)
        )
    )


def allocate_payments(session: Session, billing_account_id: str) -> BalanceView:
    """Applies every succeeded payment's unallocated rest to open invoices, oldest first.
    Running it twice changes nothing: allocations are remembered on the payment."""
    payments = session.exec(
        select(Payment)
        .where(Payment.billing_account_id == billing_account_id, Payment.status == "succeeded", Payment.allocated_cents < Payment.amount_cents)
        .order_by(Payment.created_at, Payment.id)
    ).all()
    invoices = {i.id: i for i in open_invoices(session, billing_account_id)}
    for payment in payments:
        items = [OpenItem(invoice_id=i.id, due_at=i.due_at, open_cents=i.gross_cents - i.paid_cents) for i in invoices.values()]
        allocations, _credit = allocate(payment.amount_cents - payment.allocated_cents, items)
        for allocation in allocations:
            invoice = invoices[allocation.invoice_id]
            invoice.paid_cents += allocation.amount_cents
            invoice.state = "settled" if invoice.paid_cents >= invoice.gross_cents else "partiallyPaid"
            session.add(invoice)
            existing = session.get(PaymentAllocation, (payment.id, invoice.id))
            if existing is None:
                session.add(PaymentAllocation(payment_id=payment.id, invoice_id=invoice.id, amount_cents=allocation.amount_cents, at=utcnow()))
            else:
                existing.amount_cents += allocation.amount_cents
                session.add(existing)
            payment.allocated_cents += allocation.amount_cents
        session.add(payment)
        if not payment.invoice_id and allocations:
            payment.invoice_id = allocations[0].invoice_id
    session.flush()
    return balance(session, billing_account_id)


def credit_cents(session: Session, billing_account_id: str) -> int:
    payments = session.exec(select(Payment).where(Payment.billing_account_id == billing_account_id, Payment.status == "succeeded")).all()
    return sum(p.amount_cents - p.allocated_cents for p in payments)


def balance(session: Session, billing_account_id: str) -> BalanceView:
    items = [
        OpenInvoice(invoice_id=i.id, number=i.number, open_cents=i.gross_cents - i.paid_cents, due_at=i.due_at)
        for i in open_invoices(session, billing_account_id)
        if i.gross_cents > i.paid_cents
    ]
    return BalanceView(open_cents=sum(i.open_cents for i in items) - credit_cents(session, billing_account_id), open_invoices=items)
