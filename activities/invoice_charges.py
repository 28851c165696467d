"""Collects what an account owes for a closed period: fees in advance, usage in arrears, one-time fees.

The amounts come from `domain.charges.compute_cycle_charges`; this module only reads its inputs from the
database and turns its result into the `PendingCharge`s the issuer (activities.invoice_issuer) takes:

* Products become `ProductTimeline`s: the plan at activation, then each plan change (`product_plan_span`,
  TMF622 modify; a downgrade waiting for the cycle end is already in the timeline with its future time),
  the suspensions from the product status history (`product_status_change`) that stop the fee, and the
  termination. Which suspensions stop the fee is the catalog's `suspension_billing` rule, by source: by
  default only a suspension staff grant ("manual") is free; a barring for arrears (dunning, §61 TKG: the
  customer stays liable for the monthly fee) or for a spending cap leaves the fee running.
* Recurring fees already charged are the `billed_fee` rows of issued invoices; a period billed before
  billed fees were stored (a `recurring:<product>:<period start>` BilledCharge mark) counts as charged
  for the product's active part of that period at its plan's fee.
* Usage: rated records no invoice has taken. With a grace period (`grace`: the billing profile's
  `usage_grace`, which activities.billing.issue_cycle_invoice passes) records that arrived after the period end + grace wait for the next invoice;
  without one, every record that arrived before the invoice is built is billed (no cut-off).
* One-time charges: activation fees ("activation:<product>") and pending charges (services.pending_charges,
  which already leaves out every category O charge: those are billed on a fee-only document). Promotions (`product_discount`).
* Account credit is NOT applied here: money the customer has with us is an unallocated payment, which
  activities.ledger.allocate_payments settles against the new invoice. Passing it as
  `CycleInputs.account_credit` too would apply it twice.

Each `PendingCharge` carries the keys to mark billed (`charge_keys`, `usage_ids`) and the `BilledFee`s to
store (`billed_fees`), both written in the invoice's transaction (invoice_issuer._mark_billed). A plain
charge of a period's fee that nothing billed before keeps its `recurring:` mark and its one-line
"monthly fee" presentation; credits and plan-change lines are printed as the domain words them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, col, select

from domain.billing_cycle import BillingPeriod, CycleSpec, next_period, period_containing, zone
from domain.catalog import Catalog, ProductOffering
from domain.charges import (
    BilledFee,
    CycleCharge,
    CycleInputs,
    Discount,
    OneTimeCharge,
    PlanSpan,
    ProductTimeline,
    Suspension,
    UsageItem,
    compute_cycle_charges,
)
from domain.charges import USAGE_LABELS as _DOMAIN_USAGE_LABELS
from domain.invoicing import ChargeLine
from domain.money import from_micros
from domain.proration import active_fraction
from domain.vat import rate_class_for
from persistence.tables import (
    BilledCharge,
    BilledFeeRow,
    Product,
    ProductDiscount,
    ProductPlanSpan,
    ProductStatusChange,
    UsageRecord,
)
from services.pending_charges import as_charge_line, billed_key, exemption_reason, unbilled_pending_charges
from services.plan_changes import apply_due_plan_changes

USAGE_LABELS = dict(_DOMAIN_USAGE_LABELS)
SUSPENDED = "suspended"
# "No cut-off" for late usage: every record that arrived before the invoice is built is billed.
_NO_CUTOFF = timedelta(days=3650)


class _ChargeKeys(list):
    """A charge's BilledCharge keys that also carry its billed fees, so the fees survive code that rebuilds
    a PendingCharge from (line, charge_keys, usage_ids), as invoice_issuer._apply_vat_treatment does for a
    reverse-charge buyer; losing them would bill a credited or re-planned fee again."""

    billed_fees: list[BilledFee]


@dataclass
class PendingCharge:
    """A charge line plus what marks it billed, so the same fee or record is never invoiced twice:
    BilledCharge keys, usage record ids, and the recurring fees (domain.charges.BilledFee) to store."""

    line: ChargeLine
    charge_keys: list[str]
    usage_ids: list[str]
    billed_fees: list[BilledFee] = field(default_factory=list)
    # BT-120 for a line outside the scope of VAT (category O): why it is not taxable, e.g. a late fee is damages.
    vat_exemption: str | None = None

    def __post_init__(self) -> None:
        if self.billed_fees:
            keys = _ChargeKeys(self.charge_keys)
            keys.billed_fees = list(self.billed_fees)
            self.charge_keys = keys
        elif (carried := getattr(self.charge_keys, "billed_fees", None)) is not None:
            self.billed_fees = list(carried)


def legacy_recurring_key(product_id: str, period: BillingPeriod) -> str:
    return f"recurring:{product_id}:{period.start.isoformat()}"


# --- reading the inputs --------------------------------------------------------------------------


def _offerings(products: list[Product], catalog: Catalog) -> dict[str, ProductOffering]:
    return {p.id: o for p in products if p.billing_start is not None and (o := catalog.offering(p.offering_id)) is not None}


def plan_spans(session: Session, product: Product, catalog: Catalog) -> list[PlanSpan]:
    """The product's plans in order: the one it was activated with, then each recorded change."""
    changes = list(session.exec(select(ProductPlanSpan).where(ProductPlanSpan.product_id == product.id)
                                .order_by(col(ProductPlanSpan.effective_at))))
    first_offering = (changes[0].previous_offering_id if changes else None) or product.offering_id
    spans = [(first_offering, product.billing_start)]
    for change in changes:
        if change.effective_at <= spans[-1][1]:
            spans[-1] = (change.offering_id, spans[-1][1])  # a change at or before activation: that plan from the start
        else:
            spans.append((change.offering_id, change.effective_at))
    plans = []
    for offering_id, effective_at in spans:
        offering = catalog.offering(offering_id)
        if offering is None:
            raise ValueError(f"product {product.id} has plan {offering_id!r}, which the catalog does not know")
        plans.append(PlanSpan(plan_id=offering.id, name=offering.name, monthly_fee=offering.monthly_fee, effective_at=effective_at))
    return plans


def fee_free_suspensions(session: Session, product_id: str, catalog: Catalog) -> list[Suspension]:
    """Stretches in `suspended` status that stop the fee: from a change into `suspended` (out of another
    status) by a source the catalog lists as free (by default staff, not dunning or a spending cap), until
    the next change of any kind. A change from suspended to suspended never starts a free stretch and ends
    one: staff suspending a line already barred for arrears, or restoring it while the bar stays, leaves
    the customer liable for the fee."""
    free = set(catalog.suspension_billing.free_sources)
    changes = session.exec(select(ProductStatusChange).where(ProductStatusChange.product_id == product_id)
                           .order_by(col(ProductStatusChange.at), col(ProductStatusChange.id)))
    suspensions: list[Suspension] = []
    started: datetime | None = None
    for change in changes:
        if started is not None and change.at > started:
            suspensions.append(Suspension(start=started, end=change.at))
        entering = change.to_status == SUSPENDED and change.from_status != SUSPENDED
        started = change.at if entering and change.source in free else None
    if started is not None:
        suspensions.append(Suspension(start=started))
    return suspensions


def timelines(session: Session, products: list[Product], catalog: Catalog) -> list[ProductTimeline]:
    offerings = _offerings(products, catalog)
    result = []
    for product in products:
        offering = offerings.get(product.id)
        if offering is None:
            continue
        result.append(ProductTimeline(
            product_id=product.id, label=product.msisdn, plans=plan_spans(session, product, catalog),
            suspensions=fee_free_suspensions(session, product.id, catalog), terminated_at=product.termination_date,
            vat_rate_class=rate_class_for(offering.vat_rate),
        ))
    return result


def _row_fee(row: BilledFeeRow) -> BilledFee:
    return BilledFee(product_id=row.product_id, plan_id=row.plan_id, period_start=row.period_start, covered_from=row.covered_from,
                     covered_to=row.covered_to, monthly_fee=from_micros(row.monthly_fee_micros), net_fee=from_micros(row.net_fee_micros),
                     direction=row.direction, times=row.times)


def billed_fees(session: Session, products: list[Product], catalog: Catalog, spec: CycleSpec, periods: list[BillingPeriod]) -> list[BilledFee]:
    """What issued invoices charged for these products in these periods: stored billed fees, and for a period
    billed before they were stored (only its `recurring:` mark) the product's active part at its plan's fee."""
    by_id = {p.id: p for p in products}
    starts = [p.start for p in periods]
    rows = list(session.exec(select(BilledFeeRow).where(col(BilledFeeRow.product_id).in_(list(by_id)), col(BilledFeeRow.period_start).in_(starts))
                             .order_by(col(BilledFeeRow.invoice_id), col(BilledFeeRow.seq)))) if by_id else []
    fees = [_row_fee(row) for row in rows]
    stored = {(row.product_id, row.period_start) for row in rows}
    for product in products:
        if product.billing_start is None:
            continue
        for period in periods:
            if (product.id, period.start) in stored or session.get(BilledCharge, legacy_recurring_key(product.id, period)) is None:
                continue
            covered_from = max(period.start, product.billing_start)
            covered_to = min(period.end, product.termination_date or period.end)
            if covered_to > covered_from:
                plan = [p for p in plan_spans(session, product, catalog) if p.effective_at <= covered_from][-1]
                fees.append(BilledFee(product_id=product.id, plan_id=plan.plan_id, period_start=period.start, covered_from=covered_from,
                                      covered_to=covered_to, monthly_fee=plan.monthly_fee, net_fee=plan.monthly_fee, direction="charge"))
    return fees


def unbilled_usage(session: Session, billing_account_id: str, before: datetime) -> list[UsageItem]:
    records = session.exec(select(UsageRecord).where(UsageRecord.billing_account_id == billing_account_id, UsageRecord.invoice_id.is_(None),
                                                     UsageRecord.event_time < before).order_by(col(UsageRecord.event_time), col(UsageRecord.id)))
    return [UsageItem(record_id=r.id, product_id=r.product_id, usage_type=r.usage_type, event_time=r.event_time, received_at=r.received_at,
                      amount=from_micros(r.amount_micros), chargeable_units=r.chargeable_units) for r in records]


def activation_fees(session: Session, products: list[Product], catalog: Catalog) -> tuple[list[OneTimeCharge], list[str]]:
    """(the activation fees of these products, the keys of those already billed)."""
    charges, billed = [], []
    for product in products:
        if product.billing_start is None:
            continue
        offering = catalog.offering(plan_spans(session, product, catalog)[0].plan_id)  # the plan it was activated with
        if offering is None or offering.activation_fee <= 0:
            continue
        key = f"activation:{product.id}"
        charges.append(OneTimeCharge(key=key, product_id=product.id, description=f"{offering.name} activation fee", amount=offering.activation_fee,
                                     unit_price=offering.activation_fee, incurred_at=product.billing_start,
                                     vat_rate_class=rate_class_for(offering.vat_rate)))
        if session.get(BilledCharge, key) is not None:
            billed.append(key)
    return charges, billed


def discounts(session: Session, products: list[Product]) -> list[Discount]:
    ids = [p.id for p in products if p.billing_start is not None]
    if not ids:
        return []
    rows = session.exec(select(ProductDiscount).where(col(ProductDiscount.product_id).in_(ids)).order_by(col(ProductDiscount.id)))
    return [Discount(id=row.id, name=row.name, kind=row.kind, value=Decimal(row.value), applies_to=row.applies_to,
                     product_id=row.product_id if row.applies_to == "recurring" else None, first_cycle_at=row.first_cycle_at, cycles=row.cycles)
            for row in rows]


def cycle_inputs(session: Session, billing_account_id: str, products: list[Product], catalog: Catalog, spec: CycleSpec, period: BillingPeriod,
                 *, grace: timedelta | None = None, with_usage: bool = True, with_one_time: bool = True,
                 as_of: datetime | None = None) -> CycleInputs:
    """Everything domain.charges needs for the invoice closing `period`, read from the database. Plan
    changes due by the period end (or `as_of`; a downgrade at the cycle end) are applied to the products first."""
    apply_due_plan_changes(session, catalog, [p.id for p in products], as_of or period.end)
    billed_products = [p for p in products if p.id in _offerings(products, catalog)]
    one_time, billed_keys = activation_fees(session, billed_products, catalog) if with_one_time else ([], [])
    return CycleInputs(
        spec=spec, period=period, products=timelines(session, billed_products, catalog),
        billed_fees=billed_fees(session, billed_products, catalog, spec, [period, next_period(spec, period)]),
        usage=unbilled_usage(session, billing_account_id, period.end) if with_usage else [],
        usage_grace=_NO_CUTOFF if grace is None else grace,
        one_time=one_time, billed_keys=billed_keys, discounts=discounts(session, billed_products),
    )


# --- turning the result into pending charges -----------------------------------------------------


def _pending(charges: list[CycleCharge], inputs: CycleInputs, session: Session, catalog: Catalog, products: dict[str, Product]) -> list[PendingCharge]:
    periods = {p.start: p for p in (inputs.period, next_period(inputs.spec, inputs.period))}
    previously = {(f.product_id, f.period_start) for f in inputs.billed_fees}
    recurring = defaultdict(list)
    for charge in charges:
        if charge.billed_fee is not None:
            recurring[(charge.billed_fee.product_id, charge.billed_fee.period_start)].append(charge)
    pending: list[PendingCharge] = []
    for charge in charges:
        keys = [charge.one_time_key] if charge.one_time_key else []
        fees = [charge.billed_fee] if charge.billed_fee is not None else []
        line = charge.line
        group = (charge.billed_fee.product_id, charge.billed_fee.period_start) if charge.billed_fee is not None else None
        if group is not None and group not in previously and len(recurring[group]) == 1 and charge.source == "recurring" \
                and charge.billed_fee.net_fee == charge.billed_fee.monthly_fee:
            # The period's fee, billed for the first time in one piece: the classic one-line presentation and its mark.
            period = periods[group[1]]
            line = _plain_fee_line(inputs, catalog, products[group[0]], period, charge)
            key = legacy_recurring_key(group[0], period)
            if session.get(BilledCharge, key) is None:
                keys.append(key)
        pending.append(PendingCharge(line, keys, list(charge.usage_ids), fees))
    return pending


def _plain_fee_line(inputs: CycleInputs, catalog: Catalog, product: Product, period: BillingPeriod, charge: CycleCharge) -> ChargeLine:
    fee = charge.billed_fee
    offering = catalog.offering(fee.plan_id)
    name = offering.name if offering else fee.plan_id
    fraction = active_fraction(period, fee.covered_from, fee.covered_to, inputs.spec.timezone, inputs.spec.kind)
    label = f"{name} monthly fee" if fraction == 1 else f"{name} monthly fee, prorated {fraction:.4f}"
    return charge.line.model_copy(update={"description": label, "quantity": Decimal(1), "unit": "MON", "unit_price": fee.monthly_fee,
                                          "period_start": period.local_start, "period_end": period.local_end})


def cycle_charges(session: Session, billing_account_id: str, products: list[Product], catalog: Catalog, spec: CycleSpec, period: BillingPeriod,
                  *, grace: timedelta | None = None, in_advance: bool = True) -> list[PendingCharge]:
    """Every charge of the invoice closing `period`, in one computation (invoice discounts see every line):
    recurring fees and credits, one-time charges, usage, promotions, then pending charges."""
    inputs = cycle_inputs(session, billing_account_id, products, catalog, spec, period, grace=grace)
    return _computed(session, inputs, catalog, products, in_advance) + _pending_one_time(session, billing_account_id)


def _computed(session: Session, inputs: CycleInputs, catalog: Catalog, products: list[Product], in_advance: bool) -> list[PendingCharge]:
    result = compute_cycle_charges(inputs)
    charges = result.charges
    if not in_advance:  # an off-cycle bill takes nothing of a later period
        charges = [c for c in charges if c.billed_fee is None or c.billed_fee.period_start < inputs.period.end]
    return _pending(charges, inputs, session, catalog, {p.id: p for p in products})


def _pending_one_time(session: Session, billing_account_id: str) -> list[PendingCharge]:
    rows = unbilled_pending_charges(session, billing_account_id, lock=True)
    return [pending_charge(row) for row in rows]


def pending_charge(row) -> PendingCharge:  # noqa: ANN001 - a persistence.tables.PendingOneTimeCharge
    """A pending one-time charge as the issuer takes it (with its BT-120 reason when it is outside the scope of VAT)."""
    return PendingCharge(line=as_charge_line(row), charge_keys=[billed_key(row)], usage_ids=[], vat_exemption=exemption_reason(row))


# --- the entry points activities.billing calls -----------------------------------------------------


def recurring_charges(session: Session, products: list[Product], catalog: Catalog, spec: CycleSpec, period: BillingPeriod,
                      *, in_advance: bool = True) -> list[PendingCharge]:
    """Recurring fees and credits for the closed period (reconciled with what was billed) and the next
    period's fee in advance, one-time charges and promotions; usage comes from `usage_charges`. An off-cycle
    bill (`in_advance=False`) takes the current period's fee only: nothing of a later period is due yet.
    (Prefer `cycle_charges`: an invoice-wide promotion there also sees the usage lines.)"""
    if not products:
        return []
    account_id = products[0].billing_account_id
    inputs = cycle_inputs(session, account_id, products, catalog, spec, period, with_usage=False)
    return _computed(session, inputs, catalog, products, in_advance) + _pending_one_time(session, account_id)


def usage_charges(session: Session, billing_account_id: str, catalog: Catalog, products: dict[str, Product], period: BillingPeriod,
                  *, label_period: BillingPeriod | None = None, grace: timedelta | None = None, spec: CycleSpec | None = None) -> list[PendingCharge]:
    """Rated usage of this period and any late records of earlier ones that no invoice has taken yet, one
    line per product, usage type and usage period (late records of an earlier period get their own line).
    With `grace`, records that arrived after the period end + grace wait for the next invoice.
    `label_period` is accepted for compatibility (lines name the period their usage belongs to)."""
    spec = spec or _spec_of(session, billing_account_id, period)
    product_list = list(products.values())
    inputs = cycle_inputs(session, billing_account_id, product_list, catalog, spec, period, grace=grace, with_one_time=False)
    usage = [c for c in compute_cycle_charges(inputs).charges if c.source == "usage"]
    return [PendingCharge(c.line, [], list(c.usage_ids)) for c in usage]


def _spec_of(session: Session, billing_account_id: str, period: BillingPeriod) -> CycleSpec:
    """The cycle a period belongs to, for callers that pass only the period: monthly on its local start day,
    or fixed with its length (usage lines only need to find each record's period)."""
    from persistence.tables import BillingAccount

    account = session.get(BillingAccount, billing_account_id)
    timezone = account.timezone if account is not None else "Europe/Berlin"
    local_start_at = period.start.astimezone(zone(timezone))
    is_monthly = local_start_at.hour == 0 and local_start_at.minute == 0 and (period.local_end - period.local_start).days >= 28
    if is_monthly and account is not None:
        spec = CycleSpec(kind="monthly", bill_cycle_day=account.bill_cycle_day, timezone=timezone)
        if period_containing(spec, period.start) == period:
            return spec
    return CycleSpec(kind="fixed", timezone=timezone, period_seconds=max(1, int(period.duration.total_seconds())), anchor=period.start)


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
    period's fee as far as no invoice has taken it (prorated to a termination date, credited where an
    earlier invoice billed more), and every unbilled rated usage record of this and earlier periods. The
    same billed fees and marks as cycle invoices keep it from being billed twice."""
    current = period_containing(spec, cutoff)
    covered = on_demand_period(spec, cutoff)
    inputs = cycle_inputs(session, billing_account_id, products, catalog, spec, current, as_of=cutoff)
    charges = _computed(session, inputs, catalog, products, in_advance=False) + _pending_one_time(session, billing_account_id)
    return covered, charges

