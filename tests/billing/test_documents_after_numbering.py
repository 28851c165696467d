"""Cycle invoices are numbered first (content final, gapless number, short transaction) and get their PDF,
XML and seal afterwards (`seal_documents`, outside any lock but the seal's), so the bill run never waits
for a PDF behind the chain lock. The chain, the gapless numbers and the content's immutability still hold.

Each test uses its own invoice year, as in test_document_chain.py, and leaves every document sealed."""
from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import select

from activities.billing import BillingActivities
from activities.invoice_issuer import (
    canonical_content,
    document_hash,
    issue_invoice,
    render_document,
    render_in_processes,
    seal_documents,
    unsealed_invoice_ids,
)
from adapters.documents.facturx import extract_facturx_xml
from adapters.notify.email import SmtpNotifier
from adapters.notify.mail_sink import MailSink
from domain.billing_cycle import BillingPeriod
from o2c_cli.verify_invoices import verify_documents
from persistence.db import session_scope
from persistence.tables import BillingAccount, Customer, HubEvent, ImmutableDocumentError, Invoice, Notification
from tests.billing.support import at, charge, invoice, issue, new_account, settings_for
from tests.documents.test_invoice_pdf import pdf_text


def issue_unsealed(db_url: str, account_id: str, when, *nets: str) -> Invoice:
    nets = nets or ("9.99", "0.27")
    period = BillingPeriod(start=when, end=when + timedelta(hours=1), local_start=when.date(), local_end=when.date() + timedelta(days=1))
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        return issue_invoice(session, settings_for(db_url), account, period, [charge(n, f"Line {i}") for i, n in enumerate(nets, 1)],
                             when, when + timedelta(days=14), documents_later=True)


def verified(db_url: str):
    with session_scope(db_url) as session:
        return verify_documents(session)


def test_numbered_in_one_step_sealed_with_its_pdf_in_the_next(db_url):
    account = new_account(db_url)
    first = issue(db_url, account, at(2140))  # sealed at once, as credit notes and approvals still are
    pending = issue_unsealed(db_url, account, at(2140, 1), "20.00")

    # The number is taken and committed; no PDF, no place in the chain yet.
    assert pending.number == "INV-2140-000002"
    stored = invoice(db_url, pending.id)
    assert (stored.pdf, stored.xml, stored.chain_seq, stored.content_hash) == (None, None, None, None)
    with session_scope(db_url) as session:
        assert pending.id in unsealed_invoice_ids(session, issued_before=at(2140, 2))
        assert first.id not in unsealed_invoice_ids(session, issued_before=at(2140, 2))
    report = verified(db_url)
    assert report.breaks == [] and report.unchained >= 1

    assert seal_documents(db_url, settings_for(db_url), pending.id) is True
    assert seal_documents(db_url, settings_for(db_url), pending.id) is False  # a retry leaves it as it is
    sealed = invoice(db_url, pending.id)
    assert sealed.pdf.startswith(b"%PDF-") and b"<rsm:CrossIndustryInvoice" in sealed.xml
    assert sealed.chain_seq > first.chain_seq and sealed.content_hash == document_hash(sealed)
    body = json.loads(canonical_content(sealed))
    assert body["number"] == "INV-2140-000002" and body["pdfSha256"] == hashlib.sha256(sealed.pdf).hexdigest()
    with session_scope(db_url) as session:
        assert pending.id not in unsealed_invoice_ids(session, issued_before=at(2140, 2))
    assert verified(db_url).breaks == []


def test_content_is_frozen_from_the_number_on_and_the_pdf_is_set_only_once(db_url):
    account = new_account(db_url)
    pending = issue_unsealed(db_url, account, at(2141))
    with pytest.raises(ImmutableDocumentError, match="gross_cents"):
        with session_scope(db_url) as session:
            row = session.get(Invoice, pending.id)
            row.gross_cents += 100
            session.add(row)
    with pytest.raises(ImmutableDocumentError, match="net_cents"):  # not even together with the seal's own fields
        with session_scope(db_url) as session:
            row = session.get(Invoice, pending.id)
            row.pdf, row.net_cents = b"%PDF-1.7 forged", row.net_cents - 1
            session.add(row)
    assert seal_documents(db_url, settings_for(db_url), pending.id)
    with pytest.raises(ImmutableDocumentError, match="pdf"):
        with session_scope(db_url) as session:
            row = session.get(Invoice, pending.id)
            row.pdf = b"%PDF-1.7 another"
            session.add(row)
    assert invoice(db_url, pending.id).gross_cents == pending.gross_cents
    assert verified(db_url).breaks == []


def test_concurrent_sealing_keeps_one_chain_and_seals_each_document_once(db_url):
    accounts = [new_account(db_url) for _ in range(4)]
    pending = [issue_unsealed(db_url, accounts[i % 4], at(2142, 0, i), f"{i + 1}.00") for i in range(8)]
    assert sorted(p.number for p in pending) == [f"INV-2142-{n:06d}" for n in range(1, 9)]
    settings = settings_for(db_url)
    barrier = threading.Barrier(8)

    def seal(invoice_id: str) -> bool:
        barrier.wait()
        return seal_documents(db_url, settings, invoice_id)

    # Every document twice, on 8 threads: each is sealed by exactly one call.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(seal, [p.id for p in pending] * 2))
    assert sum(results) == 8
    with session_scope(db_url) as session:
        docs = list(session.exec(select(Invoice).where(Invoice.id.in_([p.id for p in pending])).order_by(Invoice.chain_seq)))
    assert all(d.content_hash == document_hash(d) for d in docs)
    assert len({d.chain_seq for d in docs}) == 8
    assert verified(db_url).breaks == []


def test_sending_seals_first_and_tells_the_crm_the_bill_is_sent(db_url, tmp_path):
    account = new_account(db_url)
    pending = issue_unsealed(db_url, account, at(2143), "30.00")
    with MailSink(tmp_path / "mail") as sink:
        settings = settings_for(db_url)
        activities = BillingActivities(settings, catalog=None, profiles={}, gateway=None, oss=None,
                                       notifier=SmtpNotifier("127.0.0.1", sink.port, "billing@o2c.example", timeout_s=5))
        asyncio.run(activities.send_invoice(pending.id))
        asyncio.run(activities.send_invoice(pending.id))  # a retry sends nothing twice and emits nothing new
        messages = sink.messages()
    sent = invoice(db_url, pending.id)
    assert sent.state == "sent" and sent.content_hash == document_hash(sent)
    assert len(messages) == 1 and messages[0]["Subject"] == f"Your invoice {sent.number}"
    attachment = next(part for part in messages[0].iter_attachments())
    assert attachment.get_content() == sent.pdf  # the sealed PDF, byte for byte
    with session_scope(db_url) as session:
        assert session.get(Notification, f"invoice:{pending.id}") is not None
        events = list(session.exec(select(HubEvent).where(HubEvent.resource_key == f"customerBill:{pending.id}").order_by(HubEvent.sequence)))
    assert [e.event_type for e in events] == ["CustomerBillCreateEvent", "CustomerBillStateChangeEvent"]
    assert events[1].state == "sent"


def test_documents_rendered_in_a_separate_process_are_the_same_documents(db_url):
    """`o2c worker` renders in processes of their own (render_in_processes): the same document as rendered in the
    thread (the Factur-X embedding stamps the time of embedding into the metadata, so not the same bytes)."""
    account = new_account(db_url)
    pending = issue_unsealed(db_url, account, at(2144), "12.34", "0.56")
    render_in_processes(1)
    try:
        assert seal_documents(db_url, settings_for(db_url), pending.id) is True
    finally:
        render_in_processes(0)
    sealed = invoice(db_url, pending.id)
    assert sealed.content_hash == document_hash(sealed)
    with session_scope(db_url) as session:
        billing_account = session.get(BillingAccount, account)
        customer = session.get(Customer, billing_account.customer_id)
        here = render_document(settings_for(db_url), sealed, billing_account, customer, usage=[])
    assert here.xml == sealed.xml and extract_facturx_xml(sealed.pdf) == sealed.xml
    assert pdf_text(here.pdf) == pdf_text(sealed.pdf) and sealed.number in pdf_text(sealed.pdf)
    assert verified(db_url).breaks == []


def test_the_first_numbers_of_a_new_series_taken_at_once_have_no_gap(db_url):
    """Numbering no longer queues behind the chain lock, so issuers may race to open a year's series."""
    accounts = [new_account(db_url) for _ in range(6)]
    barrier = threading.Barrier(6)

    def issue_one(index: int) -> str:
        barrier.wait()
        return issue_unsealed(db_url, accounts[index], at(2145, 0, index)).number

    with ThreadPoolExecutor(max_workers=6) as pool:
        numbers = sorted(pool.map(issue_one, range(6)))
    assert numbers == [f"INV-2145-{n:06d}" for n in range(1, 7)]
    with session_scope(db_url) as session:
        ids = [row.id for row in session.exec(select(Invoice).where(Invoice.number.in_(numbers)))]
    for invoice_id in ids:
        seal_documents(db_url, settings_for(db_url), invoice_id)
    assert verified(db_url).breaks == []
