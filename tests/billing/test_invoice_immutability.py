"""GoBD: an issued invoice's content never changes; only its state and settled amount move. The ORM refuses
any other change (and any delete) of a numbered document, whichever code path tries it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from activities.invoice_issuer import approve_invoice, move_invoice
from o2c_cli.verify_invoices import run
from persistence.db import session_scope
from persistence.tables import ImmutableDocumentError, Invoice
from tests.billing.support import at, invoice, issue, new_account, settings_for


def test_content_of_an_issued_invoice_cannot_change(db_url):
    doc = issue(db_url, new_account(db_url), at(2100))
    for field, value in (("gross_cents", doc.gross_cents + 1), ("number", "INV-2100-999999"), ("due_at", doc.due_at + timedelta(days=1)),
                         ("lines", []), ("currency", "USD"), ("pdf", b"%PDF-forged"), ("content_hash", "0" * 64)):
        with pytest.raises(ImmutableDocumentError, match="INV-2100-000001 is issued"):
            with session_scope(db_url) as session:
                row = session.get(Invoice, doc.id)
                setattr(row, field, value)
                session.add(row)
    stored = invoice(db_url, doc.id)
    assert (stored.gross_cents, stored.number, stored.lines, stored.content_hash) == (doc.gross_cents, doc.number, doc.lines, doc.content_hash)


def test_state_and_paid_amount_move(db_url):
    doc = issue(db_url, new_account(db_url), at(2101))
    with session_scope(db_url) as session:
        row = session.get(Invoice, doc.id)
        move_invoice(row, state="partiallyPaid", paid_cents=500)
        session.add(row)
    with session_scope(db_url) as session:  # as activities.ledger does it, attribute by attribute
        row = session.get(Invoice, doc.id)
        row.paid_cents, row.state = row.gross_cents, "settled"
        session.add(row)
    stored = invoice(db_url, doc.id)
    assert (stored.state, stored.paid_cents) == ("settled", doc.gross_cents)
    with pytest.raises(ValueError):
        move_invoice(stored, state="paid")
    # Moving state does not touch the sealed content.
    assert run(db_url, out=_Null()) == 0


def test_issued_documents_are_never_deleted_nor_bulk_updated(db_url):
    doc = issue(db_url, new_account(db_url), at(2102))
    with pytest.raises(ImmutableDocumentError, match="cannot be deleted"):
        with session_scope(db_url) as session:
            session.delete(session.get(Invoice, doc.id))
    with pytest.raises(ImmutableDocumentError, match="row by row"):
        with session_scope(db_url) as session:
            session.exec(update(Invoice).where(Invoice.id == doc.id).values(gross_cents=1))
    with pytest.raises(ImmutableDocumentError, match="row by row"):
        with session_scope(db_url) as session:
            session.exec(delete(Invoice).where(Invoice.id == doc.id))
    assert invoice(db_url, doc.id).gross_cents == doc.gross_cents


def test_a_draft_is_open_until_approval_numbers_and_freezes_it(db_url):
    account = new_account(db_url, hold=True)
    draft = issue(db_url, account, at(2103), "20.00", hold=True)
    assert (draft.state, draft.number, draft.pdf, draft.content_hash, draft.chain_seq) == ("onHold", None, None, None, None)
    # A draft is not an issued document yet: it may still be corrected.
    with session_scope(db_url) as session:
        row = session.get(Invoice, draft.id)
        row.due_at = row.due_at + timedelta(days=1)
        session.add(row)
    approved_at = at(2103, 5)
    with session_scope(db_url) as session:
        approved, changed = approve_invoice(session, settings_for(db_url), draft.id, approved_at)
    assert changed and approved.number == "INV-2103-000001" and approved.state == "validated"
    # Issue date is the approval; the due date keeps the draft's payment terms (14 days + the corrected day).
    assert (approved.issued_at, approved.due_at) == (approved_at, approved_at + timedelta(days=15))
    assert approved.pdf.startswith(b"%PDF") and approved.content_hash
    with pytest.raises(ImmutableDocumentError):
        with session_scope(db_url) as session:
            row = session.get(Invoice, draft.id)
            row.due_at = row.due_at + timedelta(days=1)
            session.add(row)
    with session_scope(db_url) as session:
        again, changed = approve_invoice(session, settings_for(db_url), draft.id, at(2103, 9))
    assert not changed and again.number == "INV-2103-000001" and again.issued_at == approved_at
    assert run(db_url, out=_Null()) == 0


class _Null:
    def write(self, _text: str) -> int:
        return 0
