"""Collects what an account owes for a closed period: fees in advance, usage in arrears, one-time fees.

The amounts come from `domain.charges` (`compute_cycle_lines`); this module only reads its inputs from the
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
  without one, every record that arrived before the invoice is built is billed (no cut-off). The database sums
  the closed period's billable records per product and usage type (`UsageSummary`: totals and ids, all a usage
  line needs); late records of earlier periods and those past the cut-off come one by one.
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

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import ARRAY, ColumnElement, String, and_, any_, bindparam, case, func
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
    UsageSummary,
    compute_cycle_lines,
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
from services.gc_pause import fewer_gc_passes
from services.pending_charges import (
    as_charge_line,
    billed_key,
    exemption_reason,
    unbilled_pending_charges,
    unbilled_pending_charges_of,
)
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
# For one account or a whole bill run alike (`_gather`): one query per table for all the accounts' products,
# selecting only the needed columns (plain rows, no ORM objects for the bulk: usage); each product's plan
# spans are read once and shared by its timeline, its activation fee and the billed fees of periods billed
# before billed fees were stored; every BilledCharge mark the charges depend on is read in one query.

# A bill run is gathered in chunks of this many accounts (bounded IN lists; each account's rows in one query,
# so they keep the database's order).
_CHUNK = 500


@dataclass
class CycleRequest:
    """One account's invoice closing `period`, as `cycle_charges` takes it, for gathering many at once."""

    billing_account_id: str
    products: list[Product]
    spec: CycleSpec
    period: BillingPeriod
    grace: timedelta | None = None


def _among(session: Session, column: Any, values: list[str]) -> ColumnElement[bool]:
    """`column IN values`, on PostgreSQL as `= ANY(array)`: one parameter instead of one per value (a bill run
    passes hundreds, and expanding them into the statement took longer than running it)."""
    if len(values) == 1:  # one account's invoice: the plain comparison, which the planner knows best
        return col(column) == values[0]
    if session.get_bind().dialect.name == "postgresql":
        return col(column) == any_(bindparam(None, values, type_=ARRAY(String)))
    return col(column).in_(values)


# A bill run's accounts share a few cycles. Cycle specs and periods are frozen values: one object stands for all
# equal ones (`_shared`), so what is worked out once per cycle, here (`_next_period`) and in domain.charges, is
# found by identity instead of being compared field by field for every account.
_Cycle = TypeVar("_Cycle", CycleSpec, BillingPeriod)
_SHARED: dict[CycleSpec | BillingPeriod, CycleSpec | BillingPeriod] = {}
_next_period = lru_cache(maxsize=256)(next_period)


def _shared(value: _Cycle) -> _Cycle:
    if len(_SHARED) > 1024:  # bounded, like the caches it serves
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


def _offerings(products: list[Product], catalog: Catalog) -> dict[str, ProductOffering]:
    return {p.id: o for p in products if p.billing_start is not None and (o := catalog.offering(p.offering_id)) is not None}


def _plan_changes(session: Session, product_ids: list[str]) -> dict[str, list[tuple[str | None, str, datetime]]]:
    """Each product's recorded plan changes in order: (previous offering, offering, effective at)."""
    changes: dict[str, list[tuple[str | None, str, datetime]]] = {product_id: [] for product_id in product_ids}
    if product_ids:
        rows = session.exec(select(ProductPlanSpan.product_id, ProductPlanSpan.previous_offering_id, ProductPlanSpan.offering_id,
                                   ProductPlanSpan.effective_at).where(_among(session, ProductPlanSpan.product_id, product_ids))
                            .order_by(col(ProductPlanSpan.effective_at)))
        for product_id, previous, offering_id, effective_at in rows:
            changes[product_id].append((previous, offering_id, effective_at))
    return changes


def _spans(product: Product, changes: list[tuple[str | None, str, datetime]], catalog: Catalog) -> list[PlanSpan]:
    first_offering = (changes[0][0] if changes else None) or product.offering_id
    spans = [(first_offering, product.billing_start)]
    for _previous, offering_id, effective_at in changes:
        if effective_at <= spans[-1][1]:
            spans[-1] = (offering_id, spans[-1][1])  # a change at or before activation: that plan from the start
        else:
            spans.append((offering_id, effective_at))
    plans = []
    for offering_id, effective_at in spans:
        offering = catalog.offering(offering_id)
        if offering is None:
            raise ValueError(f"product {product.id} has plan {offering_id!r}, which the catalog does not know")
        plans.append(PlanSpan(plan_id=offering.id, name=offering.name, monthly_fee=offering.monthly_fee, effective_at=effective_at))
    return plans


def plan_spans(session: Session, product: Product, catalog: Catalog) -> list[PlanSpan]:
    """The product's plans in order: the one it was activated with, then each recorded change."""
    return _spans(product, _plan_changes(session, [product.id])[product.id], catalog)


def _fee_free_suspensions(session: Session, product_ids: list[str], catalog: Catalog) -> dict[str, list[Suspension]]:
    """Stretches in `suspended` status that stop the fee: from a change into `suspended` (out of another
    status) by a source the catalog lists as free (by default staff, not dunning or a spending cap), until
    the next change of any kind. A change from suspended to suspended never starts a free stretch and ends
    one: staff suspending a line already barred for arrears, or restoring it while the bar stays, leaves
    the customer liable for the fee."""
    free = set(catalog.suspension_billing.free_sources)
    history: dict[str, list[tuple[datetime, str | None, str, str | None]]] = {product_id: [] for product_id in product_ids}
    if product_ids:
        rows = session.exec(select(ProductStatusChange.product_id, ProductStatusChange.at, ProductStatusChange.from_status,
                                   ProductStatusChange.to_status, ProductStatusChange.source)
                            .where(_among(session, ProductStatusChange.product_id, product_ids))
                            .order_by(col(ProductStatusChange.at), col(ProductStatusChange.id)))
        for product_id, at, from_status, to_status, source in rows:
            history[product_id].append((at, from_status, to_status, source))
    result: dict[str, list[Suspension]] = {}
    for product_id, changes in history.items():
        suspensions: list[Suspension] = []
        started: datetime | None = None
        for at, from_status, to_status, source in changes:
            if started is not None and at > started:
                suspensions.append(Suspension(start=started, end=at))
            entering = to_status == SUSPENDED and from_status != SUSPENDED
            started = at if entering and source in free else None
        if started is not None:
            suspensions.append(Suspension(start=started))
        result[product_id] = suspensions
    return result


def fee_free_suspensions(session: Session, product_id: str, catalog: Catalog) -> list[Suspension]:
    """The product's stretches in `suspended` status that stop the fee (see `_fee_free_suspensions`)."""
    return _fee_free_suspensions(session, [product_id], catalog)[product_id]


def _existing_keys(session: Session, keys: list[str]) -> set[str]:
    """Which of these BilledCharge keys are marked billed."""
    if not keys:
        return set()
    return set(session.exec(select(BilledCharge.key).where(_among(session, BilledCharge.key, keys))))


def _stored_fees(session: Session, product_ids: list[str], starts: set[datetime]) -> list[BilledFee]:
    """The billed fees stored for these products in cycles starting at `starts`, in the order they were invoiced."""
    if not product_ids:
        return []
    rows = session.exec(select(BilledFeeRow.product_id, BilledFeeRow.plan_id, BilledFeeRow.period_start, BilledFeeRow.covered_from,
                               BilledFeeRow.covered_to, BilledFeeRow.monthly_fee_micros, BilledFeeRow.net_fee_micros, BilledFeeRow.direction,
                               BilledFeeRow.times)
                        .where(_among(session, BilledFeeRow.product_id, product_ids), col(BilledFeeRow.period_start).in_(sorted(starts)))
                        .order_by(col(BilledFeeRow.invoice_id), col(BilledFeeRow.seq)))
    return [BilledFee(product_id=product_id, plan_id=plan_id, period_start=period_start, covered_from=covered_from, covered_to=covered_to,
                      monthly_fee=from_micros(monthly_micros), net_fee=from_micros(net_micros), direction=direction, times=times)
            for product_id, plan_id, period_start, covered_from, covered_to, monthly_micros, net_micros, direction, times in rows]


def _legacy_fees(products: list[Product], periods: list[BillingPeriod], stored: set[tuple[str, datetime]], marked: set[str],
                 spans: dict[str, list[PlanSpan]]) -> list[BilledFee]:
    """For a period billed before billed fees were stored (only its `recurring:` mark): the product's active
    part of it at its plan's fee."""
    fees = []
    for product in products:
        for period in periods:
            if (product.id, period.start) in stored or legacy_recurring_key(product.id, period) not in marked:
                continue
            covered_from = max(period.start, product.billing_start)
            covered_to = min(period.end, product.termination_date or period.end)
            if covered_to > covered_from:
                plan = [p for p in spans[product.id] if p.effective_at <= covered_from][-1]
                fees.append(BilledFee(product_id=product.id, plan_id=plan.plan_id, period_start=period.start, covered_from=covered_from,
                                      covered_to=covered_to, monthly_fee=plan.monthly_fee, net_fee=plan.monthly_fee, direction="charge"))
    return fees


_UTC = timezone.utc  # what require_utc normalises to: a datetime already in it stays as it is
_SUMMARY_FIELDS = ("product_id", "usage_type", "record_ids", "first_event_at", "last_event_at", "last_received_at", "amount", "chargeable_units")
_new_object = object.__new__
_set = object.__setattr__


def _constructed_summary(values: dict) -> UsageSummary:
    """What `UsageSummary.model_construct(**values)` returns for a complete set of fields, without its per-field
    bookkeeping (an invoice's usage arrives as a few summaries per account; building them was a good part of
    gathering a bill run). Checked against model_construct below."""
    summary = _new_object(UsageSummary)
    _set(summary, "__dict__", values)
    _set(summary, "__pydantic_fields_set__", set(_SUMMARY_FIELDS))
    _set(summary, "__pydantic_extra__", None)
    _set(summary, "__pydantic_private__", None)
    return summary


def _check_constructed_summary() -> bool:
    at = datetime(2026, 1, 1, tzinfo=_UTC)
    values = {"product_id": "p", "usage_type": "voice", "record_ids": ["r"], "first_event_at": at, "last_event_at": at, "last_received_at": at,
              "amount": Decimal(1), "chargeable_units": 1}
    fast, slow = _constructed_summary(dict(values)), UsageSummary.model_construct(**values)
    return (fast == slow and fast.__dict__ == slow.__dict__ and fast.model_fields_set == slow.model_fields_set
            and fast.__pydantic_extra__ == slow.__pydantic_extra__ and fast.__pydantic_private__ == slow.__pydantic_private__
            and list(slow.__dict__) == list(_SUMMARY_FIELDS))


_FAST_SUMMARY = _check_constructed_summary()  # else (another pydantic) validation


def _usage_summary(product_id: str, usage_type: str, ids: list[str] | str, first: datetime, last: datetime, received: datetime,
                   micros: int, units: int) -> UsageSummary:
    """A group's row of `_unbilled_usage`: its record ids (a text[] on PostgreSQL, a JSON array elsewhere), event
    bounds, last arrival and sums."""
    values = {"product_id": product_id, "usage_type": usage_type, "record_ids": ids if isinstance(ids, list) else json.loads(ids),
              "first_event_at": first, "last_event_at": last, "last_received_at": received, "amount": from_micros(micros),
              "chargeable_units": units}
    if not _FAST_SUMMARY or any(at.tzinfo is not _UTC for at in (first, last, received)):
        return UsageSummary(**values)
    # The columns already are what UsageSummary validates to (str, a non-empty list of str, instants in UTC,
    # Decimal, int; min <= max): construct it directly.
    return _constructed_summary(values)


def _usage_item(record_id: str, product_id: str, usage_type: str, event_time: datetime, received_at: datetime, amount_micros: int,
                chargeable_units: int) -> UsageItem:
    return UsageItem(record_id=record_id, product_id=product_id, usage_type=usage_type, event_time=event_time, received_at=received_at,
                     amount=from_micros(amount_micros), chargeable_units=chargeable_units)


def _unbilled_usage(session: Session, requests: list[CycleRequest]) -> dict[str, tuple[list[UsageItem], list[UsageSummary]]]:
    """Each account's rated records no invoice has taken with an event before its period end: those of its
    closed period that arrived before the cut-off summed by product and usage type in the database (most of
    them: the invoice needs only their totals and ids), the rest (late records of earlier periods, records
    that arrived after the cut-off) one by one, by event time and id."""
    usage: dict[str, tuple[list[UsageItem], list[UsageSummary]]] = {r.billing_account_id: ([], []) for r in requests}
    windows: dict[tuple[datetime, datetime, datetime], list[str]] = defaultdict(list)
    for request in requests:  # a bill run's accounts mostly share one period and cut-off: one query for them
        cutoff = request.period.end + (_NO_CUTOFF if request.grace is None else request.grace)
        windows[(request.period.start, request.period.end, cutoff)].append(request.billing_account_id)
    for (start, end, cutoff), accounts in windows.items():
        # One group per product and usage type of the summed records, one per record of the rest (its id as the key).
        single = case((and_(col(UsageRecord.event_time) >= start, col(UsageRecord.received_at) < cutoff), None), else_=UsageRecord.id)
        key = (UsageRecord.billing_account_id, UsageRecord.product_id, UsageRecord.usage_type, single)
        singles = []
        for account_id, product_id, usage_type, record_id, first, last, received, micros, units, ids in session.exec(
                select(*key, func.min(UsageRecord.event_time), func.max(UsageRecord.event_time), func.max(UsageRecord.received_at),
                       func.sum(UsageRecord.amount_micros), func.sum(UsageRecord.chargeable_units), _record_ids(session))
                .where(_among(session, UsageRecord.billing_account_id, accounts),
                       UsageRecord.invoice_id.is_(None), col(UsageRecord.event_time) < end)
                .group_by(*key)):
            if record_id is None:
                usage[account_id][1].append(_usage_summary(product_id, usage_type, ids, first, last, received, int(micros), int(units)))
            else:
                singles.append((first, record_id, account_id, product_id, usage_type, received, int(micros), int(units)))
        singles.sort()
        for event_time, record_id, account_id, product_id, usage_type, received, micros, units in singles:
            usage[account_id][0].append(_usage_item(record_id, product_id, usage_type, event_time, received, micros, units))
    return usage


def _record_ids(session: Session) -> ColumnElement[Any]:
    """A group's record ids, in no particular order (the line sorts them): a text[] on PostgreSQL, a JSON array elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        return func.array_agg(UsageRecord.id)
    return func.json_group_array(UsageRecord.id)


def _activation_fees(products: list[Product], catalog: Catalog, spans: dict[str, list[PlanSpan]],
                     marked: set[str]) -> tuple[list[OneTimeCharge], list[str]]:
    """(the activation fees of these products, the keys of those already billed)."""
    charges, billed = [], []
    for product in products:
        offering = catalog.offering(spans[product.id][0].plan_id)  # the plan it was activated with
        if offering is None or offering.activation_fee <= 0:
            continue
        key = f"activation:{product.id}"
        charges.append(OneTimeCharge(key=key, product_id=product.id, description=f"{offering.name} activation fee", amount=offering.activation_fee,
                                     unit_price=offering.activation_fee, incurred_at=product.billing_start,
                                     vat_rate_class=rate_class_for(offering.vat_rate)))
        if key in marked:
            billed.append(key)
    return charges, billed


def _discounts(session: Session, product_ids: list[str]) -> list[tuple[str, Discount]]:
    """These products' promotions by id, each with the product it was granted on."""
    if not product_ids:
        return []
    rows = session.exec(select(ProductDiscount).where(_among(session, ProductDiscount.product_id, product_ids)).order_by(col(ProductDiscount.id)))
    return [(row.product_id, Discount(id=row.id, name=row.name, kind=row.kind, value=Decimal(row.value), applies_to=row.applies_to,
                                      product_id=row.product_id if row.applies_to == "recurring" else None, first_cycle_at=row.first_cycle_at,
                                      cycles=row.cycles))
            for row in rows]


def cycle_inputs(session: Session, billing_account_id: str, products: list[Product], catalog: Catalog, spec: CycleSpec, period: BillingPeriod,
                 *, grace: timedelta | None = None, with_usage: bool = True, with_one_time: bool = True,
                 as_of: datetime | None = None) -> CycleInputs:
    """Everything domain.charges needs for the invoice closing `period`, read from the database. Plan
    changes due by the period end (or `as_of`; a downgrade at the cycle end) are applied to the products first."""
    request = CycleRequest(billing_account_id, products, spec, period, grace)
    return _gather(session, [request], catalog, with_usage=with_usage, with_one_time=with_one_time, as_of=as_of)[0][0]


def _gather(session: Session, requests: list[CycleRequest], catalog: Catalog, *, with_usage: bool = True, with_one_time: bool = True,
            as_of: datetime | None = None) -> tuple[list[CycleInputs], set[str]]:
    """`cycle_inputs` of each request, and which of their products' `activation:` and `recurring:` BilledCharge
    keys (of each period and the next) are marked billed, which `_pending` reuses. One query per table for all
    requests; each account's rows keep the order the per-account queries gave them."""
    if len({r.billing_account_id for r in requests}) != len(requests):
        raise ValueError("each account can be gathered once per call")
    due: dict[datetime, list[str]] = defaultdict(list)
    for request in requests:
        due[as_of or request.period.end] += [p.id for p in request.products]
    for now, product_ids in due.items():
        apply_due_plan_changes(session, catalog, product_ids, now)
    offerings = [_offerings(r.products, catalog) for r in requests]
    billed_products = [[p for p in r.products if p.id in offered] for r, offered in zip(requests, offerings, strict=True)]
    specs = [_shared(r.spec) for r in requests]
    closed = [_shared(r.period) for r in requests]
    periods = [[period, _next_period(spec, period)] for spec, period in zip(specs, closed, strict=True)]
    every = [p for products in billed_products for p in products]
    ids = [p.id for p in every]
    changes = _plan_changes(session, ids)
    spans = {p.id: _spans(p, changes[p.id], catalog) for p in every}
    marked = _existing_keys(session, [key for products, cycle in zip(billed_products, periods, strict=True) for p in products
                                      for key in (f"activation:{p.id}", *(legacy_recurring_key(p.id, q) for q in cycle))])
    suspensions = _fee_free_suspensions(session, ids, catalog)
    stored = _stored_fees(session, ids, {q.start for cycle in periods for q in cycle})
    owner = {p.id: n for n, products in enumerate(billed_products) for p in products}
    fees: list[list[BilledFee]] = [[] for _ in requests]
    for fee in stored:
        n = owner[fee.product_id]
        if fee.period_start in (periods[n][0].start, periods[n][1].start):
            fees[n].append(fee)
    usage = _unbilled_usage(session, requests) if with_usage else {}
    discounts: list[list[Discount]] = [[] for _ in requests]
    for product_id, discount in _discounts(session, ids):
        discounts[owner[product_id]].append(discount)
    result: list[CycleInputs] = []
    for n, request in enumerate(requests):
        products = billed_products[n]
        one_time, billed_keys = _activation_fees(products, catalog, spans, marked) if with_one_time else ([], [])
        stored_here = {(fee.product_id, fee.period_start) for fee in fees[n]}
        result.append(CycleInputs(
            spec=specs[n], period=closed[n],
            products=[ProductTimeline(product_id=p.id, label=p.msisdn, plans=spans[p.id], suspensions=suspensions[p.id],
                                      terminated_at=p.termination_date, vat_rate_class=rate_class_for(offerings[n][p.id].vat_rate)) for p in products],
            billed_fees=fees[n] + _legacy_fees(products, periods[n], stored_here, marked, spans),
            usage=usage[request.billing_account_id][0] if with_usage else [],
            usage_summaries=usage[request.billing_account_id][1] if with_usage else [],
            usage_grace=_NO_CUTOFF if request.grace is None else request.grace,
            one_time=one_time, billed_keys=billed_keys,
            discounts=discounts[n],
        ))
    return result, marked


# --- turning the result into pending charges -----------------------------------------------------


def _pending(charges: list[CycleCharge], inputs: CycleInputs, session: Session, catalog: Catalog, products: dict[str, Product],
             marked: set[str] | None = None) -> list[PendingCharge]:
    periods = {p.start: p for p in (inputs.period, _next_period(inputs.spec, inputs.period))}
    previously = {(f.product_id, f.period_start) for f in inputs.billed_fees}
    recurring = defaultdict(list)
    for charge in charges:
        if charge.billed_fee is not None:
            recurring[(charge.billed_fee.product_id, charge.billed_fee.period_start)].append(charge)
    plain = {id(charge) for charge in charges if charge.billed_fee is not None and charge.source == "recurring"
             and (group := (charge.billed_fee.product_id, charge.billed_fee.period_start)) not in previously and len(recurring[group]) == 1
             and charge.billed_fee.net_fee == charge.billed_fee.monthly_fee}
    if marked is None:
        marked = _existing_keys(session, [legacy_recurring_key(c.billed_fee.product_id, periods[c.billed_fee.period_start])
                                          for c in charges if id(c) in plain])
    pending: list[PendingCharge] = []
    for charge in charges:
        keys = [charge.one_time_key] if charge.one_time_key else []
        fees = [charge.billed_fee] if charge.billed_fee is not None else []
        line = charge.line
        if id(charge) in plain:
            # The period's fee, billed for the first time in one piece: the classic one-line presentation and its mark.
            product_id, period = charge.billed_fee.product_id, periods[charge.billed_fee.period_start]
            line = _plain_fee_line(inputs, catalog, products[product_id], period, charge)
            key = legacy_recurring_key(product_id, period)
            if key not in marked:
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
    (inputs,), marked = _gather(session, [CycleRequest(billing_account_id, products, spec, period, grace)], catalog)
    return _computed(session, inputs, catalog, products, in_advance, marked) + _pending_one_time(session, billing_account_id)


def cycle_charges_many(session: Session, requests: list[CycleRequest], catalog: Catalog) -> dict[str, list[PendingCharge]]:
    """`cycle_charges` of many accounts (a bill run, e.g. its nightly check or the bench), by account: the same
    charges, gathered with one query per table for every `_CHUNK` accounts instead of per account."""
    result: dict[str, list[PendingCharge]] = {}
    with fewer_gc_passes():  # a chunk's inputs form no cycles (services.gc_pause): full collections cost 25-35 % here
        for first in range(0, len(requests), _CHUNK):
            chunk = requests[first:first + _CHUNK]
            inputs, marked = _gather(session, chunk, catalog)
            one_time = _pending_one_time_many(session, [r.billing_account_id for r in chunk])
            for request, account_inputs in zip(chunk, inputs, strict=True):
                result[request.billing_account_id] = (_computed(session, account_inputs, catalog, request.products, True, marked)
                                                      + one_time[request.billing_account_id])
    return result


def _pending_one_time_many(session: Session, billing_account_ids: list[str]) -> dict[str, list[PendingCharge]]:
    """`_pending_one_time` of many accounts in two queries (locked, each account's rows oldest first)."""
    rows = unbilled_pending_charges_of(session, billing_account_ids, lock=True)
    return {account_id: [pending_charge(row) for row in found] for account_id, found in rows.items()}


def _computed(session: Session, inputs: CycleInputs, catalog: Catalog, products: list[Product], in_advance: bool,
              marked: set[str] | None = None) -> list[PendingCharge]:
    charges = compute_cycle_lines(inputs)  # the issuer totals the invoice
    if not in_advance:  # an off-cycle bill takes nothing of a later period
        charges = [c for c in charges if c.billed_fee is None or c.billed_fee.period_start < inputs.period.end]
    return _pending(charges, inputs, session, catalog, {p.id: p for p in products}, marked)


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
    usage = [c for c in compute_cycle_lines(inputs) if c.source == "usage"]
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

