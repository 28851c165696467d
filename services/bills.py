"""TMF678 customer bills: read views of issued invoices and credit notes (issued documents are
immutable, GoBD), staff approval of onHold drafts, and the account's invoice hold setting.

Telling the account's workflow (approval, credit note, on-demand bill) happens after the
transaction: the change is stored whatever Temporal does, and the workflow also finds an approval
it was not told about at its next cycle close."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select
from temporalio.service import RPCError

from activities.invoice_issuer import DocumentRefused, approve_invoice
from config.settings import Settings
from domain.money import from_minor
from persistence.tables import BillingAccount, BusinessEvent, Invoice
from services.errors import Conflict, Invalid, NotFound, Unavailable, field_error
from services.query import Page, paginate, run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import SIGNAL_INVOICE_APPROVED, InvoiceApproved, billing_account_workflow_id

log = logging.getLogger(__name__)


def get_bill(session: Session, invoice_id: str) -> Invoice:
    row = session.get(Invoice, invoice_id)
    if row is None:
        raise NotFound("customerBill", invoice_id)
    return row


class DocumentNotReady(Conflict):
    def __init__(self, invoice_id: str) -> None:
        super().__init__(f"bill {invoice_id} is numbered; its document is being rendered and sealed, ask again in a few seconds",
                         code="document_not_ready")


def bill_pdf(session: Session, invoice_id: str) -> tuple[str, bytes]:
    """(invoice number, PDF bytes); NotFound when the bill or its document does not exist."""
    row = get_bill(session, invoice_id)
    if row.number is not None and row.pdf is None and row.state != "onHold":
        # Numbered first, rendered and sealed right after (outside the document-chain lock): seconds away.
        raise DocumentNotReady(invoice_id)
    if row.pdf is None or row.number is None:
        raise NotFound("billDocument", invoice_id)
    return row.number, row.pdf


def bill_xml(session: Session, invoice_id: str) -> tuple[str, bytes]:
    """(invoice number, EN 16931 CII XML bytes: Factur-X or XRechnung); NotFound when the bill has none
    (an onHold draft, or a document issued before migration 0011)."""
    row = get_bill(session, invoice_id)
    if row.number is not None and row.xml is None and row.pdf is None:
        raise DocumentNotReady(invoice_id)
    if row.xml is None or row.number is None:
        raise NotFound("billDocument", invoice_id)
    return row.number, row.xml


def list_bills(
    session: Session, *, billing_account_id: str | None, state: str | None, limit: int, offset: int,
    category: str | None = None, credited_bill_id: str | None = None,
) -> Page[tuple[Invoice, bool, bool]]:
    """Pages of (invoice, has_pdf, has_xml). The document bytes are not loaded for a list; only whether there are any."""
    statement = (
        select(Invoice, col(Invoice.pdf).is_not(None).label("has_pdf"), col(Invoice.xml).is_not(None).label("has_xml"))
        .options(defer(Invoice.pdf), defer(Invoice.xml))
        .order_by(col(Invoice.issued_at).desc(), Invoice.id)
    )
    if billing_account_id is not None:
        statement = statement.where(Invoice.billing_account_id == billing_account_id)
    if state is not None:
        statement = statement.where(Invoice.state == state)
    if category == "creditNote":
        statement = statement.where(Invoice.kind == "credit_note")
    elif category == "normal":
        statement = statement.where(Invoice.kind != "credit_note")
    if credited_bill_id is not None:
        statement = statement.where(Invoice.referenced_invoice_id == credited_bill_id)
    page = paginate(session, statement, limit, offset)
    return Page(items=[(invoice, bool(has_pdf), bool(has_xml)) for invoice, has_pdf, has_xml in page.items], total=page.total)


def refused(error: DocumentRefused) -> Exception:
    """A refused document request as the service error the API maps: 409 for the bill's state, 422 for the request."""
    if error.conflict:
        return Conflict(error.message, code=error.code)
    return Invalid([field_error(error.field or "body", error.code, error.message)], error.message, code=error.code)


# --- approval of onHold drafts ------------------------------------------------------------------


def approve_bill(session: Session, settings: Settings, invoice_id: str, target_state: str, approved_by: str,
                 approved_at: datetime | None = None) -> tuple[Invoice, bool]:
    """PATCH customerBill {state}: the only change a client may make is validating an onHold draft, which
    gives it its gapless number now. (bill, changed); validating a validated bill again changes nothing."""
    row = get_bill(session, invoice_id)
    if target_state != "validated":
        raise Invalid([field_error("state", "state_not_settable", "only \"validated\" can be set, to approve an onHold bill")],
                      code="state_not_settable")
    if row.kind == "credit_note":
        raise Conflict("a credit note is issued at once; it has nothing to approve", code="invalid_state_transition")
    if row.number is not None:
        if row.state == "validated":
            return row, False
        raise Conflict(f"{row.number} is {row.state}; only an onHold bill can be validated", code="invalid_state_transition")
    try:
        invoice, changed = approve_invoice(session, settings, invoice_id, approved_at or utcnow())
    except DocumentRefused as error:
        raise refused(error) from error
    session.add(BusinessEvent(
        customer_id=invoice.customer_id, billing_account_id=invoice.billing_account_id, kind="invoice.approved",
        message=f"Invoice draft approved by {approved_by}: issued as {invoice.number} over {from_minor(invoice.gross_cents)} "
                f"{invoice.currency}, due {invoice.due_at:%Y-%m-%d %H:%M} UTC",
        data={"invoiceId": invoice.id, "number": invoice.number, "approvedBy": approved_by}, at=invoice.issued_at,
    ))
    return invoice, changed


async def tell_account(workflows: LazyWorkflows, billing_account_id: str, what: str,
                       send: Callable[[object], Awaitable[None]]) -> bool:
    """Signal the account's workflow; False (logged) when it cannot be reached: the change is stored anyway."""
    try:
        await workflows.call(send)
        return True
    except Unavailable as exc:
        log.warning("%s stored; the account workflow was not told (%s)", what, exc.message)
    except RPCError as exc:
        if is_not_found(exc):
            log.info("%s stored; billing account %s has no running workflow", what, billing_account_id)
        else:
            log.warning("%s stored; signalling the account workflow failed: %s", what, exc)
    return False


def signal(billing_account_id: str, name: str, payload: BaseModel) -> Callable[[object], Awaitable[None]]:
    def send(gateway) -> Awaitable[None]:
        return gateway.client.get_workflow_handle(billing_account_workflow_id(billing_account_id)).signal(name, payload)

    return send


async def submit_approval(db_url: str, settings: Settings, workflows: LazyWorkflows, invoice_id: str, target_state: str, approved_by: str) -> Invoice:
    invoice, changed = await run_tx(db_url, lambda s: approve_bill(s, settings, invoice_id, target_state, approved_by))
    if changed:
        await tell_account(workflows, invoice.billing_account_id, f"approval of {invoice.number}",
                           signal(invoice.billing_account_id, SIGNAL_INVOICE_APPROVED, InvoiceApproved(invoice_id=invoice.id)))
    return invoice


# --- the invoice hold ---------------------------------------------------------------------------


def get_invoice_hold(session: Session, account_id: str) -> BillingAccount:
    account = session.get(BillingAccount, account_id)
    if account is None:
        raise NotFound("billingAccount", account_id)
    return account


def set_invoice_hold(session: Session, account_id: str, hold: bool, changed_by: str) -> BillingAccount:
    """While on, cycle invoices wait as onHold drafts for approval. Turning it off releases nothing by
    itself: drafts already held still wait for their approval."""
    account = get_invoice_hold(session, account_id)
    if account.invoice_hold != hold:
        account.invoice_hold = hold
        session.add(account)
        session.add(BusinessEvent(
            customer_id=account.customer_id, billing_account_id=account.id, kind="invoice.hold_changed",
            message=f"Invoice hold turned {'on' if hold else 'off'} by {changed_by}", data={"invoiceHold": hold}, at=utcnow(),
        ))
    return account
