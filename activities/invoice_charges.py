"""Collects what an account owes for a closed period: fees in advance, usage in arrears, one-time fees."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, select

from domain.billing_cycle import BillingPeriod, CycleSpec, next_period, period_containing, zone
from domain.catalog import Catalog
from domain.invoicing import ChargeLine
from domain.money import from_micros
from domain.proration import active_fraction, prorate
from persistence.tables import BilledCharge, Product, UsageRecord

USAGE_LABELS = {"voice": ("Voice calls beyond allowance", "MIN"), "sms": ("SMS beyond allowance", "C62"), "data": ("Data beyond allowance", "MB")}


@dataclass
class PendingCharge:
    """A charge line plus the keys that mark it billed, so the same fee or record is never invoiced twice."""

    line: ChargeLine
    charge_keys: list[str]
    usage_ids: list[str]


def _billed(session: Session, key: str) -> bool:
    return session.get(BilledCharge, key) is not None


def _overlaps(product: Product, start: datetime, end: datetime) -> bool:
    begun = product.billing_start is not None and product.billing_start < end
    ended = product.termination_date is not None and product.termination_date <= start
    return begun and not ended


def recurring_charges(session: Session, products: list[Product], catalog: Catalog, spec: CycleSpec, period: BillingPeriod,
                      *, in_advance: bool = True) -> list[PendingCharge]:
    """The closed period's fee where not yet billed (prorated from activation), and the next period's fee in advance.
    An off-cycle bill (`in_advance=False`) takes the current period's fee only: nothing of a later period is due yet."""
    charges: list[PendingCharge] = []
    upcoming = next_period(spec, period) if in_advance else None
    for product in products:
        offering = catalog.offering(product.offering_id)
        if offering is None:
            continue
        if offering.activation_fee > 0 and not _billed(session, f"activation:{product.id}"):
            charges.append(PendingCharge(
                ChargeLine(kind="one_time", description=f"{offering.name} activation fee", net_amount=offering.activation_fee,
                           unit_price=offering.activation_fee, vat_rate=offering.vat_rate, product_id=product.id),
                [f"activation:{product.id}"], []))
        for billed_period in (p for p in (period, upcoming) if p is not None):
            key = f"recurring:{product.id}:{billed_period.start.isoformat()}"
            if _billed(session, key) or not _overlaps(product, billed_period.start, billed_period.end):
                continue
            fraction = active_fraction(billed_period, product.billing_start, product.termination_date, spec.timezone, spec.kind)
            if fraction <= 0:
                continue
            label = f"{offering.name} monthly fee" if fraction == 1 else f"{offering.name} monthly fee, prorated {fraction:.4f}"
            charges.append(PendingCharge(
                ChargeLine(kind="recurring", description=label, quantity=Decimal(1), unit="MON", unit_price=offering.monthly_fee,
                           net_amount=prorate(offering.monthly_fee, fraction), vat_rate=offering.vat_rate,
                           period_start=billed_period.local_start, period_end=billed_period.local_end, product_id=product.id),
                [key], []))
    return charges


def usage_charges(session: Session, billing_account_id: str, catalog: Catalog, products: dict[str, Product], period: BillingPeriod,
                  *, label_period: BillingPeriod | None = None) -> list[PendingCharge]:
    """Rated usage of this period and any late records of earlier ones that no invoice has taken yet.
    `label_period` is the period printed on the lines (default `period`)."""
    label_period = label_period or period
    records = session.exec(
        select(UsageRecord).where(
            UsageRecord.billing_account_id == billing_account_id,
            UsageRecord.invoice_id.is_(None),
            UsageRecord.period_start <= period.start,
        )
    ).all()
    grouped: dict[tuple[str, str], list[UsageRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.product_id, record.usage_type)].append(record)
    charges: list[PendingCharge] = []
    for (product_id, usage_type), group in sorted(grouped.items()):
        product = products.get(product_id)
        offering = catalog.offering(product.offering_id) if product else None
        label, unit = USAGE_LABELS[usage_type]
        amount = sum((from_micros(r.amount_micros) for r in group), Decimal(0))
        chargeable = sum(r.chargeable_units for r in group)
        name = f"{offering.name} " if offering else ""
        charges.append(PendingCharge(
            ChargeLine(kind="usage", description=f"{name}{label} ({len(group)} records)", quantity=Decimal(chargeable), unit=unit,
                       net_amount=amount, vat_rate=offering.vat_rate if offering else Decimal("19"),
                       period_start=label_period.local_start, period_end=label_period.local_end, product_id=product_id),
            [], [r.id for r in group]))
    return charges


def on_demand_period(spec: CycleSpec, cutoff: datetime) -> BillingPeriod:
    """What an off-cycle bill at `cutoff` covers: the current cycle period from its start up to the cut-off
    (local dates end-exclusive, so the cut-off day is included)."""
    current = period_containing(spec, cutoff)
    local_end = max(cutoff.astimezone(zone(spec.timezone)).date() + timedelta(days=1), current.local_start + timedelta(days=1))
    end = max(cutoff, current.start + timedelta(microseconds=1))
    return BillingPeriod(start=current.start, end=end, local_start=current.local_start, local_end=local_end)


def on_demand_charges(session: Session, billing_account_id: str, products: list[Product], catalog: Catalog, spec: CycleSpec,
                      cutoff: datetime) -> tuple[BillingPeriod, list[PendingCharge]]:
    """Everything not yet billed up to `cutoff` (e.g. at termination): unbilled one-time fees, the current
    period's fee if no invoice has taken it (prorated to a termination date), and every unbilled rated
    usage record of this and earlier periods. The same billed marks as cycle invoices keep it from
    being billed twice."""
    current = period_containing(spec, cutoff)
    covered = on_demand_period(spec, cutoff)
    charges = recurring_charges(session, products, catalog, spec, current, in_advance=False)
    charges += usage_charges(session, billing_account_id, catalog, {p.id: p for p in products}, current, label_period=covered)
    return covered, charges
