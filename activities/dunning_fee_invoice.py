"""Fee-only documents: charges outside the scope of VAT (EN 16931 category O) billed on an invoice of their own.

A German dunning late fee (Mahngebühr) and a chargeback fee passed on to the customer are damages, not a
supply: outside the scope of VAT, category O. BR-O-11 forbids an "O" line on an invoice with any other
category, so such a charge never joins a cycle or on-demand invoice (services.pending_charges leaves every
category O charge out) and is billed here instead, through the normal issuance path
(activities.invoice_issuer.issue_invoice: gapless number in the normal series, PDF + XML, sealed into the
document chain), due after FEE_PAYMENT_TERMS. It is an open invoice like any other: in the arrears,
allocated, collected and dunned.

* `issue_fee_invoice`: a dunning late fee, at once when the dunning level adds it, one invoice per fee
  (kind `late_fee`, id from the fee's key);
* `issue_pending_fee_invoice`: every other pending category O charge of the account (e.g. a chargeback fee,
  services.disputes), right after the account's cycle invoice (activities.billing.issue_cycle_invoice), all
  on one document (kind `fee`, id from the cycle invoice's id: a retry finds it), sent with the cycle invoice.

BR-O-02/-03/-04: a document with "O" lines carries neither the seller's nor the buyer's VAT identifier (nor a
tax representative's). The issuer leaves them out by itself for a document whose every line is "O"
(invoice_issuer.out_of_scope_only); the seller's tax number (BT-32) stays, as §14 Abs. 4 UStG needs it. BT-120
is the charge's own reason (services.pending_charges.exemption_reason, e.g. "Nicht steuerbarer
Schadensersatz (Mahngebühr)"), BT-121 `VATEX-EU-O`."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlmodel import Session

from activities.invoice_charges import pending_charge
from activities.invoice_issuer import CreditRequest, issue_credit_note, issue_invoice
from config.settings import Settings
from domain.billing_cycle import BillingPeriod, zone
from domain.money import from_minor
from persistence.tables import BillingAccount, Customer, Invoice, PendingOneTimeCharge
from services.pending_charges import mark_billed, unbilled_out_of_scope_charges

LATE_FEE_KIND = "late_fee"
FEE_KIND = "fee"  # a fee-only document of other category O charges (chargeback fees)
FEE_KINDS = (LATE_FEE_KIND, FEE_KIND)
FEE_PAYMENT_TERMS = timedelta(days=14)
FEE_INVOICE_NAMESPACE = uuid.UUID("a3c1f0de-5d0b-4c55-9a43-2b8f5e7d6c11")
# BR-O-10: the reason a document in category O states (shown in the mail and the staff story).
FEE_VAT_NOTE = "Nicht steuerbarer Schadensersatz (Mahngebühr)"


def fee_invoice_id(fee_key: str) -> str:
    return str(uuid.uuid5(FEE_INVOICE_NAMESPACE, fee_key))


def fee_credit_note_id(fee_key: str) -> str:
    return str(uuid.uuid5(FEE_INVOICE_NAMESPACE, f"waive:{fee_key}"))


def pending_fee_invoice_id(cycle_invoice_id: str) -> str:
    """The fee-only document issued with a cycle invoice (activities.billing sends it with that invoice)."""
    return str(uuid.uuid5(FEE_INVOICE_NAMESPACE, f"with:{cycle_invoice_id}"))


def fee_period(issued_at: datetime, account: BillingAccount) -> BillingPeriod:
    """The fee's "period" is the day it was charged (BT-73/74 must be present for the PDF and XML)."""
    local = issued_at.astimezone(zone(account.timezone)).date()
    return BillingPeriod(start=issued_at, end=issued_at + timedelta(seconds=1), local_start=local, local_end=local + timedelta(days=1))


def issue_fees(session: Session, settings: Settings, account: BillingAccount, fees: list[PendingOneTimeCharge], issued_at: datetime, *,
               invoice_id: str, kind: str, documents_later: bool = False) -> Invoice | None:
    """Issues one fee-only document for `fees` (or returns the one issued before under `invoice_id`) and marks
    them billed. The fees must all be category O, or all not: BR-O-11 (None when there is nothing to bill)."""
    existing = session.get(Invoice, invoice_id)
    if existing is not None or not fees:
        return existing
    if len({fee.vat_category == "O" for fee in fees}) > 1:
        raise ValueError("a fee-only document has either only category O charges or none (EN 16931 BR-O-11)")
    invoice = issue_invoice(session, settings, account, fee_period(issued_at, account), [pending_charge(fee) for fee in fees], issued_at,
                            issued_at + FEE_PAYMENT_TERMS, kind=kind, invoice_id=invoice_id, documents_later=documents_later)
    if invoice is not None:
        mark_billed(session, [fee.key for fee in fees], invoice.id, at=issued_at)
    return invoice


def issue_fee_invoice(session: Session, settings: Settings, account: BillingAccount, fee: PendingOneTimeCharge, issued_at: datetime) -> Invoice:
    """Issues the late-fee invoice for the dunning fee `fee` (or returns the one issued before) and marks the fee billed."""
    return issue_fees(session, settings, account, [fee], issued_at, invoice_id=fee_invoice_id(fee.key), kind=LATE_FEE_KIND)


def issue_pending_fee_invoice(session: Session, settings: Settings, account: BillingAccount, cycle_invoice_id: str, issued_at: datetime,
                              *, documents_later: bool = True) -> Invoice | None:
    """After the cycle invoice `cycle_invoice_id`: every pending category O charge of the account on one fee-only
    document, once (its id comes from the cycle invoice's). None when there is none."""
    invoice_id = pending_fee_invoice_id(cycle_invoice_id)
    existing = session.get(Invoice, invoice_id)
    if existing is not None:
        return existing
    fees = unbilled_out_of_scope_charges(session, account.id, lock=True)
    kind = LATE_FEE_KIND if fees and all(fee.kind == LATE_FEE_KIND for fee in fees) else FEE_KIND
    return issue_fees(session, settings, account, fees, issued_at, invoice_id=invoice_id, kind=kind, documents_later=documents_later)


def credit_fee_invoice(session: Session, settings: Settings, fee: PendingOneTimeCharge, *, reason: str, actor: str, at: datetime) -> Invoice:
    """A credit note over the whole fee invoice (the fee waived after it was invoiced); once per fee."""
    invoice = session.get(Invoice, fee.invoice_id)
    if invoice is None:
        raise LookupError(fee.invoice_id)
    note, _payment = issue_credit_note(session, settings, invoice.id, CreditRequest(reason=f"Mahngebühr erlassen: {reason}"), at,
                                       credit_note_id=fee_credit_note_id(fee.key), issued_by=actor)
    return note


def fee_invoice_mail(invoice: Invoice, customer: Customer | None, seller_name: str) -> tuple[str, str]:
    """Subject and text of the mail a fee-only document or a late fee's credit note goes out with (activities.billing.DocumentMail)."""
    greeting = f"Dear {customer.name if customer else 'customer'},\n\n"
    if invoice.kind == "credit_note":
        return (f"Your credit note {invoice.number}",
                f"{greeting}your credit note {invoice.number} over {from_minor(-invoice.gross_cents)} EUR for invoice {invoice.referenced_invoice_number} "
                f"is attached: the late fee is waived. The amount is set off against open invoices or credited to your account.\n\n{seller_name}")
    if invoice.kind == LATE_FEE_KIND:
        return (f"Your invoice {invoice.number} (Mahngebühr / late fee)",
                f"{greeting}your invoice {invoice.number} over {from_minor(invoice.gross_cents)} EUR for the late fee of the dunning letter is attached. "
                f"It is due on {invoice.due_at:%Y-%m-%d}. {FEE_VAT_NOTE}: no VAT is charged.\n\n{seller_name}")
    return (f"Your invoice {invoice.number} (Gebühren / fees)",
            f"{greeting}your invoice {invoice.number} over {from_minor(invoice.gross_cents)} EUR for fees charged to your account "
            f"({'; '.join(line['description'] for line in invoice.lines)}) is attached. It is due on {invoice.due_at:%Y-%m-%d}. "
            f"The fees are damages outside the scope of VAT: no VAT is charged.\n\n{seller_name}")
