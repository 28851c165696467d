"""Every issued document carries its EN 16931 e-invoice: the CII XML is stored (`invoice.xml`) and embedded
in the PDF (Factur-X / ZUGFeRD, PDF/A-3), through the real issuance path (activities.invoice_issuer).
XRechnung for an account with a Leitweg-ID, reverse charge for an EU business, and the itemised bill
(EVN) only in the PDF, never in the XML. Amounts are derived by hand in the comments."""
from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from io import BytesIO

import pytest
from sqlmodel import select
from lxml import etree
from pypdf import PdfReader

from activities.invoice_charges import PendingCharge
from activities.invoice_issuer import RENDER_TIMINGS, approve_invoice, issue_invoice
from adapters.documents.facturx import extract_facturx_xml
from domain.billing_cycle import BillingPeriod
from domain.invoicing import ChargeLine
from persistence.db import session_scope
from persistence.tables import BillingAccount, Customer, HubEvent, UsageRecord
from tests.billing.support import at, credit, issue, new_account, settings_for
from tests.documents.test_invoice_pdf import pdf_text
from tests.documents.validators import all_errors

NS = {"rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
      "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"}
NO_ERRORS_EN16931 = {"xsd": [], "cen": [], "facturx": []}
NO_ERRORS_XRECHNUNG = {"xsd": [], "cen": [], "xrechnung": []}


def xpath(xml: bytes, path: str) -> list[str]:
    return [str(v) for v in etree.fromstring(xml).xpath(path, namespaces=NS)]


def update_account(db_url: str, account_id: str, **values: object) -> None:
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        for key, value in values.items():
            setattr(account, key, value)
        session.add(account)


def update_customer(db_url: str, account_id: str, **values: object) -> None:
    with session_scope(db_url) as session:
        customer = session.get(Customer, session.get(BillingAccount, account_id).customer_id)
        for key, value in values.items():
            setattr(customer, key, value)
        session.add(customer)


def add_usage(db_url: str, account_id: str, when, rows: list[tuple[str, int, str | None, int]]) -> list[str]:
    """rows: (usage_type, quantity, called number, amount in micro-euros)."""
    ids = []
    with session_scope(db_url) as session:
        for offset, (usage_type, quantity, destination, micros) in enumerate(rows):
            record_id = f"evn-{uuid.uuid4()}"
            ids.append(record_id)
            session.add(UsageRecord(id=record_id, usage_type=usage_type, msisdn="4915100000001", product_id="p-evn", billing_account_id=account_id,
                                    event_time=when + timedelta(minutes=offset), quantity=quantity, amount_micros=micros, period_start=when,
                                    destination=destination, status="rated", received_at=when))
    return ids


def issue_with_usage(db_url: str, account_id: str, when, usage_ids: list[str], *, hold: bool = False):
    """Fee 9.99 + voice 0.30 (2 records) + data 1.50 MB line = 11.79 net; 19 % = 2.2401 -> 2.24; gross 14.03."""
    period = BillingPeriod(start=when, end=when + timedelta(hours=1), local_start=when.date(), local_end=when.date() + timedelta(days=1))
    charges = [
        PendingCharge(ChargeLine(kind="recurring", description="Mobile S monthly fee", unit="MON", unit_price=Decimal("9.99"),
                                 net_amount=Decimal("9.99")), [], []),
        PendingCharge(ChargeLine(kind="usage", description="Mobile S Voice calls beyond allowance (2 records)", quantity=Decimal(3), unit="MIN",
                                 net_amount=Decimal("0.30")), [], usage_ids[:2]),
        PendingCharge(ChargeLine(kind="usage", description="Mobile S Data beyond allowance (1 records)", quantity=Decimal(15), unit="MB",
                                 net_amount=Decimal("1.50")), [], usage_ids[2:]),
    ]
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        return issue_invoice(session, settings_for(db_url), account, period, charges, when, when + timedelta(days=14), hold=hold)


def test_an_issued_invoice_embeds_a_valid_en16931_xml(db_url):
    account = new_account(db_url)
    when = at(2130)
    usage = add_usage(db_url, account, when, [("voice", 125, "4930123456789", 200_000), ("voice", 40, "4917612345678", 100_000),
                                              ("data", 15_000_000, None, 1_500_000)])
    invoice = issue_with_usage(db_url, account, when, usage)

    assert (invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == (1179, 224, 1403)
    assert invoice.xml is not None and extract_facturx_xml(invoice.pdf) == invoice.xml
    assert all_errors(invoice.xml, "en16931") == NO_ERRORS_EN16931
    xml = invoice.xml
    assert xpath(xml, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID/text()") == ["urn:cen.eu:en16931:2017"]
    assert xpath(xml, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID/text()") == [invoice.number]
    assert xpath(xml, "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:GrandTotalAmount/text()") == ["14.03"]
    assert xpath(xml, "//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:TaxTotalAmount/text()") == ["2.24"]
    # Data in MB is UN/ECE Rec 20 "4L" (megabyte) in the XML; the PDF keeps the label "MB".
    assert xpath(xml, "//ram:BilledQuantity/@unitCode") == ["MON", "MIN", "4L"]
    assert "MB" in pdf_text(invoice.pdf).splitlines()
    # Seller from the structured settings; a saved card gives payment means 48 with its last 4 digits.
    assert xpath(xml, "//ram:SellerTradeParty/ram:PostalTradeAddress/ram:PostcodeCode/text()") == ["10115"]
    assert xpath(xml, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/text()") == ["DE123456789", "30/123/45678"]
    assert xpath(xml, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode/text()") == ["48"]
    # No call detail in the e-invoice: not a dialled number, not a record id.
    for secret in ("4930123456789", "4917612345678", *usage):
        assert secret.encode() not in xml
    # Without the opt-in there is no itemised bill in the PDF either.
    assert "Einzelverbindungsnachweis" not in pdf_text(invoice.pdf)
    assert RENDER_TIMINGS and set(RENDER_TIMINGS[-1].seconds) == {"pdf", "xml", "embed"}


def test_the_pdf_declares_pdfa3_with_embedded_fonts(db_url):
    account = new_account(db_url)
    invoice = issue(db_url, account, at(2131))
    reader = PdfReader(BytesIO(invoice.pdf))
    metadata = reader.trailer["/Root"]["/Metadata"].get_object().get_data()
    assert b"<pdfaid:part>3</pdfaid:part>" in metadata or b'pdfaid:part="3"' in metadata
    for ref in reader.pages[0]["/Resources"]["/Font"].values():
        descendant = ref.get_object()["/DescendantFonts"][0].get_object()
        assert "/FontFile2" in descendant["/FontDescriptor"].get_object()


def test_reverse_charge_for_an_eu_business_with_a_valid_vat_id(db_url):
    account = new_account(db_url)
    update_customer(db_url, account, vat_id="ATU57194903", name="Muster Handels GmbH",
                    address={"street1": "Ringstraße 1", "postCode": "1010", "city": "Wien", "country": "Österreich"})
    invoice = issue(db_url, account, at(2132))  # 9.99 + 0.27 = 10.26 net, reverse charge: no German VAT

    assert (invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == (1026, 0, 1026)
    assert {(line["vat_category"], line["vat_rate"]) for line in invoice.lines} == {("AE", "0")}
    assert invoice.vat_breakdown == [{"vat_category": "AE", "vat_rate": "0", "taxable_amount": "10.26", "tax_amount": "0.00"}]
    assert all_errors(invoice.xml, "en16931") == NO_ERRORS_EN16931
    assert xpath(invoice.xml, "//ram:ApplicableTradeTax/ram:CategoryCode/text()") == ["AE", "AE", "AE"]
    assert xpath(invoice.xml, "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:ExemptionReasonCode/text()") == ["VATEX-EU-AE"]
    assert xpath(invoice.xml, "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/text()") == ["ATU57194903"]
    assert xpath(invoice.xml, "//ram:BuyerTradeParty/ram:PostalTradeAddress/ram:CountryID/text()") == ["AT"]
    text = " ".join(pdf_text(invoice.pdf).split())
    assert "Steuerschuldnerschaft des Leistungsempfängers / Reverse charge" in text
    assert "ATU57194903" in text

    # A credit note of it keeps AE and is a valid 381.
    note, _ = credit(db_url, invoice.id, at(2132, 1), reason="Goodwill")
    assert (note.net_cents, note.vat_cents, note.gross_cents) == (-1026, 0, -1026)
    assert all_errors(note.xml, "en16931") == NO_ERRORS_EN16931
    assert xpath(note.xml, "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:TypeCode/text()") == ["381"]


def test_a_domestic_business_and_an_invalid_foreign_vat_id_pay_german_vat(db_url):
    account = new_account(db_url)
    update_customer(db_url, account, vat_id="ATU57194904",  # check digit wrong
                    address={"street1": "Ringstraße 1", "postCode": "1010", "city": "Wien", "country": "AT"})
    invoice = issue(db_url, account, at(2133))  # 10.26 net, 19 % = 1.9494 -> 1.95
    assert (invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == (1026, 195, 1221)
    assert all_errors(invoice.xml, "en16931") == NO_ERRORS_EN16931


def test_a_leitweg_id_makes_it_an_xrechnung(db_url):
    account = new_account(db_url)
    update_account(db_url, account, leitweg_id="991-12345-73", payment_method="sepa:DE89370400440532013000")
    invoice = issue(db_url, account, at(2134))

    assert all_errors(invoice.xml, "xrechnung") == NO_ERRORS_XRECHNUNG
    assert extract_facturx_xml(invoice.pdf) == invoice.xml
    assert xpath(invoice.xml, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID/text()") == [
        "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"]
    assert xpath(invoice.xml, "//ram:BuyerReference/text()") == ["991-12345-73"]
    # SEPA direct debit from the saved IBAN (BT-91) with o2c's creditor id (BT-90).
    assert xpath(invoice.xml, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode/text()") == ["59"]
    assert xpath(invoice.xml, "//ram:PayerPartyDebtorFinancialAccount/ram:IBANID/text()") == ["DE89370400440532013000"]

    note, _ = credit(db_url, invoice.id, at(2134, 1), (1, "1.00"), reason="Outage")
    assert all_errors(note.xml, "xrechnung") == NO_ERRORS_XRECHNUNG


@pytest.mark.parametrize("mask", [False, True])
def test_itemised_bill_only_on_request_and_never_in_the_xml(db_url, mask):
    account = new_account(db_url)
    update_account(db_url, account, itemised_bill=True, itemised_mask_last3=mask)
    when = at(2135 + int(mask))
    usage = add_usage(db_url, account, when, [("voice", 125, "4930123456789", 200_000), ("voice", 40, "4917612345678", 100_000),
                                              ("data", 15_000_000, None, 1_500_000)])
    invoice = issue_with_usage(db_url, account, when, usage)
    lines = pdf_text(invoice.pdf).splitlines()
    assert any("Einzelverbindungsnachweis / Itemised bill" in line for line in lines)
    if mask:
        assert "+4930123456xxx" in lines and "+4917612345xxx" in lines
        assert "+4930123456789" not in lines
    else:
        assert "+4930123456789" in lines and "+4917612345678" in lines
    assert "2:05 min" in lines and "0:40 min" in lines and "15,000 MB" in lines  # 125 s, 40 s, 15,000,000 bytes
    assert "0,20 €" in lines and "0,10 €" in lines and "1,50 €" in lines
    assert f"{when.astimezone(BERLIN):%d.%m.%Y %H:%M:%S}" in lines
    for secret in ("4930123456", "4917612345", *usage):
        assert secret.encode() not in invoice.xml
    assert all_errors(invoice.xml, "en16931") == NO_ERRORS_EN16931


def test_an_approved_draft_gets_its_xml_and_itemised_bill_at_approval(db_url):
    account = new_account(db_url)
    update_account(db_url, account, itemised_bill=True, itemised_mask_last3=True)
    when = at(2137)
    usage = add_usage(db_url, account, when, [("voice", 61, "4930111222333", 100_000), ("voice", 60, "4930111222444", 200_000),
                                              ("data", 1_000_000, None, 1_500_000)])
    draft = issue_with_usage(db_url, account, when, usage, hold=True)
    assert draft.number is None and draft.pdf is None and draft.xml is None
    with session_scope(db_url) as session:
        approved, changed = approve_invoice(session, settings_for(db_url), draft.id, when + timedelta(days=1))
        assert changed
        pdf, xml = approved.pdf, approved.xml
    assert extract_facturx_xml(pdf) == xml and all_errors(xml, "en16931") == NO_ERRORS_EN16931
    assert "+4930111222xxx" in pdf_text(pdf).splitlines()


from zoneinfo import ZoneInfo  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")


def test_issuing_emits_one_customer_bill_create_event_for_the_crm(db_url):
    """The CRM's listeners hear of a bill once it has its number, from the issuing transaction."""
    account = new_account(db_url)
    when = at(2130)
    invoice = issue_with_usage(db_url, account, when, add_usage(db_url, account, when, [("voice", 60, "4930123456789", 100_000)]))
    again = issue_with_usage(db_url, account, when, [])  # issuing the same invoice again returns it and emits nothing new
    assert again.id == invoice.id
    with session_scope(db_url) as session:
        emitted = list(session.exec(select(HubEvent).where(HubEvent.resource_key == f"customerBill:{invoice.id}")))
    assert [(e.event_type, e.sequence) for e in emitted] == [("CustomerBillCreateEvent", 1)]
