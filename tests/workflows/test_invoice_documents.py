"""Invoice documents through the billing-account workflow: the cycle invoice is issued with its EN 16931
XML inside the PDF (Factur-X, or XRechnung for a Leitweg-ID), reverse charge for an EU business, the
itemised bill (EVN) only on request and only in the PDF, and the e-mail carries the PDF rendered at
issuance (rendered once, never again when sending). Time-skipping server, real activities, real SMTP."""
from __future__ import annotations

import uuid
from datetime import date, timedelta

from activities.invoice_issuer import RENDER_TIMINGS
from adapters.documents.facturx import extract_facturx_xml
from persistence.db import session_scope
from persistence.tables import BillingAccount, Customer, UsageRecord
from tests.documents.test_invoice_pdf import pdf_text
from tests.documents.validators import all_errors
from tests.support.billing import advance_to, eventually, invoices, local_midnight, mails_to, open_account, pin_clock, start_billing

CARD = "4242424242424242"


def configure(db_url: str, account_id: str, *, customer: dict | None = None, **account_values: object) -> None:
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        for key, value in account_values.items():
            setattr(account, key, value)
        session.add(account)
        row = session.get(Customer, account.customer_id)
        for key, value in (customer or {}).items():
            setattr(row, key, value)
        session.add(row)


def add_call(db_url: str, account, at, called: str) -> str:
    """A 10-minute call beyond the allowance at 0.09/min: 0.90 EUR."""
    product = account.products[0]
    record_id = f"cdr-{uuid.uuid4()}"
    with session_scope(db_url) as session:
        session.add(UsageRecord(id=record_id, usage_type="voice", msisdn=product.msisdn, product_id=product.product_id,
                                billing_account_id=account.account_id, event_time=at, quantity=600, units=10, chargeable_units=10,
                                amount_micros=900_000, period_start=local_midnight(date(at.year, 11, 15)), received_at=at, destination=called))
    return record_id


async def first_invoice(running_worker, settings, ts_env, db_url, account, start):
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
        return await eventually(lambda: (rows := invoices(db_url, account.account_id)) and rows[0].state in ("sent", "partiallyPaid", "settled") and rows[0])


async def test_cycle_invoice_carries_its_factur_x_xml_and_the_requested_itemised_bill(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=CARD)
    configure(db_url, account.account_id, itemised_bill=True, itemised_mask_last3=True)
    record = add_call(db_url, account, start + timedelta(hours=1), "4930123456789")
    invoice = await first_invoice(running_worker, settings, ts_env, db_url, account, start)

    # 15.11.-15.12. prorated from 1.12. (14 of 30 days: 4.66) + 15.12.-15.01. in advance 9.99 + the call 0.90
    # = 15.55 net; 19 % = 2.9545 -> 2.95; 18.50 gross.
    assert (invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == (1555, 295, 1850)
    assert extract_facturx_xml(invoice.pdf) == invoice.xml
    assert all_errors(invoice.xml, "en16931") == {"xsd": [], "cen": [], "facturx": []}
    for secret in (b"4930123456", record.encode()):
        assert secret not in invoice.xml
    lines = pdf_text(invoice.pdf).splitlines()
    assert "+4930123456xxx" in lines and "+4930123456789" not in lines and "10:00 min" in lines and "0,90 €" in lines
    # The e-mail carries exactly the PDF sealed at issuance.
    (mail,) = [m for m in mails_to(mail_sink, account.email) if m["Subject"] == f"Your invoice {invoice.number}"]
    (attachment,) = [part for part in mail.iter_attachments()]
    assert attachment.get_content_type() == "application/pdf" and attachment.get_payload(decode=True) == invoice.pdf
    assert RENDER_TIMINGS and all(set(r.seconds) == {"pdf", "xml", "embed"} for r in RENDER_TIMINGS)


async def test_xrechnung_with_reverse_charge_for_a_public_buyer_abroad(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="sepa:DE89370400440532013000")
    configure(db_url, account.account_id, leitweg_id="991-33333-62",
              customer={"vat_id": "ATU57194903", "name": "Muster Handels GmbH",
                        "address": {"street1": "Ringstraße 1", "postCode": "1010", "city": "Wien", "country": "AT"}})
    add_call(db_url, account, start + timedelta(hours=1), "4930123456789")
    invoice = await first_invoice(running_worker, settings, ts_env, db_url, account, start)

    # 4.66 + 9.99 + 0.90 = 15.55 net, reverse charge (AE 0 %): no VAT, 15.55 gross.
    assert (invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == (1555, 0, 1555)
    assert {line["vat_category"] for line in invoice.lines} == {"AE"}
    assert all_errors(invoice.xml, "xrechnung") == {"xsd": [], "cen": [], "xrechnung": []}
    assert b"urn:xeinkauf.de:kosit:xrechnung_3.0" in invoice.xml and b"991-33333-62" in invoice.xml
    assert b"4930123456" not in invoice.xml
    text = " ".join(pdf_text(invoice.pdf).split())
    assert "Steuerschuldnerschaft des Leistungsempfängers / Reverse charge" in text
    assert "Einzelverbindungsnachweis" not in text  # not requested
