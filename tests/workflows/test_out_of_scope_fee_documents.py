"""Fee-only documents outside the scope of VAT (EN 16931 category O), on both databases, with the XML checked as a
receiver checks it (XSD, CEN EN 16931 and Factur-X schematron, tests/documents/validators.py):

* a dunning late fee for a consumer and for a buyer with a VAT ID: the document carries no VAT identifier at all
  (BR-O-02/-03/-04), the seller's tax number (BT-32) stays, BT-120 is the charge's reason, BT-121 VATEX-EU-O;
* a chargeback fee followed by the cycle invoice: the cycle invoice has no O line (BR-O-11), the fee gets one
  fee-only document of its own, once, sent with the cycle invoice."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from lxml import etree
from sqlmodel import select

from activities.billing import BillingActivities
from activities.dunning import LateFeeRequest
from activities.dunning_fee_invoice import FEE_KIND, fee_invoice_id, pending_fee_invoice_id
from adapters.notify.email import SmtpNotifier
from config.catalog_loader import load_catalog
from domain.billing_cycle import CycleSpec, period_containing
from domain.payments import DisputeOutcome
from persistence.db import session_scope
from persistence.tables import BillingAccount, BusinessEvent, Invoice, Payment, PendingOneTimeCharge, Product
from services.disputes import apply_dispute, fee_key
from services.pending_charges import OUT_OF_SCOPE_REASONS, unbilled_pending_charges
from tests.documents.validators import all_errors
from tests.support.billing import mails_to
from tests.support.dunning import dunning_activities
from tests.support.records import create_account_with_email, create_billing_account, create_customer

NO_ERRORS = {"xsd": [], "cen": [], "facturx": []}
CII = {"ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
       "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"}
BERLIN_NOON_DEC_15 = datetime(2025, 12, 15, 11, tzinfo=UTC)
SPEC = CycleSpec(kind="monthly", bill_cycle_day=1, timezone="Europe/Berlin")


def xpath(xml: bytes, path: str) -> list[str]:
    return etree.fromstring(xml).xpath(path, namespaces=CII)


def assert_out_of_scope_document(xml: bytes, tax_number: str, reason: str) -> None:
    """Valid, category O only, no VAT identifier of anyone, the seller's tax number, the charge's own exemption reason."""
    assert all_errors(xml, "en16931") == NO_ERRORS
    assert set(xpath(xml, "//ram:CategoryCode/text()")) == {"O"}
    assert xpath(xml, "//ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']") == []  # BR-O-02, BR-O-04 (BR-O-03: no BG-11 at all)
    assert xpath(xml, "//ram:SellerTaxRepresentativeTradeParty") == []
    assert xpath(xml, "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration") == []
    assert xpath(xml, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='FC']/text()") == [tax_number]
    settlement = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax"
    assert xpath(xml, f"{settlement}/ram:ExemptionReason/text()") == [reason]
    assert xpath(xml, f"{settlement}/ram:ExemptionReasonCode/text()") == ["VATEX-EU-O"]


def billing_activities(settings) -> BillingActivities:
    return BillingActivities(settings, load_catalog(settings.catalog_path), {}, gateway=None, oss=None,
                             notifier=SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.mail_from))


def load(db_url: str, table, *where):
    with session_scope(db_url) as session:
        return list(session.exec(select(table).where(*where)))


@pytest.mark.parametrize("vat_id", [None, "DE811907980"], ids=["consumer", "vat-id-buyer"])
async def test_a_late_fee_invoice_carries_no_vat_id_and_the_fees_own_exemption_reason(make_settings, db_url, mail_sink, vat_id):
    settings = make_settings()
    acts = dunning_activities(settings)
    account_id, email = create_account_with_email(db_url, vat_id=vat_id)
    episode = f"dunning-{account_id}-inv1"
    key = await acts.add_late_fee(LateFeeRequest(episode_id=episode, billing_account_id=account_id, level="mahnung", amount=Decimal("2.50"),
                                                 description="Mahngebühr 1. Mahnung"))

    (charge,) = load(db_url, PendingOneTimeCharge, PendingOneTimeCharge.key == key)
    (invoice,) = load(db_url, Invoice, Invoice.billing_account_id == account_id)
    assert (charge.status, charge.invoice_id, invoice.id) == ("billed", fee_invoice_id(key), fee_invoice_id(key))
    assert (invoice.kind, invoice.gross_cents, invoice.vat_cents) == ("late_fee", 250, 0)
    assert [line["vat_exemption_reason"] for line in invoice.lines] == ["Nicht steuerbarer Schadensersatz (Mahngebühr)"]
    assert_out_of_scope_document(invoice.xml, settings.seller_tax_number, "Nicht steuerbarer Schadensersatz (Mahngebühr)")
    kinds = [e.kind for e in load(db_url, BusinessEvent, BusinessEvent.billing_account_id == account_id)]
    assert "dunning.late_fee" in kinds and "dunning.late_fee_not_invoiced" not in kinds
    assert [m["Subject"] for m in mails_to(mail_sink, email)] == [f"Your invoice {invoice.number} (Mahngebühr / late fee)"]

    # Waived after invoicing: the credit note is a category O document too, with the same reason and no VAT ID.
    result = await acts.waive_fees(episode, account_id, [key], "finance:bbb", "goodwill")
    (note,) = load(db_url, Invoice, Invoice.referenced_invoice_id == invoice.id)
    assert (result.credited, note.gross_cents) == ([key], -250)
    assert_out_of_scope_document(note.xml, settings.seller_tax_number, "Nicht steuerbarer Schadensersatz (Mahngebühr)")


def open_line(db_url: str, email: str) -> tuple[str, str]:
    account_id = create_billing_account(db_url, create_customer(db_url, email=email))
    product_id = str(uuid.uuid4())
    activated = datetime(2025, 12, 31, 23, tzinfo=UTC)  # 1 January, Berlin
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        session.add(Product(id=product_id, customer_id=account.customer_id, billing_account_id=account_id, offering_id="mobile-s", offering_version="1",
                            catalog_version="2026.1", name="Mobile S", msisdn="49151" + f"{uuid.uuid4().int % 10**8:08d}", status="active",
                            order_id=f"test-{account_id}", order_item_id="1", start_date=activated, billing_start=activated))
    return account_id, product_id


def chargeback(db_url: str, account_id: str, fee: Decimal) -> tuple[str, str]:
    """A card payment of the account disputed at the gateway, recorded by services.disputes as the Stripe webhook route does."""
    intent, dispute = f"pi_{uuid.uuid4().hex[:16]}", f"dp_{uuid.uuid4().hex[:16]}"
    now = datetime.now(UTC)
    with session_scope(db_url) as session:
        session.add(Payment(id=f"pay-{intent}", correlator_id=f"pay-{intent}", billing_account_id=account_id, amount_cents=1189, currency="EUR",
                            method="card", status="succeeded", gateway_payment_id=intent, recorded_by="test", created_at=now))
    with session_scope(db_url) as session:
        outcome = DisputeOutcome(gateway_dispute_id=dispute, gateway_payment_id=intent, amount_minor=1189, currency="EUR", status="needs_response",
                                 reason="fraudulent")
        assert apply_dispute(session, outcome, fee, now).result == "applied"
    return fee_key(dispute), f"pay-{intent}"


async def test_a_chargeback_fee_gets_its_own_fee_document_after_the_cycle_invoice_never_a_line_on_it(make_settings, db_url, mail_sink):
    settings = make_settings()
    email = f"kunde-{uuid.uuid4().hex[:10]}@example.org"
    account_id, _product_id = open_line(db_url, email)
    key, payment_id = chargeback(db_url, account_id, Decimal("15.00"))
    with session_scope(db_url) as session:
        assert unbilled_pending_charges(session, account_id) == []  # category O of any kind: never gathered for a cycle invoice

    acts = billing_activities(settings)
    period = period_containing(SPEC, BERLIN_NOON_DEC_15)
    issued = acts.issue_cycle_invoice(account_id, SPEC, period, 14 * 86400)
    again = acts.issue_cycle_invoice(account_id, SPEC, period, 14 * 86400)  # a retried activity: nothing is issued twice
    assert again.invoice_id == issued.invoice_id

    documents = {i.id: i for i in load(db_url, Invoice, Invoice.billing_account_id == account_id)}
    cycle, fees = documents[issued.invoice_id], documents[pending_fee_invoice_id(issued.invoice_id)]
    assert len(documents) == 2
    assert {line["vat_category"] for line in cycle.lines} == {"S"} and [line["kind"] for line in cycle.lines] == ["recurring"]
    assert (fees.kind, fees.net_cents, fees.vat_cents, fees.gross_cents) == (FEE_KIND, 1500, 0, 1500)
    assert [(line["description"], line["vat_category"]) for line in fees.lines] == [(f"Chargeback fee (payment {payment_id})", "O")]
    (charge,) = load(db_url, PendingOneTimeCharge, PendingOneTimeCharge.key == key)
    assert (charge.status, charge.invoice_id) == ("billed", fees.id)
    assert fees.number is not None and fees.pdf is None  # numbered with the cycle invoice, rendered and sealed when sent

    await acts.send_invoice(cycle.id)
    await acts.send_invoice(cycle.id)  # a retry sends neither mail again
    sealed = load(db_url, Invoice, Invoice.id == fees.id)[0]
    assert sealed.content_hash and sealed.state == "sent" and sealed.pdf.startswith(b"%PDF")
    assert_out_of_scope_document(sealed.xml, settings.seller_tax_number, OUT_OF_SCOPE_REASONS["chargeback_fee"])
    assert all_errors(load(db_url, Invoice, Invoice.id == cycle.id)[0].xml, "en16931") == NO_ERRORS
    assert [m["Subject"] for m in mails_to(mail_sink, email)] == [f"Your invoice {cycle.number}", f"Your invoice {fees.number} (Gebühren / fees)"]

    # The next cycle invoice has nothing of the fee, and no second fee document.
    january = acts.issue_cycle_invoice(account_id, SPEC, period_containing(SPEC, datetime(2026, 1, 15, 11, tzinfo=UTC)), 14 * 86400)
    assert {line["kind"] for line in load(db_url, Invoice, Invoice.id == january.invoice_id)[0].lines} == {"recurring"}
    assert load(db_url, Invoice, Invoice.id == pending_fee_invoice_id(january.invoice_id)) == []
