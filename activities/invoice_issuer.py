"""Issues an invoice: gapless number, stored lines and totals, billed marks and the PDF, all in one transaction.
If anything fails the transaction rolls back, the number included, so the series has no gap."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from activities.invoice_charges import PendingCharge
from adapters.documents.invoice_pdf import InvoicePdfData, PdfLine, PdfParty, PdfVat, render_invoice_pdf
from config.settings import Settings
from domain.billing_cycle import BillingPeriod, zone
from domain.invoicing import ComputedInvoice, compute_invoice, format_invoice_number
from domain.money import to_minor
from persistence.tables import BillingAccount, BilledCharge, Customer, Invoice, InvoiceSequence, UsageRecord

INVOICE_SERIES = "INV"
INVOICE_ID_NAMESPACE = uuid.UUID("5b0f5f7e-2f7e-4d0b-8d57-0c3c1b7f4a10")


def invoice_id_for(billing_account_id: str, period_start: datetime, kind: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"{billing_account_id}|{period_start.isoformat()}|{kind}"))


def next_sequence(session: Session, series: str) -> int:
    """Takes the next number of a series inside the caller's transaction (row-locked on PostgreSQL,
    write-locked on SQLite), so two workers never get the same number and a rollback leaves no gap."""
    if session.get(InvoiceSequence, series) is None:
        session.add(InvoiceSequence(series=series, last_value=0))
        session.flush()
    session.exec(update(InvoiceSequence).where(InvoiceSequence.series == series).values(last_value=InvoiceSequence.last_value + 1))
    return session.exec(select(InvoiceSequence.last_value).where(InvoiceSequence.series == series)).one()


def _period_label(period: BillingPeriod) -> str:
    last_day = period.local_end - timedelta(days=1) if period.local_end > period.local_start else period.local_end
    return f"{period.local_start:%d.%m.%Y} – {last_day:%d.%m.%Y}"


def _party_from_customer(customer: Customer) -> PdfParty:
    address = customer.address or {}
    lines = [address.get("street1"), " ".join(p for p in (address.get("postCode"), address.get("city")) if p), address.get("country")]
    return PdfParty(name=customer.name, address_lines=[line for line in lines if line] or ["(no postal address on file)"], vat_id=customer.vat_id)


def render_pdf(settings: Settings, invoice: Invoice, account: BillingAccount, customer: Customer, computed: ComputedInvoice, period: BillingPeriod) -> bytes:
    tz = zone(account.timezone)
    data = InvoicePdfData(
        invoice_number=invoice.number,
        issue_date=invoice.issued_at.astimezone(tz).date(),
        due_date=invoice.due_at.astimezone(tz).date(),
        service_period=_period_label(period),
        seller=PdfParty(name=settings.seller_name, address_lines=[settings.seller_address], vat_id=settings.seller_vat_id),
        buyer=_party_from_customer(customer),
        customer_number=customer.id,
        billing_account_id=account.id,
        lines=[
            PdfLine(line_no=line.line_no, description=line.description, quantity=line.quantity, unit=line.unit, unit_price=line.unit_price,
                    net_amount=line.net_amount, vat_rate=line.vat_rate,
                    period=f"{line.period_start:%d.%m.%Y}–{line.period_end:%d.%m.%Y}" if line.period_start and line.period_end else None)
            for line in computed.lines
        ],
        vat_breakdown=[PdfVat(vat_category=v.vat_category, vat_rate=v.vat_rate, taxable_amount=v.taxable_amount, tax_amount=v.tax_amount) for v in computed.totals.vat_breakdown],
        net_total=computed.totals.net_total, vat_total=computed.totals.vat_total, gross_total=computed.totals.gross_total,
        payment_note=f"Payable by {invoice.due_at.astimezone(tz):%d.%m.%Y}. We collect it from your saved payment method where one is on file.",
    )
    return render_invoice_pdf(data)


def issue_invoice(
    session: Session, settings: Settings, account: BillingAccount, period: BillingPeriod, charges: list[PendingCharge],
    issued_at: datetime, due_at: datetime, kind: str = "cycle",
) -> Invoice | None:
    invoice_id = invoice_id_for(account.id, period.start, kind)
    existing = session.get(Invoice, invoice_id)
    if existing is not None:
        return existing
    # Zero usage lines are not printed, but their records are still marked billed by this invoice.
    printable = [c for c in charges if not (c.line.kind == "usage" and c.line.net_amount == 0)]
    if not printable:
        return None
    computed = compute_invoice([c.line for c in printable])
    year = issued_at.astimezone(zone(account.timezone)).year
    series = f"{INVOICE_SERIES}-{year}"
    number = format_invoice_number(INVOICE_SERIES, year, next_sequence(session, series))
    customer = session.get(Customer, account.customer_id)
    invoice = Invoice(
        id=invoice_id, number=number, kind=kind, billing_account_id=account.id, customer_id=account.customer_id, state="new",
        period_start=period.start, period_end=period.end, local_period_start=period.local_start, local_period_end=period.local_end,
        issued_at=issued_at, due_at=due_at, currency=account.currency,
        net_cents=to_minor(computed.totals.net_total), vat_cents=to_minor(computed.totals.vat_total), gross_cents=to_minor(computed.totals.gross_total),
        lines=[line.model_dump(mode="json") for line in computed.lines],
        vat_breakdown=[v.model_dump(mode="json") for v in computed.totals.vat_breakdown],
    )
    invoice.pdf = render_pdf(settings, invoice, account, customer, computed, period)
    session.add(invoice)
    _mark_billed(session, charges, invoice_id)
    return invoice


def _mark_billed(session: Session, charges: list[PendingCharge], invoice_id: str) -> None:
    usage_ids = [uid for c in charges for uid in c.usage_ids]
    if usage_ids:
        session.exec(update(UsageRecord).where(UsageRecord.id.in_(usage_ids)).values(invoice_id=invoice_id, status="billed"))
    for charge in charges:
        for key in charge.charge_keys:
            session.add(BilledCharge(key=key, invoice_id=invoice_id))
