"""Credit notes (Rechnungskorrektur / Stornorechnung) issued by finance staff against an invoice.

The client's key (Idempotency-Key header or `correlatorId`) makes a request idempotent: the same key
with the same request returns the same credit note (200), with another request it is refused (409).
The document itself is made by activities.invoice_issuer.issue_credit_note, in this transaction."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from activities.invoice_issuer import CreditRequest, DocumentRefused, credit_note_id_for, issue_credit_note
from config.settings import Settings
from domain.money import from_minor
from persistence.tables import BusinessEvent, CreditNoteRequest, Invoice
from services.bills import refused, signal, tell_account
from services.errors import Conflict, NotFound
from services.query import run_tx, utcnow
from services.workflows import LazyWorkflows
from workflows.messages import SIGNAL_CREDIT_NOTE_ISSUED, CreditNoteIssued


@dataclass(frozen=True)
class CreditNoteOrder:
    invoice_id: str
    key: str
    request: CreditRequest
    issued_by: str

    @property
    def request_hash(self) -> str:
        body = {"invoice": self.invoice_id, "reason": self.request.reason,
                "items": [[i.line_no, None if i.net_amount is None else str(i.net_amount)] for i in self.request.items]}
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def create_credit_note(session: Session, settings: Settings, order: CreditNoteOrder, issued_at: datetime | None = None) -> tuple[Invoice, bool]:
    """(credit note, created). Refusals: 404 unknown bill; 409 `credit_exceeds_remaining`, `nothing_left_to_credit`,
    `bill_not_issued`, `idempotency_key_reused`; 422 `unknown_bill_line`, `duplicate_bill_line`, `not_an_invoice`."""
    known = session.get(CreditNoteRequest, order.key)
    if known is not None:
        if known.request_hash != order.request_hash:
            raise Conflict(f"key {order.key!r} already issued credit note {known.credit_note_id} for another request", code="idempotency_key_reused")
        return session.get(Invoice, known.credit_note_id), False
    if session.get(Invoice, order.invoice_id) is None:
        raise NotFound("customerBill", order.invoice_id)
    at = issued_at or utcnow()
    try:
        note, _ledger = issue_credit_note(session, settings, order.invoice_id, order.request, at,
                                          credit_note_id=credit_note_id_for(order.key), issued_by=order.issued_by)
    except DocumentRefused as error:
        raise refused(error) from error
    session.add(CreditNoteRequest(key=order.key, invoice_id=order.invoice_id, request_hash=order.request_hash, credit_note_id=note.id, created_at=at))
    session.add(BusinessEvent(
        customer_id=note.customer_id, billing_account_id=note.billing_account_id, kind="invoice.credited",
        message=f"Credit note {note.number} over {from_minor(-note.gross_cents)} {note.currency} issued by {order.issued_by} "
                f"for invoice {note.referenced_invoice_number}: {note.reason}",
        data={"creditNoteId": note.id, "number": note.number, "invoiceId": order.invoice_id}, at=at,
    ))
    return note, True


async def submit_credit_note(db_url: str, settings: Settings, workflows: LazyWorkflows, order: CreditNoteOrder) -> tuple[Invoice, bool]:
    note, created = await run_tx(db_url, lambda s: create_credit_note(s, settings, order))
    if created:
        # The workflow applies the credit (its balance and dunning follow) and e-mails the credit note.
        event = CreditNoteIssued(credit_note_id=note.id, invoice_id=order.invoice_id, amount_cents=-note.gross_cents)
        await tell_account(workflows, note.billing_account_id, f"credit note {note.number}",
                           signal(note.billing_account_id, SIGNAL_CREDIT_NOTE_ISSUED, event))
    return note, created
