"""TMF678 customer bills: read-only views of issued invoices (invoices are issued by the billing
workflow and are immutable, GoBD)."""
from __future__ import annotations

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from persistence.tables import Invoice
from services.errors import NotFound
from services.query import Page, paginate


def get_bill(session: Session, invoice_id: str) -> Invoice:
    row = session.get(Invoice, invoice_id)
    if row is None:
        raise NotFound("customerBill", invoice_id)
    return row


def bill_pdf(session: Session, invoice_id: str) -> tuple[str, bytes]:
    """(invoice number, PDF bytes); NotFound when the bill or its document does not exist."""
    row = get_bill(session, invoice_id)
    if row.pdf is None:
        raise NotFound("billDocument", invoice_id)
    return row.number, row.pdf


def list_bills(session: Session, *, billing_account_id: str | None, state: str | None, limit: int, offset: int) -> Page[tuple[Invoice, bool]]:
    """Pages of (invoice, has_pdf). The PDF bytes are not loaded for a list; only whether there is one."""
    statement = (
        select(Invoice, col(Invoice.pdf).is_not(None).label("has_pdf"))
        .options(defer(Invoice.pdf))
        .order_by(col(Invoice.issued_at).desc(), Invoice.id)
    )
    if billing_account_id is not None:
        statement = statement.where(Invoice.billing_account_id == billing_account_id)
    if state is not None:
        statement = statement.where(Invoice.state == state)
    page = paginate(session, statement, limit, offset)
    return Page(items=[(invoice, bool(has_pdf)) for invoice, has_pdf in page.items], total=page.total)
