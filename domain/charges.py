"""What one billing account owes for one closed cycle: the charge lines of its invoice.

`compute_cycle_charges(inputs)` is pure: everything it needs is in `CycleInputs`, and the same inputs
always give the same lines in the same order. The invoice issued at the end of the closed period P
carries:

* Recurring fees, reconciled per product and cycle. For P (and, with `reconcile_since`, earlier
  cycles) the fee the product *should* have cost is worked out from its timeline (plans with their
  effective times, suspensions, termination) and compared, day by day, with what invoices already
  charged (`billed_fees`); the difference becomes lines: a credit for the unused part of a fee
  billed in advance, a charge for the new plan's part. For the upcoming period U the fee is billed
  in advance as far as the timeline is known. Amounts are prorated by local calendar day with
  cumulative rounding (`domain.proration.prorated_part`), so the parts of a cycle always add up to
  its fee in cents. Each recurring line comes with the `BilledFee` to store; stored and passed
  back, the same cycle never yields the same line again (never billed twice, never lost).
* Usage in arrears: rated records not yet billed whose event is before P's end and which arrived
  before the cut-off (P's end + `usage_grace`); later arrivals wait for the next invoice. One line per
  product, usage type and usage period. The records come one by one (`usage`) or, where the caller has
  already picked the billable ones, summed per line (`usage_summaries`: totals and ids); both give the same line.
* One-time charges (activation fee, hardware) not yet billed, incurred before P's end.
* Discounts: percentage or fixed, on a product's recurring fee (per service cycle) or on the whole
  invoice (per invoice cycle), for N cycles from a first cycle. Never more than what they reduce.
* Account credit (money the customer has with us) applied after VAT against the amount due; the
  rest is carried forward. It is a payment on account (EN 16931 BT-113), not a price reduction,
  so it is not a taxable line and does not reduce VAT.

Suspensions: only those that stop the fee are passed in a timeline. Which do is the caller's rule, set
in the catalog (`suspension_billing.free_sources`, applied by activities.invoice_charges): by default a
suspension staff grant is free of charge, while a barring for arrears (dunning) or for a spending cap
leaves the fee running, as German practice has it (§61 TKG: the customer stays liable for the monthly
fee while barred for arrears).

Every line names its product (`product_id`) and the period it covers (`period_start`/`period_end`,
account-local dates, end exclusive). Amounts on lines are whole cents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.billing_cycle import (
    BillingPeriod,
    CycleSpec,
    UtcDatetime,
    local_midnight,
    next_period,
    period_containing,
    require_utc,
    zone,
)
from domain.invoicing import ChargeLine, ComputedInvoice, compute_invoice
from domain.money import MICRO, ExactDecimal, Money, to_cents
from domain.proration import period_units, prorated_part, unit_index
from domain.vat import DOMESTIC, VatRateClass, VatTreatment, line_vat

# A bill run asks the same questions for account after account: the same cycle's periods, the same fees
# prorated over the same spans, the VAT of the same rate class. Each answer is a pure function of hashable
# values (exact arithmetic, whatever the decimal context), so it is worked out once. Equal arguments written
# differently (a fee of 20 or 20.00, an instant in another zone) share an entry, which is right: the same answer.
_period_containing = lru_cache(maxsize=1024)(period_containing)
_next_period = lru_cache(maxsize=1024)(next_period)
_prorated_part = lru_cache(maxsize=4096)(prorated_part)
_line_vat = lru_cache(maxsize=64)(line_vat)

_ZERO = Decimal("0.00")
# A fixed context, so results never depend on the caller's (activities and workflows must be deterministic).
_CONTEXT = Context(prec=40, rounding=ROUND_HALF_EVEN)
_HUNDRED = Decimal(100)
_MICROSECOND = timedelta(microseconds=1)
# Reconciling more cycles than this in one invoice is a caller error (e.g. a far-back reconcile_since
# on a 40-second demo cycle), not something to grind through.
MAX_RECONCILED_CYCLES = 120

USAGE_LABELS: dict[str, tuple[str, str]] = {
    "voice": ("Voice calls beyond allowance", "MIN"),
    "sms": ("SMS beyond allowance", "C62"),
    "data": ("Data beyond allowance", "MB"),
}


# ---------------------------------------------------------------------------------------------
# Plan changes
# ---------------------------------------------------------------------------------------------

PlanChangeTiming = Literal["immediate", "end_of_cycle"]


class PlanChangePolicy(BaseModel):
    """When a plan change takes effect; the catalog may override the default per offering."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upgrade: PlanChangeTiming = "immediate"
    downgrade: PlanChangeTiming = "end_of_cycle"


def change_effective_at(
    change_time: datetime,
    old_fee: Decimal,
    new_fee: Decimal,
    period: BillingPeriod,
    policy: PlanChangePolicy | None = None,
) -> datetime:
    """When a change of plan requested at `change_time` (inside `period`) takes effect, in UTC.

    An upgrade (higher fee) takes effect at once and a downgrade at the end of the cycle, unless
    `policy` says otherwise; a change to an equally priced plan takes effect at once.
    """
    change_time = require_utc(change_time)
    if not period.contains(change_time):
        raise ValueError(f"change at {change_time.isoformat()} is outside the period {period.start} .. {period.end}")
    policy = policy or PlanChangePolicy()
    if new_fee > old_fee:
        timing = policy.upgrade
    elif new_fee < old_fee:
        timing = policy.downgrade
    else:
        timing = "immediate"
    return change_time if timing == "immediate" else period.end


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanSpan(_Frozen):
    """A plan in effect from `effective_at` until the product's next plan takes over."""

    plan_id: str = Field(min_length=1)
    name: str = Field(min_length=1)  # shown on the invoice, e.g. "Mobile M"
    monthly_fee: Money = Field(ge=0)  # the recurring fee for a whole cycle, net of VAT
    effective_at: UtcDatetime


class Suspension(_Frozen):
    """A stretch during which the recurring fee is not charged (the suspension day is not billed,
    the restoration day is). A suspension that stays chargeable (e.g. for arrears) is not listed."""

    start: UtcDatetime
    end: UtcDatetime | None = None  # None: still suspended

    @model_validator(mode="after")
    def _ordered(self) -> Suspension:
        if self.end is not None and self.end <= self.start:
            raise ValueError("a suspension must end after it starts")
        return self


class ProductTimeline(_Frozen):
    """A product's billable history: its plans in order (the first starts billing), suspensions, termination."""

    product_id: str = Field(min_length=1)
    label: str | None = None  # e.g. the MSISDN, shown next to the plan name
    plans: list[PlanSpan] = Field(min_length=1)
    suspensions: list[Suspension] = Field(default_factory=list)
    terminated_at: UtcDatetime | None = None  # the termination day itself is not billed
    vat_rate_class: VatRateClass = "standard"

    @model_validator(mode="after")
    def _ordered(self) -> ProductTimeline:
        times = [plan.effective_at for plan in self.plans]
        if any(later <= earlier for earlier, later in zip(times, times[1:], strict=False)):
            raise ValueError("plans must be in strictly increasing order of effective_at")
        return self


class BilledFee(_Frozen):
    """A recurring charge or credit that an issued invoice carries, for part of one cycle.

    `compute_cycle_charges` returns one with every recurring line; storing it and passing it back
    in `CycleInputs.billed_fees` is what keeps a fee from being billed twice.
    """

    product_id: str
    plan_id: str
    period_start: UtcDatetime  # start of the cycle it belongs to
    covered_from: UtcDatetime  # local midnight of the first day covered (monthly cycles)
    covered_to: UtcDatetime  # exclusive
    monthly_fee: Money  # the plan's fee it was prorated from
    net_fee: Money  # the fee after product discounts (= monthly_fee without discounts)
    direction: Literal["charge", "credit"]
    times: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BilledFee:
        if self.covered_to <= self.covered_from:
            raise ValueError("covered_to must be after covered_from")
        return self


class UsageItem(_Frozen):
    """A rated usage record that no invoice has taken yet."""

    record_id: str = Field(min_length=1)
    product_id: str
    usage_type: str  # voice | sms | data
    event_time: UtcDatetime
    received_at: UtcDatetime
    amount: Money  # rated amount, net, any precision (stored as micros)
    chargeable_units: int = 0


class UsageSummary(_Frozen):
    """Rated records of one product and usage type that this invoice bills, summed by the caller (e.g. in
    SQL) because their line needs only totals: every one is billable (event before the period end, arrived
    before the cut-off) and all fall in one usage period, which `CycleInputs` checks from the bounds.
    Gives the same line as the records passed one by one in `usage`; exact, since amounts add without
    rounding (a line rounds its sum to cents)."""

    product_id: str
    usage_type: str  # voice | sms | data
    record_ids: list[str] = Field(min_length=1)  # what the line marks billed
    first_event_at: UtcDatetime  # the plan in effect then names the line
    last_event_at: UtcDatetime
    last_received_at: UtcDatetime
    amount: Money  # the records' rated amounts added up, net
    chargeable_units: int = 0  # added up

    @model_validator(mode="after")
    def _ordered(self) -> UsageSummary:
        if self.last_event_at < self.first_event_at:
            raise ValueError("a usage summary's last event cannot precede its first")
        return self


class OneTimeCharge(_Frozen):
    """A non-recurring charge, e.g. an activation fee or a handset; `key` marks it billed."""

    key: str = Field(min_length=1)  # e.g. "activation:<product id>"
    product_id: str | None = None
    description: str = Field(min_length=1)
    amount: Money  # line net amount
    quantity: ExactDecimal = Decimal(1)
    unit: str = "EA"
    unit_price: Money | None = None
    incurred_at: UtcDatetime
    vat_rate_class: VatRateClass = "standard"


class Discount(_Frozen):
    """A promotion: `percent` (0 < value <= 100) or `fixed` (an amount per cycle, net).

    `applies_to="recurring"` reduces one product's recurring fee for each service cycle in the
    window (a fixed amount is prorated with the fee); `"invoice"` reduces the whole invoice of each
    invoice cycle in the window, split over its VAT groups. The window is `cycles` cycles (None: no
    end) starting with the cycle that contains `first_cycle_at`.
    """

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    kind: Literal["percent", "fixed"]
    value: Money = Field(gt=0)
    applies_to: Literal["recurring", "invoice"]
    product_id: str | None = None
    first_cycle_at: UtcDatetime
    cycles: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Discount:
        if self.kind == "percent" and self.value > _HUNDRED:
            raise ValueError("a percentage discount cannot exceed 100%")
        if self.applies_to == "recurring" and self.product_id is None:
            raise ValueError("a recurring-fee discount names its product_id")
        if self.applies_to == "invoice" and self.product_id is not None:
            raise ValueError("an invoice discount applies to the whole invoice, not to a product")
        return self


class CycleInputs(_Frozen):
    """Everything needed to compute the charges of the invoice that closes `period`."""

    spec: CycleSpec
    period: BillingPeriod  # the closed period being invoiced
    vat: VatTreatment = DOMESTIC  # from domain.vat.vat_treatment(buyer)
    products: list[ProductTimeline] = Field(default_factory=list)
    billed_fees: list[BilledFee] = Field(default_factory=list)
    usage: list[UsageItem] = Field(default_factory=list)  # rated, not yet billed
    usage_summaries: list[UsageSummary] = Field(default_factory=list)  # more such records, billable, summed by the caller
    usage_grace: timedelta = timedelta(0)
    one_time: list[OneTimeCharge] = Field(default_factory=list)
    billed_keys: list[str] = Field(default_factory=list)  # one-time charges already invoiced
    discounts: list[Discount] = Field(default_factory=list)
    account_credit: Money = Field(default=_ZERO, ge=0)  # gross, carried from earlier cycles
    # Also reconcile recurring fees of the cycles from the one containing this instant (back-dated
    # changes); their billed fees must then be passed too. None: only the closed period.
    reconcile_since: UtcDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CycleInputs:
        if _period_containing(self.spec, self.period.start) != self.period:
            raise ValueError("period is not a period of spec")
        if self.usage_grace < timedelta(0):
            raise ValueError("usage_grace cannot be negative")
        _require_unique([p.product_id for p in self.products], "product_id")
        _require_unique([u.record_id for u in self.usage] + [i for s in self.usage_summaries for i in s.record_ids], "usage record_id")
        cutoff = self.period.end + self.usage_grace
        for summary in self.usage_summaries:
            if summary.last_event_at >= self.period.end or summary.last_received_at >= cutoff:
                raise ValueError(f"usage summary of {summary.product_id} {summary.usage_type} holds records this invoice does not bill")
            if _usage_period(self, summary.first_event_at).start != _usage_period(self, summary.last_event_at).start:
                raise ValueError(f"usage summary of {summary.product_id} {summary.usage_type} spans more than one usage period")
        _require_unique([c.key for c in self.one_time], "one-time charge key")
        _require_unique([d.id for d in self.discounts], "discount id")
        known = {p.product_id for p in self.products}
        strays = sorted({fee.product_id for fee in self.billed_fees} - known)
        if strays:
            raise ValueError(f"billed fees of products without a timeline (pass them, terminated ones too): {strays}")
        return self


def _require_unique(values: list[str], what: str) -> None:
    if len(set(values)) == len(values):
        return
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"duplicate {what}: {duplicates}")


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------

LineSource = Literal["recurring", "recurring_credit", "discount", "usage", "one_time", "invoice_discount"]


class CycleCharge(_Frozen):
    """A line and what to store with it so it is never billed again."""

    line: ChargeLine
    source: LineSource
    billed_fee: BilledFee | None = None  # recurring lines: store, pass back in billed_fees
    one_time_key: str | None = None  # one-time lines: mark this key billed
    usage_ids: list[str] = Field(default_factory=list)  # usage lines: mark these records billed
    discount_ids: list[str] = Field(default_factory=list)


class SettlementLine(_Frozen):
    """Shown after the VAT totals: account credit used to pay this invoice (negative)."""

    description: str
    amount: Money
    period_start: date
    period_end: date


class CreditApplication(_Frozen):
    available: Money  # account credit before this invoice
    applied: Money  # used to pay this invoice, up to its gross total
    from_this_invoice: Money  # a negative invoice total becomes credit too
    carried_forward: Money  # available - applied + from_this_invoice: pass as next cycle's account_credit
    line: SettlementLine | None = None


class UsagePartition(_Frozen):
    billable: list[UsageItem]
    deferred: list[UsageItem]  # event at or after the period end, or arrived after the cut-off


class CycleChargesResult(_Frozen):
    period: BillingPeriod
    charges: list[CycleCharge]
    invoice: ComputedInvoice  # compute_invoice of the lines: EN 16931 rounding and VAT breakdown
    vat_treatment: VatTreatment
    credit: CreditApplication
    amount_due: Money  # gross total less the credit applied, never below zero
    deferred_usage_ids: list[str]
    deferred_one_time_keys: list[str]

    @property
    def lines(self) -> list[ChargeLine]:
        return [charge.line for charge in self.charges]


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def cycle_charges(inputs: CycleInputs) -> list[ChargeLine]:
    """The charge lines of the invoice that closes `inputs.period` (see `compute_cycle_charges`)."""
    return compute_cycle_charges(inputs).lines


def compute_cycle_charges(inputs: CycleInputs) -> CycleChargesResult:
    """Lines, totals, credit application and what to mark billed for the invoice closing `inputs.period`."""
    with localcontext(_CONTEXT):
        return _compute(inputs)


def compute_cycle_lines(inputs: CycleInputs) -> list[CycleCharge]:
    """The charges of `compute_cycle_charges` alone, without totalling the invoice: for a caller that totals
    the lines it issues itself (activities.invoice_issuer does), so a bill run does not total each invoice twice."""
    with localcontext(_CONTEXT):
        return _charges(inputs)[0]


def _charges(inputs: CycleInputs) -> tuple[list[CycleCharge], list[UsageItem], list[str]]:
    """(the invoice's charges, the usage records it leaves for a later one, the one-time charges it defers)."""
    charges: list[CycleCharge] = []
    for product in inputs.products:
        charges += _recurring_charges(inputs, product)

    one_time, deferred_keys = _one_time_charges(inputs)
    charges += one_time

    partition = partition_usage(inputs.usage, inputs.period, inputs.usage_grace)
    charges += _usage_charges(inputs, partition.billable)

    charges += _invoice_discounts(inputs, [c.line for c in charges])
    return charges, partition.deferred, deferred_keys


def _compute(inputs: CycleInputs) -> CycleChargesResult:
    charges, deferred_usage, deferred_keys = _charges(inputs)
    invoice = compute_invoice([c.line for c in charges])
    credit = _apply_credit(inputs, invoice.totals.gross_total)
    amount_due = max(invoice.totals.gross_total - credit.applied, _ZERO)
    return CycleChargesResult(
        period=inputs.period,
        charges=charges,
        invoice=invoice,
        vat_treatment=inputs.vat,
        credit=credit,
        amount_due=amount_due,
        deferred_usage_ids=[u.record_id for u in deferred_usage],
        deferred_one_time_keys=deferred_keys,
    )


def partition_usage(records: Iterable[UsageItem], period: BillingPeriod, grace: timedelta = timedelta(0)) -> UsagePartition:
    """Split unbilled records into those this invoice takes and those left for a later one.

    Billable: event before the period end (including late records of earlier periods) and arrived
    before the cut-off, period end + `grace`. Every record lands in exactly one of the two lists.
    """
    if grace < timedelta(0):
        raise ValueError("grace cannot be negative")
    cutoff = period.end + grace
    billable: list[UsageItem] = []
    deferred: list[UsageItem] = []
    for record in records:
        (billable if record.event_time < period.end and record.received_at < cutoff else deferred).append(record)
    return UsagePartition(billable=billable, deferred=deferred)


# ---------------------------------------------------------------------------------------------
# Recurring fees
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FeeKey:
    plan_id: str
    monthly_fee: Decimal
    net_fee: Decimal


@dataclass(frozen=True)
class _Run:
    key: _FeeKey
    start: int
    end: int
    times: int  # > 0 charge, < 0 credit


def _reconciled_periods(inputs: CycleInputs) -> list[BillingPeriod]:
    upcoming = _next_period(inputs.spec, inputs.period)
    first = inputs.period
    if inputs.reconcile_since is not None and inputs.reconcile_since < inputs.period.start:
        first = _period_containing(inputs.spec, inputs.reconcile_since)
    periods = [first]
    while periods[-1].start < upcoming.start:
        periods.append(_next_period(inputs.spec, periods[-1]))
        if len(periods) > MAX_RECONCILED_CYCLES:
            raise ValueError(f"reconcile_since reaches back more than {MAX_RECONCILED_CYCLES} cycles")
    return periods


def _recurring_charges(inputs: CycleInputs, product: ProductTimeline) -> list[CycleCharge]:
    periods = _reconciled_periods(inputs)
    starts = {p.start for p in periods}
    fees = [f for f in inputs.billed_fees if f.product_id == product.product_id]
    for fee in fees:
        if periods[0].start <= fee.period_start <= periods[-1].start and fee.period_start not in starts:
            raise ValueError(f"billed fee of {product.product_id} names {fee.period_start}, which starts no cycle")
    charges: list[CycleCharge] = []
    for period in periods:
        charges += _reconcile(inputs, product, period, [f for f in fees if f.period_start == period.start])
    return charges


def _reconcile(inputs: CycleInputs, product: ProductTimeline, period: BillingPeriod, billed: list[BilledFee]) -> list[CycleCharge]:
    spec = inputs.spec
    total = period_units(period, spec.kind)

    def index(instant: datetime) -> int:
        return unit_index(period, instant, spec.timezone, spec.kind)

    discounts = _product_discounts(inputs, product.product_id, period)
    deltas: dict[_FeeKey, list[tuple[int, int, int]]] = {}

    # What the product should cost in this cycle ...
    active = (index(product.plans[0].effective_at), total if product.terminated_at is None else index(product.terminated_at))
    suspended = [(index(s.start), total if s.end is None else index(s.end)) for s in product.suspensions]
    for number, plan in enumerate(product.plans):
        plan_end = total if number + 1 == len(product.plans) else index(product.plans[number + 1].effective_at)
        span = (max(index(plan.effective_at), active[0]), min(plan_end, active[1]))
        key = _FeeKey(plan.plan_id, plan.monthly_fee, _net_fee(plan.monthly_fee, discounts))
        for start, end in _subtract([span], suspended):
            deltas.setdefault(key, []).append((start, end, 1))
    # ... less what invoices already charged for it.
    for fee in billed:
        key = _FeeKey(fee.plan_id, fee.monthly_fee, fee.net_fee)
        sign = 1 if fee.direction == "charge" else -1
        start, end = index(fee.covered_from), index(fee.covered_to)
        if start < end:
            deltas.setdefault(key, []).append((start, end, -sign * fee.times))

    runs = [run for key, spans in deltas.items() for run in _runs(key, spans)]
    runs.sort(key=lambda r: (r.start, r.times > 0, r.key.plan_id, r.key.monthly_fee, r.key.net_fee))
    plan_names = {plan.plan_id: plan.name for plan in product.plans}
    return [
        charge
        for run in runs
        for charge in _run_charges(inputs, product, period, total, run, plan_names.get(run.key.plan_id, run.key.plan_id), discounts)
    ]


def _subtract(spans: list[tuple[int, int]], cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    result = [s for s in spans if s[0] < s[1]]
    for cut_start, cut_end in cuts:
        if cut_start >= cut_end:
            continue
        pieces: list[tuple[int, int]] = []
        for start, end in result:
            if cut_end <= start or end <= cut_start:
                pieces.append((start, end))
                continue
            if start < cut_start:
                pieces.append((start, cut_start))
            if cut_end < end:
                pieces.append((cut_end, end))
        result = pieces
    return result


def _runs(key: _FeeKey, spans: list[tuple[int, int, int]]) -> list[_Run]:
    """Maximal stretches of units where the summed deltas are the same non-zero number."""
    points = sorted({p for start, end, _ in spans for p in (start, end)})
    runs: list[_Run] = []
    for start, end in zip(points, points[1:], strict=False):
        times = sum(delta for s, e, delta in spans if s <= start and end <= e)
        if times == 0:
            continue
        if runs and runs[-1].end == start and runs[-1].times == times:
            runs[-1] = _Run(key, runs[-1].start, end, times)
        else:
            runs.append(_Run(key, start, end, times))
    return runs


def _run_charges(
    inputs: CycleInputs,
    product: ProductTimeline,
    period: BillingPeriod,
    total: int,
    run: _Run,
    plan_name: str,
    discounts: list[Discount],
) -> list[CycleCharge]:
    spec = inputs.spec
    vat = _line_vat(inputs.vat, product.vat_rate_class)
    fee, net_fee = run.key.monthly_fee, run.key.net_fee
    whole = run.start == 0 and run.end == total
    span_text = _span_text(spec, period, run.start, run.end, total)
    label = f" ({product.label})" if product.label else ""
    line_start, line_end = _local_dates(spec, period, run.start, run.end)
    count = abs(run.times)
    credit = run.times < 0
    if whole:
        quantity, unit, unit_price = Decimal(run.times), "MON", fee
    elif spec.kind == "monthly":
        quantity, unit, unit_price = Decimal((run.end - run.start) * run.times), "DAY", None
    else:
        quantity, unit, unit_price = Decimal(run.times), "EA", None
    amount = _prorated_part(fee, run.start, run.end, total) * run.times
    description = (
        f"Credit: {plan_name} monthly fee{label}, not used {span_text}"
        if credit
        else f"{plan_name} monthly fee{label}, {span_text}"
    )
    billed_fee = BilledFee(
        product_id=product.product_id,
        plan_id=run.key.plan_id,
        period_start=period.start,
        covered_from=_instant(spec, period, run.start),
        covered_to=_instant(spec, period, run.end),
        monthly_fee=fee,
        net_fee=net_fee,
        direction="credit" if credit else "charge",
        times=count,
    )
    charges = [
        CycleCharge(
            line=ChargeLine(
                kind="recurring",
                description=description,
                quantity=quantity,
                unit=unit,
                unit_price=unit_price,
                net_amount=amount,
                vat_rate=vat.rate,
                vat_category=vat.category,
                period_start=line_start,
                period_end=line_end,
                product_id=product.product_id,
            ),
            source="recurring_credit" if credit else "recurring",
            billed_fee=billed_fee,
        )
    ]
    if net_fee != fee:
        # The discount's share of the run, prorated like the fee itself (cumulative rounding, so a
        # cycle's shares add up to the whole discount), and never more than the fee's share.
        reduction = min(
            _prorated_part(fee - net_fee, run.start, run.end, total), _prorated_part(fee, run.start, run.end, total)
        ) * run.times
        if reduction:
            names = ", ".join(d.name for d in discounts) or "discount"
            charges.append(
                CycleCharge(
                    line=ChargeLine(
                        kind="discount",
                        description=(
                            f"{names} on {plan_name} monthly fee{label}, reversed for {span_text}"
                            if credit
                            else f"{names} on {plan_name} monthly fee{label}, {span_text}"
                        ),
                        net_amount=-reduction,
                        vat_rate=vat.rate,
                        vat_category=vat.category,
                        period_start=line_start,
                        period_end=line_end,
                        product_id=product.product_id,
                    ),
                    source="discount",
                    discount_ids=[d.id for d in discounts],
                )
            )
    return charges


def _product_discounts(inputs: CycleInputs, product_id: str, period: BillingPeriod) -> list[Discount]:
    return [
        d
        for d in inputs.discounts
        if d.applies_to == "recurring" and d.product_id == product_id and _in_window(inputs.spec, d, period)
    ]


def _net_fee(fee: Decimal, discounts: list[Discount]) -> Decimal:
    """The fee after the product's discounts, applied in order, never below zero, in micro-units."""
    net = Decimal(fee)
    for discount in discounts:
        if discount.kind == "percent":
            net = net * (_HUNDRED - discount.value) / _HUNDRED
        else:
            net = net - discount.value
        net = max(net, Decimal(0))
    return net.quantize(MICRO, rounding=ROUND_HALF_UP)


def _in_window(spec: CycleSpec, discount: Discount, period: BillingPeriod) -> bool:
    first = _period_containing(spec, discount.first_cycle_at)
    if spec.kind == "monthly":
        index = (period.local_start.year * 12 + period.local_start.month) - (first.local_start.year * 12 + first.local_start.month)
    else:
        assert spec.period_seconds is not None
        index = (period.start - first.start) // timedelta(seconds=spec.period_seconds)
    return index >= 0 and (discount.cycles is None or index < discount.cycles)


def _instant(spec: CycleSpec, period: BillingPeriod, unit: int) -> datetime:
    if spec.kind == "fixed":
        return period.start + unit * _MICROSECOND
    if unit == period_units(period, spec.kind):
        return period.end
    return local_midnight(period.local_start + timedelta(days=unit), zone(spec.timezone))


@lru_cache(maxsize=4096)  # pure, and the same for every account of a cycle (see _period_containing)
def _local_dates(spec: CycleSpec, period: BillingPeriod, start: int, end: int) -> tuple[date, date]:
    if spec.kind == "monthly":
        return period.local_start + timedelta(days=start), period.local_start + timedelta(days=end)
    tz = zone(spec.timezone)
    first = _instant(spec, period, start).astimezone(tz).date()
    last = (_instant(spec, period, end) - _MICROSECOND).astimezone(tz).date()
    return first, last + timedelta(days=1)


@lru_cache(maxsize=4096)  # pure, and the same for every account of a cycle (see _period_containing)
def _span_text(spec: CycleSpec, period: BillingPeriod, start: int, end: int, total: int) -> str:
    if spec.kind == "monthly":
        first, after = _local_dates(spec, period, start, end)
        text = f"{first.isoformat()} to {(after - timedelta(days=1)).isoformat()}"
        return text if (start, end) == (0, total) else f"{text} ({end - start}/{total} days)"
    tz = zone(spec.timezone)
    first_at = _instant(spec, period, start).astimezone(tz)
    end_at = _instant(spec, period, end).astimezone(tz)
    return f"{first_at.isoformat()} to {end_at.isoformat()}"


@lru_cache(maxsize=4096)  # pure, and the same for every account of a cycle (see _period_containing)
def _period_text(period: BillingPeriod) -> str:
    return f"{period.local_start.isoformat()} to {(period.local_end - timedelta(days=1)).isoformat()}"


# ---------------------------------------------------------------------------------------------
# One-time charges and usage
# ---------------------------------------------------------------------------------------------


def _one_time_charges(inputs: CycleInputs) -> tuple[list[CycleCharge], list[str]]:
    billed = set(inputs.billed_keys)
    tz = zone(inputs.spec.timezone)
    charges: list[CycleCharge] = []
    deferred: list[str] = []
    for item in inputs.one_time:
        if item.key in billed:
            continue
        if item.incurred_at >= inputs.period.end:
            deferred.append(item.key)
            continue
        vat = _line_vat(inputs.vat, item.vat_rate_class)
        day = item.incurred_at.astimezone(tz).date()
        charges.append(
            CycleCharge(
                line=ChargeLine(
                    kind="one_time",
                    description=f"{item.description}, {day.isoformat()}",
                    quantity=item.quantity,
                    unit=item.unit,
                    unit_price=item.unit_price,
                    net_amount=to_cents(item.amount),
                    vat_rate=vat.rate,
                    vat_category=vat.category,
                    period_start=day,
                    period_end=day + timedelta(days=1),
                    product_id=item.product_id,
                ),
                source="one_time",
                one_time_key=item.key,
            )
        )
    return charges, deferred


def _usage_period(inputs: CycleInputs, instant: datetime) -> BillingPeriod:
    closed = inputs.period  # a period of spec (CycleInputs checks): most usage falls in it, no need to look it up
    return closed if closed.start <= instant < closed.end else period_containing(inputs.spec, instant)


@dataclass
class _UsageGroup:
    """One usage line's records as they are added up: from single records and summaries alike."""

    period: BillingPeriod
    first_event_at: datetime
    count: int = 0
    amount: Decimal = Decimal(0)
    units: int = 0
    record_ids: list[str] = field(default_factory=list)

    def add(self, first_event_at: datetime, count: int, amount: Decimal, units: int, record_ids: list[str]) -> None:
        self.first_event_at = min(self.first_event_at, first_event_at)
        self.count += count
        self.amount += amount
        self.units += units
        self.record_ids += record_ids


def _usage_charges(inputs: CycleInputs, records: list[UsageItem]) -> list[CycleCharge]:
    products = {p.product_id: (number, p) for number, p in enumerate(inputs.products)}
    groups: dict[tuple[datetime, int, str, str], _UsageGroup] = {}

    def group(product_id: str, usage_type: str, event_time: datetime) -> _UsageGroup:
        usage_period = _usage_period(inputs, event_time)
        number = products[product_id][0] if product_id in products else len(products)
        key = (usage_period.start, number, product_id, usage_type)
        found = groups.get(key)
        if found is None:
            found = groups[key] = _UsageGroup(usage_period, event_time)
        return found

    for record in records:
        group(record.product_id, record.usage_type, record.event_time).add(record.event_time, 1, record.amount, record.chargeable_units,
                                                                           [record.record_id])
    for summary in inputs.usage_summaries:  # CycleInputs checked that each lies in one usage period
        group(summary.product_id, summary.usage_type, summary.first_event_at).add(
            summary.first_event_at, len(summary.record_ids), summary.amount, summary.chargeable_units, summary.record_ids)
    charges: list[CycleCharge] = []
    for key in sorted(groups):
        found = groups[key]
        usage_period, count = found.period, found.count
        product_id, usage_type = key[2], key[3]
        product = products.get(product_id, (0, None))[1]
        label, unit = USAGE_LABELS.get(usage_type, (f"Usage: {usage_type}", "C62"))
        plan = _plan_at(product, found.first_event_at) if product else None  # at the line's earliest record, in whatever order they came
        owner = f"{plan.name} " if plan else ""
        owner_label = f" ({product.label})" if product and product.label else ""
        vat = _line_vat(inputs.vat, product.vat_rate_class if product else "standard")
        late = " (late records)" if usage_period.end <= inputs.period.start else ""
        charges.append(
            CycleCharge(
                line=ChargeLine(
                    kind="usage",
                    description=f"{owner}{label}{owner_label}, {_period_text(usage_period)}{late}, {count} record{'' if count == 1 else 's'}",
                    quantity=Decimal(found.units),
                    unit=unit,
                    net_amount=to_cents(found.amount),
                    vat_rate=vat.rate,
                    vat_category=vat.category,
                    period_start=usage_period.local_start,
                    period_end=usage_period.local_end,
                    product_id=product_id,
                ),
                source="usage",
                usage_ids=sorted(found.record_ids),
            )
        )
    return charges


def _plan_at(product: ProductTimeline, instant: datetime) -> PlanSpan:
    current = product.plans[0]
    for plan in product.plans:
        if plan.effective_at <= instant:
            current = plan
    return current


# ---------------------------------------------------------------------------------------------
# Invoice discounts and credit
# ---------------------------------------------------------------------------------------------


def _invoice_discounts(inputs: CycleInputs, lines: list[ChargeLine]) -> list[CycleCharge]:
    """Invoice-wide discounts, split over the VAT groups so each carries its own VAT; in cents."""
    discounts = [d for d in inputs.discounts if d.applies_to == "invoice" and _in_window(inputs.spec, d, inputs.period)]
    if not discounts:
        return []
    remaining: dict[tuple[str, Decimal], Decimal] = {}
    for line in lines:
        group = (line.vat_category, line.vat_rate)
        remaining[group] = remaining.get(group, _ZERO) + to_cents(line.net_amount)
    charges: list[CycleCharge] = []
    for discount in discounts:
        groups = [(group, amount) for group, amount in remaining.items() if amount > 0]
        base = sum((amount for _, amount in groups), _ZERO)
        if base <= 0:
            break
        if discount.kind == "percent":
            shares = [to_cents(amount * discount.value / _HUNDRED) for _, amount in groups]
        else:
            # A fixed amount, at most the base, split by each group's share with cumulative
            # rounding so the shares add up to it exactly and none exceeds its group.
            applied = min(to_cents(discount.value), base)
            cumulative = [sum((a for _, a in groups[: n + 1]), _ZERO) for n in range(len(groups))]
            bounds = [_ZERO] + [to_cents(applied * c / base) for c in cumulative]
            shares = [later - earlier for earlier, later in zip(bounds, bounds[1:], strict=False)]
        for (group, _amount), share in zip(groups, shares, strict=True):
            if share <= 0:
                continue
            remaining[group] -= share
            category, rate = group
            charges.append(
                CycleCharge(
                    line=ChargeLine(
                        kind="discount",
                        description=f"{discount.name}, {_period_text(inputs.period)}"
                        + (f" ({category} {rate}%)" if len(groups) > 1 else ""),
                        net_amount=-share,
                        vat_rate=rate,
                        vat_category=category,
                        period_start=inputs.period.local_start,
                        period_end=inputs.period.local_end,
                    ),
                    source="invoice_discount",
                    discount_ids=[discount.id],
                )
            )
    return charges


def _apply_credit(inputs: CycleInputs, gross_total: Decimal) -> CreditApplication:
    available = to_cents(inputs.account_credit)
    applied = min(available, max(gross_total, _ZERO))
    from_invoice = max(-gross_total, _ZERO)
    line = None
    if applied > 0:
        line = SettlementLine(
            description=f"Account credit applied, {_period_text(inputs.period)}",
            amount=-applied,
            period_start=inputs.period.local_start,
            period_end=inputs.period.local_end,
        )
    return CreditApplication(
        available=available,
        applied=applied,
        from_this_invoice=from_invoice,
        carried_forward=available - applied + from_invoice,
        line=line,
    )
