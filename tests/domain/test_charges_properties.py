"""Properties of one cycle's charges, over random accounts, time zones, bill-cycle days and timelines."""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.billing_cycle import BillingPeriod, CycleSpec, next_period, period_containing
from domain.charges import (
    BilledFee,
    CycleInputs,
    Discount,
    OneTimeCharge,
    PlanSpan,
    ProductTimeline,
    Suspension,
    UsageItem,
    compute_cycle_charges,
    partition_usage,
)
from domain.proration import period_units, split_prorated, unit_index
from domain.vat import Buyer, vat_treatment

# Zones with DST at 02:00 or 03:00, at midnight (Santiago), by 30 minutes (Lord Howe), none (UTC).
ZONES = ["Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 7 * 366 * 24 * 3600  # 2024 .. 2030, two leap Februaries

cents = st.integers(min_value=0, max_value=99_999).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def specs(draw) -> CycleSpec:
    return CycleSpec(bill_cycle_day=draw(st.integers(1, 31)), timezone=draw(st.sampled_from(ZONES)))


@st.composite
def spec_and_period(draw) -> tuple[CycleSpec, BillingPeriod]:
    spec = draw(specs())
    instant = START + timedelta(seconds=draw(st.integers(0, SPAN_SECONDS)))
    return spec, period_containing(spec, instant)


def instant_in(draw, start: datetime, end: datetime) -> datetime:
    seconds = int((end - start).total_seconds())
    return start + timedelta(seconds=draw(st.integers(0, max(seconds - 1, 0))))


def full_advance(product_id: str, plan: PlanSpan, period: BillingPeriod) -> BilledFee:
    return BilledFee(
        product_id=product_id, plan_id=plan.plan_id, period_start=period.start, covered_from=period.start,
        covered_to=period.end, monthly_fee=plan.monthly_fee, net_fee=plan.monthly_fee, direction="charge",
    )


@st.composite
def products(draw, product_id: str, period: BillingPeriod, upcoming: BillingPeriod) -> tuple[ProductTimeline, bool]:
    """A product with random plan changes, suspensions and maybe a termination around `period`;
    and whether the previous invoice billed `period` in advance."""
    before = period.start - timedelta(days=40)
    active_from = instant_in(draw, before, upcoming.end)
    times = sorted(set(draw(st.lists(st.integers(0, 10**9), max_size=3))))
    window = (upcoming.end - active_from).total_seconds()
    changes = sorted({active_from + timedelta(seconds=int(window * t / 10**9)) for t in times} - {active_from})
    plans = [
        PlanSpan(plan_id=f"plan{n % 3}", name=f"Plan {n % 3}", monthly_fee=draw(cents), effective_at=at)
        for n, at in enumerate([active_from, *changes])
    ]
    suspensions = []
    for _ in range(draw(st.integers(0, 2))):
        start = instant_in(draw, period.start, upcoming.end)
        end = draw(st.one_of(st.none(), st.just(instant_in(draw, start + timedelta(seconds=1), upcoming.end + timedelta(days=3)))))
        suspensions.append(Suspension(start=start, end=end))
    terminated = draw(st.one_of(st.none(), st.just(instant_in(draw, active_from, upcoming.end + timedelta(days=3)))))
    product = ProductTimeline(
        product_id=product_id, plans=plans, suspensions=suspensions, terminated_at=terminated,
        vat_rate_class=draw(st.sampled_from(["standard", "standard", "reduced", "zero"])),
    )
    billed_in_advance = active_from < period.start and draw(st.booleans())
    return product, billed_in_advance


@st.composite
def cycle_inputs(draw) -> CycleInputs:
    spec, period = draw(spec_and_period())
    upcoming = next_period(spec, period)
    timelines: list[ProductTimeline] = []
    billed: list[BilledFee] = []
    for number in range(draw(st.integers(0, 3))):
        product, advance = draw(products(f"p{number}", period, upcoming))
        timelines.append(product)
        if advance:
            first = product.plans[0]
            billed.append(full_advance(product.product_id, first, period))
    ids = [p.product_id for p in timelines] or ["p0"]
    usage = [
        UsageItem(
            record_id=f"u{n}", product_id=draw(st.sampled_from(ids)), usage_type=draw(st.sampled_from(["voice", "sms", "data"])),
            event_time=(event := instant_in(draw, period.start - timedelta(days=35), upcoming.start + timedelta(days=2))),
            received_at=event + timedelta(seconds=draw(st.integers(0, 5 * 86400))),
            amount=Decimal(draw(st.integers(0, 50_000_000))).scaleb(-6), chargeable_units=draw(st.integers(0, 100)),
        )
        for n in range(draw(st.integers(0, 6)))
    ]
    one_time = [
        OneTimeCharge(key=f"ot{n}", product_id=draw(st.sampled_from(ids)), description="Hardware", amount=draw(cents),
                      incurred_at=instant_in(draw, period.start, upcoming.end),
                      vat_rate_class=draw(st.sampled_from(["standard", "reduced", "zero"])))
        for n in range(draw(st.integers(0, 2)))
    ]
    discounts = []
    for n in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["percent", "fixed"]))
        value = Decimal(draw(st.integers(1, 100))) if kind == "percent" else draw(cents.filter(lambda v: v > 0))
        applies_to = draw(st.sampled_from(["recurring", "invoice"])) if timelines else "invoice"
        discounts.append(
            Discount(
                id=f"d{n}", name=f"Promo {n}", kind=kind, value=value, applies_to=applies_to,
                product_id=draw(st.sampled_from(ids)) if applies_to == "recurring" else None,
                first_cycle_at=instant_in(draw, period.start - timedelta(days=62), upcoming.end),
                cycles=draw(st.one_of(st.none(), st.integers(1, 3))),
            )
        )
    buyer = draw(st.sampled_from([Buyer(country="DE"), Buyer(country="AT", is_business=True, vat_id="ATU57194903")]))
    return CycleInputs(
        spec=spec, period=period, vat=vat_treatment(buyer), products=timelines, billed_fees=billed, usage=usage,
        usage_grace=timedelta(hours=draw(st.integers(0, 72))), one_time=one_time, discounts=discounts,
        account_credit=draw(cents),
    )


# --- totals -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(cycle_inputs())
def test_lines_are_cents_and_add_up_to_the_net_total(inputs):
    result = compute_cycle_charges(inputs)
    for line in result.lines:
        assert line.net_amount == line.net_amount.quantize(Decimal("0.01"))  # already whole cents
        assert line.period_start is not None and line.period_end is not None  # every line names its period
        if line.kind in ("recurring", "usage"):
            assert line.product_id is not None  # ... and its product
    totals = result.invoice.totals
    assert sum((line.net_amount for line in result.lines), Decimal("0.00")) == totals.net_total
    assert totals.gross_total == totals.net_total + totals.vat_total


@settings(max_examples=300, deadline=None)
@given(cycle_inputs())
def test_vat_breakdown_matches_an_independent_recomputation(inputs):
    result = compute_cycle_charges(inputs)
    # Integer cents per (category, rate); VAT = group cents * rate / 100, half away from zero.
    groups: dict[tuple[str, Fraction], int] = {}
    for line in result.lines:
        key = (line.vat_category, Fraction(line.vat_rate))
        groups[key] = groups.get(key, 0) + int(line.net_amount * 100)
    expected = {}
    for key, group_cents in groups.items():
        exact = Fraction(group_cents) * key[1] / 100
        rounded = int(abs(exact) + Fraction(1, 2)) * (1 if exact >= 0 else -1)
        expected[key] = (group_cents, rounded)
    actual = {
        (g.vat_category, Fraction(g.vat_rate)): (int(g.taxable_amount * 100), int(g.tax_amount * 100))
        for g in result.invoice.totals.vat_breakdown
    }
    assert actual == expected
    if inputs.vat.kind == "reverse_charge":
        assert set(actual) <= {("AE", Fraction(0))}


@settings(max_examples=200, deadline=None)
@given(cycle_inputs())
def test_credit_is_never_more_than_due_and_nothing_is_lost(inputs):
    result = compute_cycle_charges(inputs)
    credit, gross = result.credit, result.invoice.totals.gross_total
    assert Decimal(0) <= credit.applied <= credit.available
    assert credit.applied <= max(gross, Decimal(0))
    assert credit.carried_forward == credit.available - credit.applied + credit.from_this_invoice
    assert result.amount_due == max(gross - credit.applied, Decimal(0))
    assert result.amount_due == 0 or credit.applied == credit.available


# --- proration ----------------------------------------------------------------------------------


@given(spec_and_period(), cents, st.lists(st.integers(0, 10**6), max_size=6))
def test_prorated_parts_of_a_cycle_add_up_to_the_fee(spec_period, fee, cuts):
    _spec, period = spec_period
    total = period_units(period)
    assert 28 <= total <= 31  # calendar days, whatever DST does to the hours
    boundaries = sorted({0, total, *(c * total // 10**6 for c in cuts)})
    parts = split_prorated(fee, boundaries, total)
    assert sum(parts, Decimal(0)) == fee
    assert all(part >= 0 for part in parts)


@settings(max_examples=200, deadline=None)
@given(spec_and_period(), cents, st.lists(st.integers(1, 10**6 - 1), min_size=1, max_size=5))
def test_plan_changes_at_the_same_price_charge_exactly_one_fee(spec_period, fee, cuts):
    """A cycle split into sub-periods on different plans of the same price costs exactly one fee."""
    spec, period = spec_period
    seconds = int(period.duration.total_seconds())
    times = sorted({period.start + timedelta(seconds=seconds * c // 10**6) for c in cuts} - {period.start})
    plans = [
        PlanSpan(plan_id=f"p{n}", name=f"Plan {n}", monthly_fee=fee, effective_at=at)
        for n, at in enumerate([period.start, *times])
    ]
    product = ProductTimeline(product_id="x", plans=plans)
    result = compute_cycle_charges(CycleInputs(spec=spec, period=period, products=[product]))
    closed = [line for line in result.lines if line.period_end <= period.local_end]
    assert sum((line.net_amount for line in closed), Decimal(0)) == fee
    # Days are billed once each: the lines' date ranges tile the cycle.
    assert closed[0].period_start == period.local_start and closed[-1].period_end == period.local_end
    assert all(a.period_end == b.period_start for a, b in zip(closed, closed[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(spec_and_period(), cents, st.integers(0, 10**6), st.integers(0, 10**6))
def test_credit_for_unused_days_and_the_used_part_add_up_to_the_advance_fee(spec_period, fee, a, b):
    spec, period = spec_period
    seconds = int(period.duration.total_seconds())
    first, second = sorted((a, b))
    suspended_from = period.start + timedelta(seconds=seconds * first // 10**6)
    restored = period.start + timedelta(seconds=seconds * second // 10**6)
    plan = PlanSpan(plan_id="p", name="Plan", monthly_fee=fee, effective_at=period.start - timedelta(days=90))
    suspensions = [Suspension(start=suspended_from, end=restored)] if restored > suspended_from else []
    product = ProductTimeline(product_id="x", plans=[plan], suspensions=suspensions)
    result = compute_cycle_charges(
        CycleInputs(spec=spec, period=period, products=[product], billed_fees=[full_advance("x", plan, period)])
    )
    credits = [line.net_amount for line in result.lines if line.period_end <= period.local_end]
    # Independently: suspended days [i, j) of n by local date; the used days cost the rest of the fee.
    i = unit_index(period, suspended_from, spec.timezone)
    j = unit_index(period, restored, spec.timezone) if suspensions else i
    n = period_units(period)
    used = split_prorated(fee, [0, i, j, n], n)
    assert fee + sum(credits, Decimal(0)) == used[0] + used[2]
    assert -sum(credits, Decimal(0)) == used[1]


# --- determinism and idempotency ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(cycle_inputs(), st.randoms(use_true_random=False))
def test_same_inputs_give_the_same_lines_and_stored_fees_are_not_billed_again(inputs, rnd):
    first = compute_cycle_charges(inputs)
    assert compute_cycle_charges(inputs) == first
    # Through serialisation (as between an activity and a workflow), and with billed fees in another order.
    shuffled = list(inputs.billed_fees)
    rnd.shuffle(shuffled)
    replay = CycleInputs.model_validate_json(inputs.model_copy(update={"billed_fees": shuffled}).model_dump_json())
    assert compute_cycle_charges(replay).lines == first.lines
    # Once the fees of this invoice are stored, the same cycle yields no further recurring lines.
    stored = [c.billed_fee for c in first.charges if c.billed_fee is not None]
    billed_usage = {i for c in first.charges for i in c.usage_ids}
    billed_keys = [c.one_time_key for c in first.charges if c.one_time_key]
    after = compute_cycle_charges(
        CycleInputs.model_validate(
            {
                **inputs.model_dump(),
                "billed_fees": [*inputs.billed_fees, *stored],
                "usage": [u for u in inputs.usage if u.record_id not in billed_usage],
                "billed_keys": billed_keys,
            }
        )
    )
    assert [c for c in after.charges if c.source in ("recurring", "recurring_credit", "usage", "one_time")] == []


@st.composite
def usage_history(draw):
    spec = draw(specs())
    period = period_containing(spec, START + timedelta(seconds=draw(st.integers(0, SPAN_SECONDS))))
    horizon = period
    for _ in range(3):
        horizon = next_period(spec, horizon)
    records = []
    for n in range(draw(st.integers(0, 25))):
        event = instant_in(draw, period.start, horizon.start)
        delay = timedelta(seconds=draw(st.one_of(st.integers(0, 3600), st.integers(0, 20 * 86400))))
        records.append(
            UsageItem(record_id=f"r{n}", product_id="p", usage_type="voice", event_time=event, received_at=event + delay,
                      amount=Decimal(draw(st.integers(0, 10**7))).scaleb(-6))
        )
    return spec, period, records, timedelta(hours=draw(st.integers(0, 96)))


@settings(max_examples=200, deadline=None)
@given(usage_history())
def test_usage_is_billed_exactly_once_across_cycles(history):
    spec, period, records, grace = history
    unbilled = list(records)
    billed_on: dict[str, BillingPeriod] = {}
    for _ in range(6):  # three cycles of events, then enough cycles for the latest arrivals
        split = partition_usage(unbilled, period, grace)
        assert {u.record_id for u in split.billable}.isdisjoint(u.record_id for u in split.deferred)
        assert len(split.billable) + len(split.deferred) == len(unbilled)
        for record in split.billable:
            assert record.event_time < period.end and record.received_at < period.end + grace
            billed_on[record.record_id] = period
        unbilled = split.deferred
        period = next_period(spec, period)
    # Delays are at most 20 days and grace at least 0: after six cycles every record is billed, once.
    assert unbilled == []
    assert set(billed_on) == {r.record_id for r in records}


@settings(max_examples=200, deadline=None)
@given(cycle_inputs())
def test_a_hundred_percent_invoice_discount_gives_zero_never_negative(inputs):
    free = Discount(id="free", name="Free", kind="percent", value=Decimal(100), applies_to="invoice",
                    first_cycle_at=inputs.period.start)
    without_credits = CycleInputs.model_validate({**inputs.model_dump(), "billed_fees": [], "discounts": [free]})
    totals = compute_cycle_charges(without_credits).invoice.totals
    # Without credits for earlier advance fees every VAT group is >= 0, and 100 % takes it to 0.
    assert totals.net_total == Decimal("0.00")
    assert totals.vat_total == Decimal("0.00")
    with_discounts = CycleInputs.model_validate({**inputs.model_dump(), "billed_fees": []})
    assert compute_cycle_charges(with_discounts).invoice.totals.net_total >= 0


def test_rounding_helper_matches_the_domain():
    # The independent recomputation above rounds like domain.money.to_cents.
    assert Decimal("0.125").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) == Decimal("0.13")
    assert int(Fraction(125, 1000) * 100 + Fraction(1, 2)) == 13
