"""Credit notes (Rechnungskorrektur / Stornorechnung): negative documents in their own gapless series that
name the invoice they correct, computed with the invoice's EN 16931 rounding, never more than is left to
credit, and booked through the ledger: first against the invoice if it is open, the rest as account credit."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlmodel import select

from activities.invoice_issuer import DocumentRefused, creditable
from activities.ledger import allocate_payments, balance
from persistence.db import session_scope
from persistence.tables import Invoice, Payment, PaymentAllocation
from tests.billing.support import at, credit, invoice, issue, ledger_entry, new_account
from tests.documents.test_invoice_pdf import pdf_text


def test_full_credit_of_an_unpaid_invoice_negates_it_and_settles_it(db_url):
    account = new_account(db_url)
    original = issue(db_url, account, at(2110), "9.99", "0.27")  # 10.26 net + 1.95 VAT = 12.21
    note, entry = credit(db_url, original.id, at(2110, 3), reason="Contract cancelled within the withdrawal period")

    assert note.number == "CN-2110-000001" and note.kind == "credit_note" and note.state == "settled"
    assert (note.net_cents, note.vat_cents, note.gross_cents) == (-1026, -195, -1221)
    assert [(l["line_no"], l["credited_line_no"], l["net_amount"], l["kind"]) for l in note.lines] == [(1, 1, "-9.99", "credit"), (2, 2, "-0.27", "credit")]
    assert note.vat_breakdown == [{"vat_category": "S", "vat_rate": "19", "taxable_amount": "-10.26", "tax_amount": "-1.95"}]
    assert (note.referenced_invoice_id, note.referenced_invoice_number, str(note.referenced_invoice_date)) == (original.id, original.number, "2110-02-01")
    text = pdf_text(note.pdf)
    assert "Stornorechnung / Credit note CN-2110-000001" in text
    assert f"Korrektur der Rechnung {original.number} vom 01.02.2110" in text
    assert "Grund / Reason: Contract cancelled within the withdrawal period" in text
    assert "-12,21 €" in text and "Gutschriftsbetrag / Total credited" in text

    # The ledger: a credit_note entry that settles the invoice; nothing is open, nothing left as credit.
    assert (entry.method, entry.status, entry.amount_cents, entry.allocated_cents, entry.invoice_id) == ("credit_note", "succeeded", 1221, 1221, original.id)
    settled = invoice(db_url, original.id)
    assert (settled.state, settled.paid_cents) == ("settled", 1221)
    with session_scope(db_url) as session:
        assert balance(session, account).open_cents == 0
        assert creditable(session, settled).gross_cents == 0
    with pytest.raises(DocumentRefused) as refused:
        credit(db_url, original.id, at(2110, 4))
    assert refused.value.code == "nothing_left_to_credit"


def test_partial_credit_rounds_like_an_invoice_and_reduces_what_is_open(db_url):
    account = new_account(db_url)
    original = issue(db_url, account, at(2111), "9.99", "5.00")  # 14.99 net, 2.85 VAT, 17.84
    note, entry = credit(db_url, original.id, at(2111, 1), (1, "3.33"), reason="Outage 3 days")
    # 3.33 net at 19 %: 0.6327 VAT, rounded once per rate to 0.63 (EN 16931).
    assert (note.net_cents, note.vat_cents, note.gross_cents) == (-333, -63, -396)
    assert [(l["credited_line_no"], l["net_amount"], l["quantity"]) for l in note.lines] == [(1, "-3.33", "-1")]
    assert "Rechnungskorrektur / Credit note CN-2111-000001" in pdf_text(note.pdf)
    opened = invoice(db_url, original.id)
    assert (opened.state, opened.paid_cents, opened.gross_cents - opened.paid_cents) == ("partiallyPaid", 396, 1784 - 396)
    with session_scope(db_url) as session:
        left = creditable(session, opened)
    assert left.lines == {1: Decimal("6.66"), 2: Decimal("5.00")} and left.gross_cents == 1784 - 396

    # More than is left on the line is refused, and nothing is issued or booked.
    with pytest.raises(DocumentRefused) as refused:
        credit(db_url, original.id, at(2111, 2), (1, "6.67"))
    assert refused.value.code == "credit_exceeds_remaining" and refused.value.conflict
    for items, code in ((((9, None),), "unknown_bill_line"), (((2, "1.00"), (2, "1.00")), "duplicate_bill_line")):
        with pytest.raises(DocumentRefused) as refused:
            credit(db_url, original.id, at(2111, 2), *items)
        assert refused.value.code == code and not refused.value.conflict

    # The rest in full ("everything still creditable"): the two notes together credit exactly the invoice.
    rest, _ = credit(db_url, original.id, at(2111, 3), reason="Cancelled")
    assert [(l["credited_line_no"], l["net_amount"]) for l in rest.lines] == [(1, "-6.66"), (2, "-5.00")]
    assert note.gross_cents + rest.gross_cents == -original.gross_cents
    assert (invoice(db_url, original.id).state, rest.number) == ("settled", "CN-2111-000002")


def test_credit_on_a_paid_invoice_becomes_account_credit_for_the_next_invoice(db_url):
    account = new_account(db_url)
    paid = issue(db_url, account, at(2112), "20.00")  # 23.80
    with session_scope(db_url) as session:
        session.add(Payment(id=f"card-{paid.id}", correlator_id=f"card-{paid.id}", billing_account_id=account, invoice_id=paid.id,
                            amount_cents=2380, method="card", status="succeeded", created_at=at(2112, 1)))
    with session_scope(db_url) as session:
        allocate_payments(session, account)
    assert invoice(db_url, paid.id).state == "settled"

    note, entry = credit(db_url, paid.id, at(2112, 2), (1, "10.00"), reason="Price error")
    assert note.gross_cents == -1190
    assert (entry.amount_cents, entry.allocated_cents) == (1190, 0)  # nothing open on the invoice: all of it is credit
    assert invoice(db_url, paid.id).paid_cents == 2380
    with session_scope(db_url) as session:
        assert balance(session, account).open_cents == -1190

    # The next invoice takes the credit first (activities.ledger, oldest open item first).
    following = issue(db_url, account, at(2112, 30), "30.00")  # 35.70
    with session_scope(db_url) as session:
        view = allocate_payments(session, account)
    assert view.open_cents == 3570 - 1190
    assert (invoice(db_url, following.id).state, invoice(db_url, following.id).paid_cents) == ("partiallyPaid", 1190)
    assert ledger_entry(db_url, note.id).allocated_cents == 1190
    with session_scope(db_url) as session:
        allocations = session.exec(select(PaymentAllocation).where(PaymentAllocation.payment_id == entry.id)).all()
    assert [(a.invoice_id, a.amount_cents) for a in allocations] == [(following.id, 1190)]


def test_a_draft_and_a_credit_note_cannot_be_credited(db_url):
    account = new_account(db_url, hold=True)
    draft = issue(db_url, account, at(2113), "5.00", hold=True)
    with pytest.raises(DocumentRefused) as refused:
        credit(db_url, draft.id, at(2113, 1))
    assert refused.value.code == "bill_not_issued"
    issued = issue(db_url, account, at(2113, 2), "5.00")
    note, _ = credit(db_url, issued.id, at(2113, 3), (1, "1.00"))
    with pytest.raises(DocumentRefused) as refused:
        credit(db_url, note.id, at(2113, 4))
    assert refused.value.code == "not_an_invoice"


def test_the_same_key_gives_the_same_credit_note(db_url):
    original = issue(db_url, new_account(db_url), at(2114), "8.00")
    first, _ = credit(db_url, original.id, at(2114, 1), (1, "1.00"), key="k-2114")
    again, entry = credit(db_url, original.id, at(2114, 2), (1, "1.00"), key="k-2114")
    assert (again.id, again.number) == (first.id, first.number) and entry.amount_cents == 119
    with session_scope(db_url) as session:
        assert len(session.exec(select(Invoice).where(Invoice.referenced_invoice_id == original.id)).all()) == 1


def test_two_concurrent_full_credits_of_one_invoice_credit_it_once(db_url):
    original = issue(db_url, new_account(db_url), at(2115), "40.00")
    start = threading.Barrier(2)

    def full_credit(_index: int):
        start.wait()
        try:
            return credit(db_url, original.id, at(2115, 1))[0].number
        except DocumentRefused as refused:
            return refused.code

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(full_credit, range(2)))
    assert outcomes == ["CN-2115-000001", "nothing_left_to_credit"]
    assert invoice(db_url, original.id).paid_cents == original.gross_cents
