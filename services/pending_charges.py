"""One-time charges waiting to be invoiced (dunning late fees, chargeback fees).

A pending charge is written once per business key (`add_pending_charge` is idempotent), billed once, or
waived by staff before that. A charge outside the scope of VAT (category O: a German late fee or a
chargeback fee passed on is damages, not a supply) cannot share an invoice with taxed lines (EN 16931
BR-O-11): it is billed only on a fee-only document (activities.dunning_fee_invoice: a dunning late fee at
once when the level adds it, every other pending O charge right after the account's next cycle invoice)
and `unbilled_pending_charges`, the gathering for cycle and on-demand invoices, never returns it
(`unbilled_out_of_scope_charges` does). How an invoice picks the others up:

    rows = unbilled_pending_charges(session, billing_account_id, lock=True)
    charges += [PendingCharge(line=as_charge_line(row), charge_keys=[billed_key(row)], usage_ids=[]) for row in rows]
    ... issue_invoice(...) marks BilledCharge(billed_key(row)) as for every other charge, then
    mark_billed(session, [row.key for row in rows], invoice.id)

`unbilled_pending_charges` also leaves out rows whose BilledCharge mark exists, so even an issuer that
forgot `mark_billed` never bills a fee twice.

A category O charge states why it is outside the scope of VAT (BT-120, with BT-121 `VATEX-EU-O`):
`exemption_reason`, by the charge's kind (OUT_OF_SCOPE_REASONS)."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import not_
from sqlmodel import Session, col, select

from domain.invoicing import ChargeLine
from domain.money import from_minor, to_minor
from persistence.tables import BilledCharge, PendingOneTimeCharge
from services.errors import Conflict, NotFound
from services.query import utcnow

PENDING = "pending"
BILLED = "billed"
WAIVED = "waived"
# Charges in these VAT categories are billed only on a document of their own (BR-O-11: an "O" invoice has
# no other category), never gathered for a cycle or on-demand invoice.
OWN_INVOICE_CATEGORIES = frozenset({"O"})
LATE_FEE = "late_fee"
CHARGEBACK_FEE = "chargeback_fee"
# BT-120 of a category O charge, by its kind: why it is not subject to VAT.
OUT_OF_SCOPE_REASONS = {
    LATE_FEE: "Nicht steuerbarer Schadensersatz (Mahngebühr)",
    CHARGEBACK_FEE: "Nicht steuerbarer Schadensersatz (Rücklastschrift-/Chargebackgebühr)",
}
OUT_OF_SCOPE_DEFAULT_REASON = "Nicht steuerbarer Schadensersatz"


def billed_key(row: PendingOneTimeCharge) -> str:
    """The BilledCharge key that marks this charge as invoiced."""
    return f"pending-charge:{row.key}"


def add_pending_charge(session: Session, *, key: str, billing_account_id: str, amount: Decimal, description: str, kind: str = "late_fee",
                       vat_rate: Decimal = Decimal("0"), vat_category: str = "O", source: str | None = None,
                       at: datetime | None = None) -> tuple[PendingOneTimeCharge, bool]:
    """Records a charge for the account's next invoice, once per `key`: the same key with the same content
    returns the stored row (created False); the same key with other content is a Conflict."""
    if isinstance(amount, float) or amount <= 0:
        raise ValueError(f"a pending charge needs a positive exact amount, got {amount!r}")
    amount_cents = to_minor(amount)
    if from_minor(amount_cents) != amount:
        raise ValueError(f"a pending charge is a whole number of cents, got {amount}")
    # Validates rate and category together the way the invoice will (e.g. category O needs 0 %).
    ChargeLine(kind="one_time", description=description, net_amount=amount, vat_rate=vat_rate, vat_category=vat_category)
    existing = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.key == key)).first()
    if existing is not None:
        same = (existing.billing_account_id, existing.amount_cents, existing.kind, existing.description, Decimal(existing.vat_rate),
                existing.vat_category) == (billing_account_id, amount_cents, kind, description, vat_rate, vat_category)
        if not same:
            raise Conflict(f"pending charge {key!r} already exists with different content", code="pending_charge_key_reused")
        return existing, False
    row = PendingOneTimeCharge(key=key, billing_account_id=billing_account_id, kind=kind, description=description, amount_cents=amount_cents,
                               vat_rate=str(vat_rate), vat_category=vat_category, source=source, status=PENDING, created_at=at or utcnow())
    session.add(row)
    session.flush()
    return row, True


def exemption_reason(row: PendingOneTimeCharge) -> str | None:
    """BT-120 of a charge outside the scope of VAT (category O); None for any other category."""
    if row.vat_category != "O":
        return None
    return OUT_OF_SCOPE_REASONS.get(row.kind, OUT_OF_SCOPE_DEFAULT_REASON)


def _unbilled(session: Session, billing_account_id: str, *, own_invoice: bool, lock: bool) -> list[PendingOneTimeCharge]:
    return unbilled_pending_charges_of(session, [billing_account_id], own_invoice=own_invoice, lock=lock)[billing_account_id]


def unbilled_pending_charges_of(session: Session, billing_account_ids: list[str], *, own_invoice: bool = False,
                                lock: bool = False) -> dict[str, list[PendingOneTimeCharge]]:
    """`unbilled_pending_charges` (or, with `own_invoice`, `unbilled_out_of_scope_charges`) of many accounts in
    two queries (a bill run); each account's rows oldest first."""
    found: dict[str, list[PendingOneTimeCharge]] = {account_id: [] for account_id in billing_account_ids}
    if not billing_account_ids:
        return found
    in_own = col(PendingOneTimeCharge.vat_category).in_(OWN_INVOICE_CATEGORIES)
    statement = (select(PendingOneTimeCharge)
                 .where(col(PendingOneTimeCharge.billing_account_id).in_(billing_account_ids), PendingOneTimeCharge.status == PENDING,
                        in_own if own_invoice else not_(in_own))
                 .order_by(col(PendingOneTimeCharge.created_at), col(PendingOneTimeCharge.id)))
    if lock:
        statement = statement.with_for_update()
    rows = list(session.exec(statement))
    keys = [billed_key(row) for row in rows]
    billed = set(session.exec(select(BilledCharge.key).where(col(BilledCharge.key).in_(keys)))) if keys else set()
    for row in rows:
        if billed_key(row) not in billed:
            found[row.billing_account_id].append(row)
    return found


def unbilled_pending_charges(session: Session, billing_account_id: str, *, lock: bool = False) -> list[PendingOneTimeCharge]:
    """The account's charges no invoice has taken and nobody waived, oldest first, for a cycle or on-demand
    invoice: never one outside the scope of VAT (OWN_INVOICE_CATEGORIES, of any kind: billed on a fee-only
    document). `lock` takes row locks (PostgreSQL) so a concurrent waiver waits for the invoice's
    transaction, and vice versa."""
    return _unbilled(session, billing_account_id, own_invoice=False, lock=lock)


def unbilled_out_of_scope_charges(session: Session, billing_account_id: str, *, lock: bool = False) -> list[PendingOneTimeCharge]:
    """The account's pending charges outside the scope of VAT (category O) no document has taken, oldest
    first: what activities.dunning_fee_invoice bills on a fee-only document."""
    return _unbilled(session, billing_account_id, own_invoice=True, lock=lock)


def as_charge_line(row: PendingOneTimeCharge) -> ChargeLine:
    amount = from_minor(row.amount_cents)
    kind = "late_fee" if row.kind == "late_fee" else "one_time"
    return ChargeLine(kind=kind, description=row.description, net_amount=amount, unit_price=amount, vat_rate=Decimal(row.vat_rate),
                      vat_category=row.vat_category)


def mark_billed(session: Session, keys: list[str], invoice_id: str, *, at: datetime | None = None) -> None:
    for key in keys:
        row = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.key == key)).first()
        if row is None:
            raise NotFound("pendingCharge", key)
        if row.status == BILLED and row.invoice_id == invoice_id:
            continue
        if row.status != PENDING:
            raise Conflict(f"pending charge {key!r} is {row.status} and cannot be billed", code="pending_charge_not_pending")
        row.status, row.invoice_id, row.billed_at = BILLED, invoice_id, at or utcnow()
        session.add(row)


def waive_pending_charge(session: Session, key: str, *, actor: str, reason: str, at: datetime | None = None) -> PendingOneTimeCharge:
    """Waives a charge that no invoice has billed yet; waiving it again changes nothing. A billed charge
    cannot be waived here (it is on an issued invoice: that needs a credit note) and is returned as it is,
    for the caller to report."""
    row = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.key == key).with_for_update()).first()
    if row is None:
        raise NotFound("pendingCharge", key)
    if row.status == PENDING and session.get(BilledCharge, billed_key(row)) is None:
        row.status, row.waived_at, row.waived_by, row.waive_reason = WAIVED, at or utcnow(), actor, reason
        session.add(row)
    return row


def charges_from(session: Session, source: str) -> list[PendingOneTimeCharge]:
    return list(session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.source == source)
                             .order_by(col(PendingOneTimeCharge.created_at), col(PendingOneTimeCharge.id))))
