"""Issues documents: invoices (cycle, on demand), onHold drafts and their approval, and credit notes.

Issuing is one transaction: the document chain's head is locked first (one chain for every document,
so two issuers can never fork it), then the series' next gapless number is taken, the PDF rendered
and the document sealed: `content_hash` is SHA-256 over its canonical content including the previous
document's hash. If anything fails the transaction rolls back, number and chain position included,
so neither has a gap.

Cycle invoices (the bill run) are issued in two short steps instead, so that no lock is held while a
PDF renders: `issue_invoice(documents_later=True)` commits the content with its gapless number (no
chain lock), then `seal_documents` renders outside any transaction and seals under the chain lock
(chain order is then seal order, not number order). Until it is sealed the invoice has no PDF and is
not sent; persistence.tables lets exactly these fields be set once on such a numbered document.

Issued documents never change (persistence.tables guards it); `move_invoice` below is the one way
o2c moves an invoice's state and settled amount, and `record_settlement` the one way money settles it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import re
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from activities.invoice_charges import PendingCharge
from adapters.documents.einvoice import (
    Buyer as EBuyer,
    CardPayment,
    Contact,
    EInvoiceDocument,
    PostalAddress,
    PrecedingInvoice,
    Profile,
    SepaCreditTransfer,
    SepaDirectDebit,
    Seller,
    VatExemption,
    build_cii_xml,
    einvoice_from_computed,
    xrechnung_problems,
)
from adapters.documents.facturx import render_facturx_pdf
from adapters.documents.invoice_pdf import InvoicePdfData, PdfLine, PdfParty, PdfReference, PdfUsageItem, PdfVat
from config.settings import Settings
from domain.allocation import OpenItem, allocate
from domain.billing_cycle import BillingPeriod, zone
from domain.invoicing import ChargeLine, ComputedInvoice, InvoiceLine, InvoiceTotals, VatBreakdown, compute_invoice, format_invoice_number
from domain.money import from_micros, from_minor, to_minor
from domain.payments import InvalidPaymentMethod, parse_payment_method
from domain.rating_engine import BYTES_PER_MB
from domain.vat import REVERSE_CHARGE_REASON, SELLER_COUNTRY, VatTreatment, line_vat, rate_class_for, vat_treatment
from domain.vat import Buyer as VatBuyer
from services.hub_events import CUSTOMER_BILL_CREATE, emit_event
from persistence.tables import (
    BillingAccount,
    BilledCharge,
    Customer,
    DocumentChain,
    Invoice,
    InvoiceSequence,
    Payment,
    PaymentAllocation,
    UsageRecord,
)

log = logging.getLogger(__name__)

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
CREDIT_NOTE = "credit_note"
INVOICE_ID_NAMESPACE = uuid.UUID("5b0f5f7e-2f7e-4d0b-8d57-0c3c1b7f4a10")
CHAIN_ID = "documents"
HASH_VERSION = 1

# TMF678 states. Only these move once a document is issued (see move_invoice).
BILL_STATES = ("new", "onHold", "validated", "sent", "partiallyPaid", "settled")
OPEN_STATES = ("new", "validated", "sent", "partiallyPaid")  # as activities.ledger counts them


def invoice_id_for(billing_account_id: str, period_start: datetime, kind: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"{billing_account_id}|{period_start.isoformat()}|{kind}"))


def on_demand_invoice_id(request_id: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"on_demand|{request_id}"))


def credit_note_id_for(client_key: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"credit_note|{client_key}"))


def next_sequence(session: Session, series: str) -> int:
    """Takes the next number of a series inside the caller's transaction (row-locked on PostgreSQL,
    write-locked on SQLite), so two workers never get the same number and a rollback leaves no gap."""
    if session.get(InvoiceSequence, series) is None:
        try:
            with session.begin_nested():  # a savepoint: issuers that are not serialised by the chain lock may race to create it
                session.add(InvoiceSequence(series=series, last_value=0))
        except IntegrityError:
            pass  # another issuer created the series first; its row is locked and counted below like any other
    session.exec(update(InvoiceSequence).where(InvoiceSequence.series == series).values(last_value=InvoiceSequence.last_value + 1))
    return session.exec(select(InvoiceSequence.last_value).where(InvoiceSequence.series == series)).one()


# --- the document chain ---------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def canonical_content(invoice: Invoice) -> bytes:
    """The document's immutable content as canonical JSON (sorted keys, no spaces, UTF-8): what
    `content_hash` covers. Money is integer cents or the decimal strings stored on the lines; times
    are UTC ISO-8601. The PDF enters by its SHA-256, so the printed document is covered too.
    Changing this function changes every hash: bump HASH_VERSION and keep the old form for verifying."""
    body = {
        "v": HASH_VERSION,
        "chainSeq": invoice.chain_seq,
        "previousHash": invoice.previous_hash,
        "documentType": "creditNote" if invoice.kind == CREDIT_NOTE else "invoice",
        "kind": invoice.kind,
        "number": invoice.number,
        "billingAccountId": invoice.billing_account_id,
        "customerId": invoice.customer_id,
        "currency": invoice.currency,
        "issuedAt": _iso(invoice.issued_at),
        "dueAt": _iso(invoice.due_at),
        "periodStart": _iso(invoice.period_start),
        "periodEnd": _iso(invoice.period_end),
        "localPeriodStart": _day(invoice.local_period_start),
        "localPeriodEnd": _day(invoice.local_period_end),
        "netCents": invoice.net_cents,
        "vatCents": invoice.vat_cents,
        "grossCents": invoice.gross_cents,
        "lines": invoice.lines,
        "vatBreakdown": invoice.vat_breakdown,
        "referencedInvoice": None if invoice.referenced_invoice_id is None else {
            "id": invoice.referenced_invoice_id,
            "number": invoice.referenced_invoice_number,
            "issueDate": _day(invoice.referenced_invoice_date),
        },
        "reason": invoice.reason,
        "pdfSha256": None if invoice.pdf is None else hashlib.sha256(invoice.pdf).hexdigest(),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def document_hash(invoice: Invoice) -> str:
    return hashlib.sha256(canonical_content(invoice)).hexdigest()


def _lock_chain(session: Session) -> DocumentChain:
    """The chain's head, row-locked until the transaction ends (on SQLite the transaction already holds
    the database's write lock from BEGIN IMMEDIATE). Taken before the number: every issuer queues here."""
    statement = select(DocumentChain).where(DocumentChain.id == CHAIN_ID).with_for_update().execution_options(populate_existing=True)
    head = session.exec(statement).first()
    if head is None:  # a database created without migration 0006's row
        head = DocumentChain(id=CHAIN_ID, last_seq=0, last_hash=None)
        session.add(head)
        session.flush()
    return head


def _seal(session: Session, head: DocumentChain, invoice: Invoice) -> None:
    invoice.chain_seq = head.last_seq + 1
    invoice.previous_hash = head.last_hash
    invoice.content_hash = document_hash(invoice)
    head.last_seq, head.last_hash = invoice.chain_seq, invoice.content_hash
    session.add(head)


# --- documents: PDF with the EN 16931 XML embedded (Factur-X / ZUGFeRD, XRechnung) ------------------

_COUNTRY_NAMES = {
    "deutschland": "DE", "germany": "DE", "österreich": "AT", "oesterreich": "AT", "austria": "AT", "schweiz": "CH",
    "switzerland": "CH", "frankreich": "FR", "france": "FR", "niederlande": "NL", "netherlands": "NL", "belgien": "BE",
    "belgium": "BE", "italien": "IT", "italy": "IT", "spanien": "ES", "spain": "ES", "polen": "PL", "poland": "PL",
    "dänemark": "DK", "denmark": "DK", "luxemburg": "LU", "luxembourg": "LU", "tschechien": "CZ", "czechia": "CZ",
    "schweden": "SE", "sweden": "SE", "irland": "IE", "ireland": "IE", "portugal": "PT", "griechenland": "GR", "greece": "GR",
}


_COUNTRY_LABELS = {"DE": "Deutschland", "AT": "Österreich", "CH": "Schweiz"}


def country_code(address: dict | None, default: str = "DE") -> str:
    """ISO 3166-1 alpha-2 of a customer address's free-text `country` ("DE", "Deutschland", "Austria" ...)."""
    raw = ((address or {}).get("country") or "").strip()
    if len(raw) == 2 and raw.isalpha():
        return raw.upper()
    return _COUNTRY_NAMES.get(raw.lower(), default)


def buyer_vat_treatment(customer: Customer | None) -> VatTreatment:
    """domain.vat's treatment of the customer: a business (it has a VAT ID) established in another member
    state with a valid VAT ID gets reverse charge (AE, 0 %); everyone else German VAT."""
    if customer is None:
        return vat_treatment(VatBuyer(country=SELLER_COUNTRY))
    vat_id = (customer.vat_id or "").strip() or None
    return vat_treatment(VatBuyer(country=country_code(customer.address), is_business=vat_id is not None, vat_id=vat_id))


def _apply_vat_treatment(charges: list[PendingCharge], treatment: VatTreatment) -> list[PendingCharge]:
    if treatment.kind != "reverse_charge":
        return charges
    out = []
    for charge in charges:
        if charge.line.vat_category == "O":  # outside the scope of VAT (a fee that is damages): no supply, so no reverse charge either
            out.append(charge)
            continue
        rate_class = rate_class_for(charge.line.vat_rate) if charge.line.vat_category in ("S", "Z") else "standard"
        vat = line_vat(treatment, rate_class)
        # replace() keeps every other field (billed_fees, vat_exemption): losing billed fees would bill a fee twice.
        out.append(replace(charge, line=charge.line.model_copy(update={"vat_category": vat.category, "vat_rate": vat.rate})))
    return out


def _period_label(local_start: date, local_end: date) -> str:
    last_day = local_end - timedelta(days=1) if local_end > local_start else local_end
    return f"{local_start:%d.%m.%Y} – {last_day:%d.%m.%Y}"


def _party_from_customer(customer: Customer) -> PdfParty:
    address = customer.address or {}
    lines = [address.get("street1"), " ".join(p for p in (address.get("postCode"), address.get("city")) if p), address.get("country")]
    return PdfParty(name=customer.name, address_lines=[line for line in lines if line] or ["(no postal address on file)"], vat_id=customer.vat_id)


def _pdf_line(line: dict) -> PdfLine:
    start, end = line.get("period_start"), line.get("period_end")
    period = f"{date.fromisoformat(start):%d.%m.%Y}–{date.fromisoformat(end):%d.%m.%Y}" if start and end else None
    unit_price = line.get("unit_price")
    return PdfLine(line_no=line["line_no"], description=line["description"], quantity=Decimal(str(line["quantity"])), unit=line["unit"],
                   unit_price=Decimal(str(unit_price)) if unit_price is not None else None, net_amount=Decimal(str(line["net_amount"])),
                   vat_rate=Decimal(str(line["vat_rate"])), period=period)


def _seller(settings: Settings) -> Seller:
    return Seller(
        name=settings.seller_name, legal_registration_id=settings.seller_register,
        address=PostalAddress(line1=settings.seller_street, postcode=settings.seller_postcode, city=settings.seller_city,
                              country_code=settings.seller_country_code),
        vat_id=settings.seller_vat_id or None, tax_number=settings.seller_tax_number or None,
        electronic_address=settings.seller_contact_email,
        contact=Contact(name=settings.seller_contact_name, phone=settings.seller_contact_phone, email=settings.seller_contact_email),
    )


def _seller_party(settings: Settings) -> PdfParty:
    return PdfParty(name=settings.seller_name, vat_id=settings.seller_vat_id or None, tax_number=settings.seller_tax_number or None,
                    address_lines=[settings.seller_street, f"{settings.seller_postcode} {settings.seller_city}",
                                   _COUNTRY_LABELS.get(settings.seller_country_code, settings.seller_country_code)])


def _buyer(customer: Customer, account: BillingAccount, treatment: VatTreatment) -> EBuyer:
    address = customer.address or {}
    vat_id = treatment.buyer_vat_id or customer.vat_id
    if vat_id and not re.fullmatch(r"[A-Z]{2}[0-9A-Za-z+*.]{2,13}", vat_id):
        vat_id = None
    return EBuyer(
        name=customer.name, customer_id=customer.id, vat_id=vat_id,
        address=PostalAddress(line1=address.get("street1"), line2=address.get("street2"), postcode=address.get("postCode"),
                              city=address.get("city"), country_code=country_code(address)),
        electronic_address=account.email or customer.email,
    )


def _payment_means(settings: Settings, account: BillingAccount, *, credit: bool, xrechnung: bool):  # noqa: ANN202
    """BG-16: a SEPA direct debit from the saved IBAN (mandate reference = the billing account), a card
    (last 4 digits of a test card), else - and for credit notes - a transfer to the seller's account."""
    transfer = SepaCreditTransfer(iban=settings.seller_iban, bic=settings.seller_bic, account_name=settings.seller_name)
    if credit or not account.payment_method:
        return transfer
    try:
        method = parse_payment_method(account.payment_method)
    except InvalidPaymentMethod:
        return transfer
    if method.kind == "sepa_debit":
        if method.iban is None and xrechnung:
            return transfer  # XRechnung needs the debited IBAN (BR-DE-31), which a gateway-held mandate does not tell us
        return SepaDirectDebit(mandate_reference=f"O2C-{account.id}", creditor_id=settings.seller_sepa_creditor_id, debtor_iban=method.iban)
    digits = "".join(ch for ch in account.payment_method if ch.isdigit())
    last4 = digits[-4:] if len(digits) >= 12 else None
    if last4 is None and xrechnung:
        return transfer
    return CardPayment(pan_last4=last4)


# Keys a stored line has beside InvoiceLine's fields: the credited line of a credit note, and BT-120 of a category O line.
_LINE_EXTRAS = ("credited_line_no", "vat_exemption_reason")
OUT_OF_SCOPE_CODE = "VATEX-EU-O"  # BT-121 of category O (CEF VATEX list)
DEFAULT_OUT_OF_SCOPE_TEXT = "Nicht steuerbar"  # the PDF's note for O lines whose charge named no reason


def out_of_scope_only(invoice: Invoice) -> bool:
    """Every line outside the scope of VAT (category O): BR-O-02/-03/-04 then forbid the seller's, the seller's tax
    representative's and the buyer's VAT identifiers on the document (the seller's tax number, BT-32, stays: §14 UStG)."""
    categories = {v["vat_category"] for v in invoice.vat_breakdown} or {line.get("vat_category", "S") for line in invoice.lines}
    return categories == {"O"}


def out_of_scope_reason(invoice: Invoice) -> str | None:
    """BT-120 of the document's category O: the reasons its O lines carry (from their charges), in line order."""
    reasons = [line["vat_exemption_reason"] for line in invoice.lines if line.get("vat_category") == "O" and line.get("vat_exemption_reason")]
    return "; ".join(dict.fromkeys(reasons)) or None


def _computed_from_stored(invoice: Invoice) -> ComputedInvoice:
    lines = [InvoiceLine.model_validate({k: v for k, v in line.items() if k not in _LINE_EXTRAS}) for line in invoice.lines]
    return ComputedInvoice(lines=lines, totals=InvoiceTotals(
        net_total=from_minor(invoice.net_cents), vat_total=from_minor(invoice.vat_cents), gross_total=from_minor(invoice.gross_cents),
        vat_breakdown=[VatBreakdown.model_validate(v) for v in invoice.vat_breakdown]))


def einvoice_xml(settings: Settings, invoice: Invoice, account: BillingAccount, customer: Customer, *, payment_note: str | None = None) -> tuple[bytes, Profile]:
    """The EN 16931 CII XML of an issued document: XRechnung 3.0 when the account has a Leitweg-ID
    (BT-10), Factur-X / ZUGFeRD EN 16931 otherwise. Only invoice-level data: never call detail."""
    tz = zone(account.timezone)
    credit = invoice.kind == CREDIT_NOTE
    treatment = buyer_vat_treatment(customer)
    leitweg = (account.leitweg_id or "").strip() or None
    no_vat_ids = out_of_scope_only(invoice)
    seller, buyer = _seller(settings), _buyer(customer, account, treatment)
    if no_vat_ids:  # BR-O-02/-03/-04 (o2c names no tax representative, BG-11)
        seller, buyer = seller.model_copy(update={"vat_id": None}), buyer.model_copy(update={"vat_id": None})
    reason = out_of_scope_reason(invoice)
    exemptions = {"O": VatExemption(text=reason, code=OUT_OF_SCOPE_CODE)} if reason else None

    # BT-73/74 must contain every line's period (PEPPOL-EN16931-R110/R111): fees billed in advance
    # reach into the next period, so the document's period spans the closed period and those lines.
    starts = [invoice.local_period_start] + [date.fromisoformat(line["period_start"]) for line in invoice.lines if line.get("period_start")]
    ends = [max(invoice.local_period_end, invoice.local_period_start + timedelta(days=1))] + [
        date.fromisoformat(line["period_end"]) for line in invoice.lines if line.get("period_end")]

    def document(xrechnung: bool) -> EInvoiceDocument:
        return einvoice_from_computed(
            _computed_from_stored(invoice), number=invoice.number, issue_date=invoice.issued_at.astimezone(tz).date(),
            period_start=min(starts), period_end_exclusive=max(ends),
            seller=seller, buyer=buyer, exemptions=exemptions,
            payment_means=_payment_means(settings, account, credit=credit, xrechnung=xrechnung),
            due_date=None if credit else invoice.due_at.astimezone(tz).date(), payment_terms=payment_note,
            currency=invoice.currency, type_code="381" if credit else "380",
            preceding_invoice=PrecedingInvoice(number=invoice.referenced_invoice_number, issue_date=invoice.referenced_invoice_date) if credit else None,
            buyer_reference=leitweg, contract_reference=account.id,
            notes=(f"Grund / Reason: {invoice.reason}",) if credit and invoice.reason else (),
        )

    if leitweg:
        doc = document(True)
        problems = xrechnung_problems(doc)
        if not problems:
            return build_cii_xml(doc, profile="xrechnung"), "xrechnung"
        log.warning("invoice %s: XRechnung not possible (%s); issuing Factur-X EN 16931 with the Leitweg-ID as BT-10",
                    invoice.number, "; ".join(problems))
    return build_cii_xml(document(False), profile="en16931"), "en16931"


def _mask(number: str | None, mask_last3: bool) -> str | None:
    if not number:
        return None
    shown = number if number.startswith("+") or not number.isdigit() else f"+{number}"
    return f"{shown[:-3]}xxx" if mask_last3 and len(shown) > 3 else shown


def _usage_amount_text(record: UsageRecord) -> str:
    if record.usage_type == "voice":
        return f"{record.quantity // 60}:{record.quantity % 60:02d} min"
    if record.usage_type == "sms":
        return f"{record.quantity} SMS"
    megabytes = (Decimal(record.quantity) / BYTES_PER_MB).quantize(Decimal("0.001"))
    return f"{str(megabytes).replace('.', ',')} MB"


_USAGE_KINDS = {"voice": "Telefonie", "sms": "SMS", "data": "Daten"}


def itemised_items(records: list[UsageRecord], account: BillingAccount) -> list[PdfUsageItem]:
    """The EVN rows of an invoice's usage records, in event order; numbers masked if the customer asked."""
    tz = zone(account.timezone)
    return [
        PdfUsageItem(time=f"{r.event_time.astimezone(tz):%d.%m.%Y %H:%M:%S}", kind=_USAGE_KINDS.get(r.usage_type, r.usage_type),
                     called_number=None if r.usage_type == "data" else _mask(r.destination, account.itemised_mask_last3),
                     amount_text=_usage_amount_text(r), net_amount=from_micros(r.amount_micros))
        for r in sorted(records, key=lambda r: (r.event_time, r.id))
    ]


@dataclass(frozen=True)
class RenderedDocument:
    pdf: bytes  # the Factur-X PDF (PDF/A-3) with the XML inside
    xml: bytes
    profile: str  # en16931 | xrechnung
    seconds: dict[str, float]  # pdf, xml, embed


RENDER_TIMINGS: list[RenderedDocument] = []  # the last few renders of this process, for measurements
_RENDER_TIMINGS_KEPT = 100


def render_document(settings: Settings, invoice: Invoice, account: BillingAccount, customer: Customer, *, full_credit: bool = False,
                    usage: list[UsageRecord] | None = None) -> RenderedDocument:
    """The PDF and the EN 16931 XML of an invoice or credit note, from its stored content (lines and
    totals as issued); the XML is embedded in the PDF (Factur-X, PDF/A-3). Made once, before the
    document is sealed, because the sealed hash covers the PDF's bytes; sending reuses the stored PDF.
    `usage` (the invoice's records) adds the itemised bill (EVN) as an appendix of the PDF, only when
    the account opted in; it never enters the XML."""
    started = time.perf_counter()
    tz = zone(account.timezone)
    credit = invoice.kind == CREDIT_NOTE
    if credit:
        title = "Stornorechnung / Credit note" if full_credit else "Rechnungskorrektur / Credit note"
        note = ("Der Betrag wird mit offenen Rechnungen verrechnet oder Ihrem Kundenkonto gutgeschrieben. "
                "/ The amount is set off against open invoices or credited to your account.")
    else:
        title = "Rechnung / Invoice"
        note = f"Payable by {invoice.due_at.astimezone(tz):%d.%m.%Y}. We collect it from your saved payment method where one is on file."
    vat_notes = []
    no_vat_ids = out_of_scope_only(invoice)
    if no_vat_ids:
        vat_notes.append(f"{out_of_scope_reason(invoice) or DEFAULT_OUT_OF_SCOPE_TEXT}: nicht umsatzsteuerbar, es wird keine Umsatzsteuer "
                         "berechnet / outside the scope of VAT, no VAT is charged.")
    if any(v["vat_category"] == "AE" for v in invoice.vat_breakdown):
        vat_id = buyer_vat_treatment(customer).buyer_vat_id or customer.vat_id
        vat_notes.append(f"{REVERSE_CHARGE_REASON} (§13b UStG, Art. 196 MwStSystRL). USt-IdNr. des Leistungsempfängers / "
                         f"customer's VAT ID: {vat_id}")
    data = InvoicePdfData(
        invoice_number=invoice.number,
        issue_date=invoice.issued_at.astimezone(tz).date(),
        due_date=None if credit else invoice.due_at.astimezone(tz).date(),
        service_period=_period_label(invoice.local_period_start, invoice.local_period_end),
        seller=_seller_party(settings).model_copy(update={"vat_id": None}) if no_vat_ids else _seller_party(settings),
        buyer=_party_from_customer(customer).model_copy(update={"vat_id": None}) if no_vat_ids else _party_from_customer(customer),
        customer_number=customer.id,
        billing_account_id=account.id,
        currency=invoice.currency,
        lines=[_pdf_line(line) for line in invoice.lines],
        vat_breakdown=[PdfVat(vat_category=v["vat_category"], vat_rate=Decimal(str(v["vat_rate"])), taxable_amount=Decimal(str(v["taxable_amount"])),
                              tax_amount=Decimal(str(v["tax_amount"]))) for v in invoice.vat_breakdown],
        net_total=from_minor(invoice.net_cents), vat_total=from_minor(invoice.vat_cents), gross_total=from_minor(invoice.gross_cents),
        payment_note=note,
        document_title=title,
        document_kind="credit_note" if credit else "invoice",
        reference=PdfReference(invoice_number=invoice.referenced_invoice_number, issue_date=invoice.referenced_invoice_date) if credit else None,
        reason=invoice.reason,
        vat_notes=vat_notes,
        itemised=itemised_items(usage or [], account) if account.itemised_bill and not credit else None,
    )
    prepared = time.perf_counter()
    xml, profile = einvoice_xml(settings, invoice, account, customer, payment_note=note)
    built_xml = time.perf_counter()
    # The XML is attached while fpdf2 writes the PDF/A-3 (one pass): there is no separate embedding step any more.
    hybrid = render_facturx_pdf(data, xml, level="en16931")
    done = time.perf_counter()
    result = RenderedDocument(pdf=hybrid, xml=xml, profile=profile,
                              seconds={"pdf": (prepared - started) + (done - built_xml), "xml": built_xml - prepared, "embed": 0.0})
    RENDER_TIMINGS.append(result)
    del RENDER_TIMINGS[:-_RENDER_TIMINGS_KEPT]
    log.debug("rendered %s (%s): pdf %.1f ms, xml %.1f ms, embed %.1f ms", invoice.number, profile,
              *(result.seconds[k] * 1000 for k in ("pdf", "xml", "embed")))
    return result


def _number_and_seal(session: Session, settings: Settings, invoice: Invoice, series: str, account: BillingAccount, customer: Customer,
                     usage_ids: list[str] | None = None) -> None:
    """Gives `invoice` its number, PDF and XML and place in the chain. Called with everything else of the document final."""
    head = _lock_chain(session)
    year = invoice.issued_at.astimezone(zone(account.timezone)).year
    invoice.number = format_invoice_number(series, year, next_sequence(session, f"{series}-{year}"))
    usage: list[UsageRecord] = []
    if account.itemised_bill:
        with session.no_autoflush:  # the numbered document must not reach the database before its PDF
            if usage_ids is None:  # an approved draft: its records were marked billed when it was drafted
                usage = list(session.exec(select(UsageRecord).where(UsageRecord.invoice_id == invoice.id)))
            elif usage_ids:
                usage = list(session.exec(select(UsageRecord).where(col(UsageRecord.id).in_(usage_ids))))
    rendered = render_document(settings, invoice, account, customer, usage=usage)
    invoice.pdf, invoice.xml = rendered.pdf, rendered.xml
    _seal(session, head, invoice)
    session.add(invoice)
    session.flush()
    _emit_bill_created(session, invoice)


def _number(session: Session, invoice: Invoice, series: str, account: BillingAccount) -> None:
    """Gives a document with final content its gapless number, without PDF or seal (see seal_documents).
    The series' row stays locked until the caller commits, so call it last in the transaction."""
    year = invoice.issued_at.astimezone(zone(account.timezone)).year
    invoice.number = format_invoice_number(series, year, next_sequence(session, f"{series}-{year}"))
    session.add(invoice)
    session.flush()
    _emit_bill_created(session, invoice)


def seal_documents(db_url: str, settings: Settings, invoice_id: str) -> bool:
    """Renders a numbered, not yet sealed document's PDF and XML and seals it into the chain; True when
    this call sealed it. The rendering (most of the cost) runs outside any transaction and lock; only the
    seal takes the chain's lock, for a few milliseconds. Idempotent: a document sealed already (by an
    earlier try, a concurrent one or the nightly bill-run check) is left as it is, and the PDF rendered
    here is thrown away. The PDF is made from the stored content, and two renders of it are byte-identical
    (the Factur-X metadata is dated by the invoice); the seal covers the stored PDF's SHA-256 exactly as
    for documents sealed when numbered."""
    from persistence.db import session_scope  # activities import this module; the engine is only needed here

    with session_scope(db_url) as session:
        invoice = session.get(Invoice, invoice_id)
        if invoice is None or invoice.number is None or invoice.content_hash is not None or invoice.pdf is not None:
            return False  # a draft, sealed already, or a document from before the chain (it keeps its PDF, unsealed)
        account = session.get(BillingAccount, invoice.billing_account_id)
        customer = session.get(Customer, invoice.customer_id)
        usage = list(session.exec(select(UsageRecord).where(UsageRecord.invoice_id == invoice.id))) if account.itemised_bill else []
    rendered = _render_for_seal(settings, invoice, account, customer, usage)
    with session_scope(db_url) as session:
        head = _lock_chain(session)
        row = session.exec(select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)).one()
        if row.content_hash is not None or row.pdf is not None:
            return False
        row.pdf, row.xml = rendered.pdf, rendered.xml
        _seal(session, head, row)
        session.add(row)
        session.flush()
    return True


_render_pool: ProcessPoolExecutor | None = None
_render_pool_lock = threading.Lock()


def render_in_processes(workers: int) -> None:
    """From now on seal_documents renders in `workers` separate processes (0: in the calling thread, the
    default). Rendering is pure CPU in Python; in the worker's process it holds the GIL that every
    activity thread and the workflows need, so a thread holding the series' or chain's lock waits behind
    it. The processes are started ("spawn": the worker runs Temporal's threads) on first use."""
    global _render_pool
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 0 else None
    with _render_pool_lock:
        old, _render_pool = _render_pool, pool
    if old is not None:
        old.shutdown(wait=False)


def _render_job(settings: Settings, invoice: Invoice, account: BillingAccount, customer: Customer, usage: list[UsageRecord]) -> RenderedDocument:
    return render_document(settings, invoice, account, customer, usage=usage)


def _render_for_seal(settings: Settings, invoice: Invoice, account: BillingAccount, customer: Customer, usage: list[UsageRecord]) -> RenderedDocument:
    pool = _render_pool
    if pool is not None:
        try:
            return pool.submit(_render_job, settings, invoice, account, customer, usage).result()
        except BrokenProcessPool:  # a render process died (OOM, killed): render here, and start fresh processes next time
            log.warning("a document render process died; rendering %s in the worker's thread", invoice.number)
            render_in_processes(pool._max_workers)
    return render_document(settings, invoice, account, customer, usage=usage)


def unsealed_invoice_ids(session: Session, issued_before: datetime, limit: int = 1000) -> list[str]:
    """Numbered documents still waiting for their PDF and seal (their seal_documents has not run yet)."""
    statement = (select(Invoice.id).where(col(Invoice.number).is_not(None), col(Invoice.content_hash).is_(None), col(Invoice.pdf).is_(None),
                                          Invoice.issued_at < issued_before)
                 .order_by(col(Invoice.issued_at)).limit(limit))
    return list(session.exec(statement))


def _emit_bill_created(session: Session, invoice: Invoice) -> None:
    """TMF678 CustomerBillCreateEvent for the CRM's listeners, in the issuing transaction: a bill exists
    for the customer once it has its number (an onHold draft is not yet a bill)."""
    from api import tmf  # the TMF shape of a bill; imported here so the activity module loads without the API

    emit_event(session, event_type=CUSTOMER_BILL_CREATE, resource_type="customerBill", resource_id=invoice.id,
               resource=tmf.customer_bill(invoice), at=invoice.issued_at)


# --- invoices ------------------------------------------------------------------------------------


def issue_invoice(
    session: Session, settings: Settings, account: BillingAccount, period: BillingPeriod, charges: list[PendingCharge],
    issued_at: datetime, due_at: datetime, kind: str = "cycle", *, hold: bool = False, invoice_id: str | None = None,
    documents_later: bool = False,
) -> Invoice | None:
    """Issues the invoice for `charges` (or returns the one already issued for this id). With `hold`, it
    is an onHold draft instead: content final, no number, no PDF, not in the chain, until approve_invoice.

    With `documents_later` the invoice only gets its number here (content final, gapless, committed with
    the caller's transaction); `seal_documents` renders its PDF and XML afterwards, outside any lock, and
    seals it into the chain. Sending waits for that (activities.billing.send_invoice calls it first)."""
    invoice_id = invoice_id or invoice_id_for(account.id, period.start, kind)
    existing = session.get(Invoice, invoice_id)
    if existing is not None:
        return existing
    customer = session.get(Customer, account.customer_id)
    charges = _apply_vat_treatment(charges, buyer_vat_treatment(customer))
    # Zero usage lines are not printed, but their records are still marked billed by this invoice.
    printable = [c for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)]
    if not printable:
        return None
    computed = compute_invoice([c.line for c in printable])
    lines = [line.model_dump(mode="json") for line in computed.lines]
    for line, charge in zip(lines, printable):  # compute_invoice numbers the lines in the order of the charges
        if line["vat_category"] == "O" and charge.vat_exemption:
            line["vat_exemption_reason"] = charge.vat_exemption
    invoice = Invoice(
        id=invoice_id, number=None, kind=kind, billing_account_id=account.id, customer_id=account.customer_id, state="onHold" if hold else "new",
        period_start=period.start, period_end=period.end, local_period_start=period.local_start, local_period_end=period.local_end,
        issued_at=issued_at, due_at=due_at, currency=account.currency,
        net_cents=to_minor(computed.totals.net_total), vat_cents=to_minor(computed.totals.vat_total), gross_cents=to_minor(computed.totals.gross_total),
        lines=lines,
        vat_breakdown=[v.model_dump(mode="json") for v in computed.totals.vat_breakdown],
    )
    if hold or documents_later:
        session.add(invoice)
        session.flush()
    else:
        _number_and_seal(session, settings, invoice, INVOICE_SERIES, account, customer, usage_ids=[u for c in charges for u in c.usage_ids])
    _mark_billed(session, charges, invoice_id)
    if documents_later and not hold:
        # Last, so the series' row lock (held until commit) covers only the number itself.
        _number(session, invoice, INVOICE_SERIES, account)
    return invoice


class DocumentRefused(Exception):
    """A document request that cannot be carried out as asked; `code` is machine-readable."""

    def __init__(self, code: str, message: str, *, conflict: bool = True, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.conflict, self.field = code, message, conflict, field


def approve_invoice(session: Session, settings: Settings, invoice_id: str, approved_at: datetime) -> tuple[Invoice, bool]:
    """Approves an onHold draft: issue date now, due date moved by the same payment terms, the next
    gapless number, PDF and seal, state validated. (invoice, changed); approving an approved one again
    changes nothing."""
    _lock_chain(session)  # first, as every issuer: approvals of one draft queue here, and lock order is always chain, then rows
    invoice = session.exec(select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)).first()
    if invoice is None:
        raise LookupError(invoice_id)
    if invoice.number is not None:
        if invoice.state == "onHold":  # cannot happen through o2c; a draft is numbered when it is approved
            raise DocumentRefused("invalid_state", f"{invoice.number} is numbered but onHold")
        return invoice, False
    if invoice.state != "onHold":
        raise DocumentRefused("invalid_state_transition", f"only an onHold bill can be validated; this one is {invoice.state}")
    account = session.get(BillingAccount, invoice.billing_account_id)
    customer = session.get(Customer, invoice.customer_id)
    terms = invoice.due_at - invoice.issued_at
    invoice.issued_at, invoice.due_at, invoice.state = approved_at, approved_at + terms, "validated"
    _number_and_seal(session, settings, invoice, INVOICE_SERIES, account, customer)
    return invoice, True


def move_invoice(invoice: Invoice, *, state: str | None = None, paid_cents: int | None = None) -> None:
    """The one place o2c changes an issued invoice: its TMF678 state and its settled amount. Its content
    never changes (persistence.tables refuses it on flush)."""
    if state is not None:
        if state not in BILL_STATES:
            raise ValueError(f"unknown customerBill state {state!r}")
        invoice.state = state
    if paid_cents is not None:
        if paid_cents < 0:
            raise ValueError("paid_cents cannot be negative")
        invoice.paid_cents = paid_cents


def record_settlement(session: Session, payment: Payment, invoice: Invoice, amount_cents: int, at: datetime) -> None:
    """Books `amount_cents` of `payment` against `invoice`, as activities.ledger.allocate_payments does."""
    paid = invoice.paid_cents + amount_cents
    move_invoice(invoice, paid_cents=paid, state="settled" if paid >= invoice.gross_cents else "partiallyPaid")
    session.add(invoice)
    existing = session.get(PaymentAllocation, (payment.id, invoice.id))
    if existing is None:
        session.add(PaymentAllocation(payment_id=payment.id, invoice_id=invoice.id, amount_cents=amount_cents, at=at))
    else:
        existing.amount_cents += amount_cents
        session.add(existing)
    payment.allocated_cents += amount_cents
    session.add(payment)


def _mark_billed(session: Session, charges: list[PendingCharge], invoice_id: str) -> None:
    """Marks everything the invoice bills, in its transaction: usage records, BilledCharge keys (a pending
    charge's row too), and the recurring fees it charges or credits (billed_fee, domain.charges.BilledFee)."""
    from domain.money import to_micros
    from persistence.tables import BilledFeeRow
    from services.pending_charges import mark_billed as mark_pending_billed

    usage_ids = [uid for c in charges for uid in c.usage_ids]
    if usage_ids:
        session.exec(update(UsageRecord).where(UsageRecord.id.in_(usage_ids)).values(invoice_id=invoice_id, status="billed"))
    keys = list(dict.fromkeys(key for charge in charges for key in charge.charge_keys))
    for key in keys:
        session.add(BilledCharge(key=key, invoice_id=invoice_id))
    pending = [key.removeprefix("pending-charge:") for key in keys if key.startswith("pending-charge:")]
    if pending:
        mark_pending_billed(session, pending, invoice_id)
    fees = [fee for charge in charges for fee in getattr(charge, "billed_fees", ())]
    for seq, fee in enumerate(fees):
        session.add(BilledFeeRow(invoice_id=invoice_id, seq=seq, product_id=fee.product_id, plan_id=fee.plan_id, period_start=fee.period_start,
                                 covered_from=fee.covered_from, covered_to=fee.covered_to, monthly_fee_micros=to_micros(fee.monthly_fee),
                                 net_fee_micros=to_micros(fee.net_fee), direction=fee.direction, times=fee.times))


# --- credit notes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditItem:
    line_no: int
    net_amount: Decimal | None = None  # None: what is left of the line


@dataclass(frozen=True)
class CreditRequest:
    reason: str
    items: tuple[CreditItem, ...] = ()  # empty: everything still creditable (a full credit / Storno)


@dataclass(frozen=True)
class Creditable:
    """What is left to credit on an invoice: per line (net) and in total (gross)."""

    lines: dict[int, Decimal]
    gross_cents: int


def credit_notes_of(session: Session, invoice_id: str) -> list[Invoice]:
    return list(session.exec(
        select(Invoice).where(Invoice.referenced_invoice_id == invoice_id, Invoice.kind == CREDIT_NOTE).order_by(col(Invoice.chain_seq))
    ))


def creditable(session: Session, invoice: Invoice) -> Creditable:
    credited_lines: dict[int, Decimal] = {}
    credited_gross = 0
    for note in credit_notes_of(session, invoice.id):
        credited_gross += -note.gross_cents
        for line in note.lines:
            number = line.get("credited_line_no")
            credited_lines[number] = credited_lines.get(number, Decimal(0)) - Decimal(str(line["net_amount"]))
    lines = {line["line_no"]: Decimal(str(line["net_amount"])) - credited_lines.get(line["line_no"], Decimal(0)) for line in invoice.lines}
    return Creditable(lines=lines, gross_cents=invoice.gross_cents - credited_gross)


def _credit_lines(invoice: Invoice, request: CreditRequest, left: Creditable) -> list[tuple[int, ChargeLine]]:
    by_no = {line["line_no"]: line for line in invoice.lines}
    if request.items:
        seen: set[int] = set()
        wanted: list[tuple[int, Decimal]] = []
        for index, item in enumerate(request.items):
            field = f"creditNoteItem[{index}]"
            if item.line_no not in by_no:
                raise DocumentRefused("unknown_bill_line", f"{invoice.number} has no line {item.line_no}", conflict=False, field=f"{field}.lineNo")
            if item.line_no in seen:
                raise DocumentRefused("duplicate_bill_line", f"line {item.line_no} is named twice", conflict=False, field=f"{field}.lineNo")
            seen.add(item.line_no)
            rest = left.lines[item.line_no]
            if Decimal(str(by_no[item.line_no]["net_amount"])) < 0:
                raise DocumentRefused("line_not_creditable", f"line {item.line_no} is itself a reduction; credit the whole invoice instead",
                                      conflict=False, field=f"{field}.lineNo")
            amount = rest if item.net_amount is None else item.net_amount
            if amount <= 0 and item.net_amount is None:
                raise DocumentRefused("credit_exceeds_remaining", f"line {item.line_no} of {invoice.number} is fully credited already")
            if amount > rest:
                raise DocumentRefused("credit_exceeds_remaining",
                                      f"line {item.line_no} of {invoice.number} has {rest} {invoice.currency} net left to credit, not {amount}")
            wanted.append((item.line_no, amount))
    else:
        wanted = [(number, rest) for number, rest in left.lines.items() if rest != 0]
        if not wanted:
            raise DocumentRefused("nothing_left_to_credit", f"{invoice.number} is fully credited already")
    charges = []
    for number, amount in wanted:
        line = by_no[number]
        full_line = amount == Decimal(str(line["net_amount"]))
        quantity = Decimal(str(line["quantity"])) if full_line else Decimal(1)
        unit_price = line.get("unit_price") if full_line else None
        charges.append((number, ChargeLine(
            kind="credit", description=f"Gutschrift zu Pos. {number}: {line['description']}" if not full_line else f"Storno Pos. {number}: {line['description']}",
            quantity=-quantity, unit=line["unit"], unit_price=Decimal(str(unit_price)) if unit_price is not None else None,
            net_amount=-amount, vat_rate=Decimal(str(line["vat_rate"])), vat_category=line.get("vat_category", "S"),
            period_start=date.fromisoformat(line["period_start"]) if line.get("period_start") else None,
            period_end=date.fromisoformat(line["period_end"]) if line.get("period_end") else None,
            product_id=line.get("product_id"),
        )))
    return charges


def issue_credit_note(
    session: Session, settings: Settings, invoice_id: str, request: CreditRequest, issued_at: datetime, *, credit_note_id: str, issued_by: str,
) -> tuple[Invoice, Payment]:
    """Issues a credit note against an issued invoice: negative lines with the same EN 16931 rounding,
    its own gapless series (CN-YYYY-NNNNNN), the invoice's number and date, sealed into the chain.
    Never more than is left to credit (per line net, and in total gross).

    The money goes through the ledger as a succeeded entry of method `credit_note`: against an
    unpaid invoice it settles that invoice first (so less is open and collected); what is left, e.g.
    of a paid invoice, is account credit, which activities.ledger applies to later invoices."""
    existing = session.get(Invoice, credit_note_id)
    if existing is not None:
        return existing, session.get(Payment, _ledger_id(existing.id))
    head = _lock_chain(session)  # first: serialises credit notes of one invoice, so two cannot both take the rest
    invoice = session.exec(select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)).first()
    if invoice is None:
        raise LookupError(invoice_id)
    if invoice.kind == CREDIT_NOTE:
        raise DocumentRefused("not_an_invoice", f"{invoice.number} is a credit note; credit the invoice itself", conflict=False)
    if invoice.number is None:
        raise DocumentRefused("bill_not_issued", "an onHold draft has no number yet; approve it first (it can be credited afterwards)")
    left = creditable(session, invoice)
    charges = _credit_lines(invoice, request, left)
    computed = compute_invoice([charge for _, charge in charges])
    gross = to_minor(computed.totals.gross_total)
    if -gross > left.gross_cents:
        raise DocumentRefused("credit_exceeds_remaining",
                              f"{invoice.number} has {from_minor(left.gross_cents)} {invoice.currency} left to credit, not {from_minor(-gross)}")
    account = session.get(BillingAccount, invoice.billing_account_id)
    customer = session.get(Customer, invoice.customer_id)
    lines = []
    by_no = {line["line_no"]: line for line in invoice.lines}
    for (credited_no, _), line in zip(charges, computed.lines):
        extra = {"vat_exemption_reason": reason} if (reason := by_no[credited_no].get("vat_exemption_reason")) and line.vat_category == "O" else {}
        lines.append({**line.model_dump(mode="json"), "credited_line_no": credited_no, **extra})
    note = Invoice(
        id=credit_note_id, number=None, kind=CREDIT_NOTE, billing_account_id=invoice.billing_account_id, customer_id=invoice.customer_id,
        state="settled", period_start=invoice.period_start, period_end=invoice.period_end,
        local_period_start=invoice.local_period_start, local_period_end=invoice.local_period_end,
        issued_at=issued_at, due_at=issued_at, currency=invoice.currency,
        net_cents=to_minor(computed.totals.net_total), vat_cents=to_minor(computed.totals.vat_total), gross_cents=gross,
        lines=lines, vat_breakdown=[v.model_dump(mode="json") for v in computed.totals.vat_breakdown],
        referenced_invoice_id=invoice.id, referenced_invoice_number=invoice.number,
        referenced_invoice_date=invoice.issued_at.astimezone(zone(account.timezone)).date(), reason=request.reason,
    )
    year = issued_at.astimezone(zone(account.timezone)).year
    note.number = format_invoice_number(CREDIT_NOTE_SERIES, year, next_sequence(session, f"{CREDIT_NOTE_SERIES}-{year}"))
    rendered = render_document(settings, note, account, customer, full_credit=-gross == invoice.gross_cents)
    note.pdf, note.xml = rendered.pdf, rendered.xml
    _seal(session, head, note)
    session.add(note)
    session.flush()
    payment = _book_credit(session, note, invoice, issued_at, issued_by)
    return note, payment


def _ledger_id(credit_note_id: str) -> str:
    return f"creditNote:{credit_note_id}"


def _book_credit(session: Session, note: Invoice, invoice: Invoice, at: datetime, issued_by: str) -> Payment:
    amount = -note.gross_cents
    payment = Payment(
        id=_ledger_id(note.id), correlator_id=_ledger_id(note.id), billing_account_id=note.billing_account_id, invoice_id=invoice.id,
        amount_cents=amount, currency=note.currency, method="credit_note", status="succeeded",
        description=f"Credit note {note.number} for invoice {invoice.number}", recorded_by=issued_by, created_at=at,
    )
    session.add(payment)
    session.flush()
    if invoice.state in OPEN_STATES and invoice.gross_cents > invoice.paid_cents:
        item = OpenItem(invoice_id=invoice.id, due_at=invoice.due_at, open_cents=invoice.gross_cents - invoice.paid_cents)
        allocations, _credit = allocate(amount, [item])
        for allocation in allocations:
            record_settlement(session, payment, invoice, allocation.amount_cents, at)
    return payment
