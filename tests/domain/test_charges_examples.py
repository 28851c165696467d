"""Worked examples of one cycle's charges; every amount is derived by hand in the comments.

Proration is by local calendar day with cumulative rounding: for units [a, b) of a cycle of N days,
part = round(fee * b / N) - round(fee * a / N), rounded half away from zero to cents. Day indices
count from 0 at the cycle's first local day.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from domain.billing_cycle import CycleSpec, next_period, period_containing
from domain.charges import (
    BilledFee,
    CycleInputs,
    Discount,
    OneTimeCharge,
    PlanChangePolicy,
    PlanSpan,
    ProductTimeline,
    Suspension,
    UsageItem,
    change_effective_at,
    compute_cycle_charges,
    cycle_charges,
    partition_usage,
)
from domain.vat import Buyer, vat_treatment

BERLIN = ZoneInfo("Europe/Berlin")
D = Decimal


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)


def monthly(bcd: int = 1) -> CycleSpec:
    return CycleSpec(bill_cycle_day=bcd, timezone="Europe/Berlin")


def period_of(spec: CycleSpec, instant: datetime):
    return period_containing(spec, instant)


def plan(plan_id: str, fee: str, at: datetime, name: str | None = None) -> PlanSpan:
    return PlanSpan(plan_id=plan_id, name=name or f"Mobile {plan_id.upper()}", monthly_fee=D(fee), effective_at=at)


def billed_in_advance(product_id: str, plan_id: str, fee: str, period, net_fee: str | None = None) -> BilledFee:
    """The whole cycle's fee, as the previous invoice billed it in advance."""
    return BilledFee(
        product_id=product_id,
        plan_id=plan_id,
        period_start=period.start,
        covered_from=period.start,
        covered_to=period.end,
        monthly_fee=D(fee),
        net_fee=D(net_fee or fee),
        direction="charge",
    )


def amounts(result) -> list[Decimal]:
    return [c.line.net_amount for c in result.charges]


def stored(result) -> list[BilledFee]:
    return [c.billed_fee for c in result.charges if c.billed_fee is not None]


def again(inputs: CycleInputs, result) -> CycleInputs:
    """The same invoice computed once more after its billed fees were stored."""
    return CycleInputs.model_validate({**inputs.model_dump(), "billed_fees": [*inputs.billed_fees, *stored(result)]})


SPEC = monthly()
MARCH = period_of(SPEC, berlin(2026, 3, 10))  # 1-31 March 2026: 31 days, clocks go forward on the 29th
APRIL = next_period(SPEC, MARCH)  # 30 days


# --- plan changes -----------------------------------------------------------------------------


def test_mid_cycle_upgrade_credits_the_old_plan_and_charges_the_new_one():
    requested = berlin(2026, 3, 12, 9, 30)
    effective = change_effective_at(requested, D("10.00"), D("20.00"), MARCH)
    assert effective == requested  # an upgrade takes effect at once
    product = ProductTimeline(
        product_id="p1", plans=[plan("s", "10.00", berlin(2026, 1, 5)), plan("m", "20.00", effective)]
    )
    inputs = CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "s", "10.00", MARCH)])
    result = compute_cycle_charges(inputs)

    # The change day (12th, index 11) is on the new plan: days 12..31 = indices 11..31 of 31.
    # Credit S: 10.00*31/31 - round(10.00*11/31 = 3.548..) = 10.00 - 3.55 = 6.45
    # Charge M: 20.00 - round(20.00*11/31 = 7.096..) = 20.00 - 7.10 = 12.90
    # April in advance on M: 20.00
    assert amounts(result) == [D("-6.45"), D("12.90"), D("20.00")]
    credit, charge, advance = result.lines
    assert credit.description == "Credit: Mobile S monthly fee, not used 2026-03-12 to 2026-03-31 (20/31 days)"
    assert (credit.product_id, credit.period_start, credit.period_end) == ("p1", MARCH.local_start + timedelta(days=11), APRIL.local_start)
    assert (charge.quantity, charge.unit) == (D(20), "DAY")
    assert (advance.period_start, advance.period_end, advance.unit, advance.unit_price) == (APRIL.local_start, APRIL.local_end, "MON", D("20.00"))
    # S kept for 1..11 March: 10.00 - 6.45 = 3.55 = round(10.00 * 11/31).
    # Net 26.45; VAT 26.45 * 19% = 5.0255 -> 5.03; gross 31.48.
    totals = result.invoice.totals
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (D("26.45"), D("5.03"), D("31.48"))
    assert result.amount_due == D("31.48")

    # Stored and computed again: nothing more to bill.
    assert cycle_charges(again(inputs, result)) == []


def test_downgrade_takes_effect_at_the_end_of_the_cycle():
    requested = berlin(2026, 3, 12, 9, 30)
    effective = change_effective_at(requested, D("20.00"), D("10.00"), MARCH)
    # Local midnight of 1 April, which is already summer time: 2026-03-31 22:00 UTC.
    assert effective == MARCH.end == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    product = ProductTimeline(
        product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 5)), plan("s", "10.00", effective)]
    )
    inputs = CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)])
    result = compute_cycle_charges(inputs)
    # March stays on M as billed; April in advance on S.
    assert amounts(result) == [D("10.00")]
    assert result.lines[0].description == "Mobile S monthly fee, 2026-04-01 to 2026-04-30"


def test_catalog_may_make_a_downgrade_immediate():
    requested = berlin(2026, 3, 12, 9, 30)
    policy = PlanChangePolicy(downgrade="immediate")
    effective = change_effective_at(requested, D("20.00"), D("10.00"), MARCH, policy)
    assert effective == requested
    product = ProductTimeline(
        product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 5)), plan("s", "10.00", effective)]
    )
    inputs = CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)])
    result = compute_cycle_charges(inputs)
    # Credit M for days 12..31: 20.00 - round(20*11/31 = 7.096) = 12.90
    # Charge S for days 12..31: 10.00 - round(10*11/31 = 3.548) = 6.45; April on S: 10.00
    assert amounts(result) == [D("-12.90"), D("6.45"), D("10.00")]
    # Net -12.90 + 6.45 + 10.00 = 3.55; VAT 3.55 * 19% = 0.6745 -> 0.67; gross 4.22.
    assert (result.invoice.totals.net_total, result.invoice.totals.gross_total) == (D("3.55"), D("4.22"))


def test_change_timing_rules():
    at = berlin(2026, 3, 12, 9, 30)
    deferred_upgrades = PlanChangePolicy(upgrade="end_of_cycle")
    assert change_effective_at(at, D("10"), D("20"), MARCH, deferred_upgrades) == MARCH.end
    assert change_effective_at(at, D("10"), D("10"), MARCH) == at  # same price: at once
    with pytest.raises(ValueError, match="outside the period"):
        change_effective_at(berlin(2026, 4, 2), D("10"), D("20"), MARCH)


# --- suspension and termination ---------------------------------------------------------------


def test_suspended_days_are_credited():
    product = ProductTimeline(
        product_id="p1",
        plans=[plan("l", "25.00", berlin(2026, 1, 1))],
        # Suspended on 10 April (not billed), restored on 20 April (billed): 10..19 April = indices 9..19.
        suspensions=[Suspension(start=berlin(2026, 4, 10, 14), end=berlin(2026, 4, 20, 9))],
    )
    inputs = CycleInputs(spec=SPEC, period=APRIL, products=[product], billed_fees=[billed_in_advance("p1", "l", "25.00", APRIL)])
    result = compute_cycle_charges(inputs)
    # Credit: round(25*19/30 = 15.833) - round(25*9/30 = 7.5) = 15.83 - 7.50 = 8.33 (10/30 of 25.00 = 8.333...)
    # May (31 days) in advance: 25.00.
    assert amounts(result) == [D("-8.33"), D("25.00")]
    assert result.lines[0].description == "Credit: Mobile L monthly fee, not used 2026-04-10 to 2026-04-19 (10/30 days)"


def test_open_suspension_is_not_billed_in_advance_and_the_restored_part_is_charged_later():
    suspended = Suspension(start=berlin(2026, 4, 25, 10))
    product = ProductTimeline(product_id="p1", plans=[plan("l", "25.00", berlin(2026, 1, 1))], suspensions=[suspended])
    april = CycleInputs(spec=SPEC, period=APRIL, products=[product], billed_fees=[billed_in_advance("p1", "l", "25.00", APRIL)])
    first = compute_cycle_charges(april)
    # Credit 25..30 April (indices 24..30): 25.00 - round(25*24/30 = 20.00) = 5.00. May: still suspended, nothing.
    assert amounts(first) == [D("-5.00")]

    # Restored on 10 May; May's invoice charges 10..31 May and June in advance.
    may = next_period(SPEC, APRIL)
    restored = ProductTimeline(
        product_id="p1",
        plans=product.plans,
        suspensions=[Suspension(start=suspended.start, end=berlin(2026, 5, 10, 8))],
    )
    second = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=may, products=[restored], billed_fees=[*april.billed_fees, *stored(first)])
    )
    # May has 31 days, 10..31 May = indices 9..31: 25.00 - round(25*9/31 = 7.258) = 25.00 - 7.26 = 17.74
    # June in advance: 25.00
    assert amounts(second) == [D("17.74"), D("25.00")]


def test_termination_on_the_31st():
    product = ProductTimeline(
        product_id="p1", plans=[plan("s", "9.99", berlin(2025, 11, 3))], terminated_at=berlin(2026, 3, 31, 10)
    )
    inputs = CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "s", "9.99", MARCH)])
    result = compute_cycle_charges(inputs)
    # The termination day is not billed: 31 March = index 30 of 31.
    # Credit 9.99 - round(9.99*30/31 = 9.6677) = 9.99 - 9.67 = 0.32; no April fee.
    assert amounts(result) == [D("-0.32")]
    # Net -0.32; VAT -0.32 * 19% = -0.0608 -> -0.06; gross -0.38: nothing due, 0.38 becomes credit.
    assert result.invoice.totals.gross_total == D("-0.38")
    assert result.amount_due == D("0.00")
    assert (result.credit.from_this_invoice, result.credit.carried_forward) == (D("0.38"), D("0.38"))


def test_termination_on_the_31st_that_starts_a_cycle_credits_the_whole_cycle():
    spec = monthly(31)
    cycle = period_of(spec, berlin(2026, 4, 10))  # 31 March .. 29 April (BCD 31 clamps to 30 April)
    assert (cycle.local_start.isoformat(), cycle.local_end.isoformat()) == ("2026-03-31", "2026-04-30")
    product = ProductTimeline(
        product_id="p1", plans=[plan("s", "9.99", berlin(2025, 11, 3))], terminated_at=berlin(2026, 3, 31, 10)
    )
    result = compute_cycle_charges(
        CycleInputs(spec=spec, period=cycle, products=[product], billed_fees=[billed_in_advance("p1", "s", "9.99", cycle)])
    )
    # Terminated on the cycle's first day, which is not billed: the whole advance fee comes back.
    assert amounts(result) == [D("-9.99")]
    assert (result.lines[0].quantity, result.lines[0].unit) == (D(-1), "MON")


def test_back_dated_termination_is_reconciled_when_asked():
    february = period_of(SPEC, berlin(2026, 2, 10))  # 28 days
    product = ProductTimeline(
        product_id="p1", plans=[plan("s", "28.00", berlin(2025, 11, 3))], terminated_at=berlin(2026, 2, 20, 10)
    )
    fees = [billed_in_advance("p1", "s", "28.00", february), billed_in_advance("p1", "s", "28.00", MARCH)]
    late = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=fees, reconcile_since=february.start)
    )
    # February: 20..28 Feb = indices 19..28 of 28: 28.00 - round(28*19/28 = 19.00) = 9.00 back.
    # March: billed in advance, not used at all: 28.00 back.
    assert amounts(late) == [D("-9.00"), D("-28.00")]
    assert late.lines[0].period_start.isoformat() == "2026-02-20"
    # Without reconcile_since only the closed period is looked at.
    assert amounts(compute_cycle_charges(CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=fees))) == [D("-28.00")]


# --- DST, month ends, leap years ----------------------------------------------------------------


def test_spring_dst_month_prorates_by_calendar_days_not_hours():
    # March 2026 in Berlin is 743 hours long (31*24 - 1), but 31 days.
    assert MARCH.duration == timedelta(days=31) - timedelta(hours=1)
    activated = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST on the 29th, just after the change
    product = ProductTimeline(product_id="p1", plans=[plan("s", "9.99", activated)])
    result = compute_cycle_charges(CycleInputs(spec=SPEC, period=MARCH, products=[product]))
    # 29, 30, 31 March = indices 28..31: 9.99 - round(9.99*28/31 = 9.0232) = 9.99 - 9.02 = 0.97
    # (by elapsed time it would be 71/743 * 9.99 = 0.9546 -> 0.95). April in advance: 9.99.
    assert amounts(result) == [D("0.97"), D("9.99")]
    assert result.lines[0].description == "Mobile S monthly fee, 2026-03-29 to 2026-03-31 (3/31 days)"


def test_autumn_dst_change_in_the_repeated_hour():
    spec = SPEC
    october = period_of(spec, berlin(2026, 10, 10))  # 31 days, 745 hours: clocks go back on the 25th
    assert october.duration == timedelta(days=31, hours=1)
    # 02:30 for the second time (CET), i.e. 01:30 UTC on 25 October.
    upgraded = berlin(2026, 10, 25, 2, 30, fold=1)
    assert upgraded.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    product = ProductTimeline(product_id="p1", plans=[plan("s", "10.00", berlin(2026, 1, 1)), plan("m", "20.00", upgraded)])
    result = compute_cycle_charges(
        CycleInputs(spec=spec, period=october, products=[product], billed_fees=[billed_in_advance("p1", "s", "10.00", october)])
    )
    # 25..31 October = indices 24..31 of 31.
    # Credit S: 10.00 - round(10*24/31 = 7.7419) = 10.00 - 7.74 = 2.26
    # Charge M: 20.00 - round(20*24/31 = 15.4839) = 20.00 - 15.48 = 4.52; November in advance 20.00
    assert amounts(result) == [D("-2.26"), D("4.52"), D("20.00")]
    # The stored coverage starts at local midnight of the 25th, still summer time then.
    assert result.charges[0].billed_fee.covered_from == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("year", "days", "first_part", "next_start", "next_days"),
    [
        # 2026: BCD 31 clamps to 28 Feb. Cycle 31 Jan .. 27 Feb = 28 days; activation on 10 Feb = index 10.
        # 19.99 - round(19.99*10/28 = 7.1393) = 19.99 - 7.14 = 12.85
        (2026, 28, "12.85", "2026-02-28", 31),
        # 2028 (leap): cycle 31 Jan .. 28 Feb = 29 days; 10 Feb = index 10.
        # 19.99 - round(19.99*10/29 = 6.8931) = 19.99 - 6.89 = 13.10
        (2028, 29, "13.10", "2028-02-29", 31),
    ],
)
def test_bill_cycle_day_31_in_february(year, days, first_part, next_start, next_days):
    spec = monthly(31)
    cycle = period_of(spec, berlin(year, 2, 15))
    assert cycle.local_start.isoformat() == f"{year}-01-31"
    assert (cycle.local_end - cycle.local_start).days == days
    product = ProductTimeline(product_id="p1", plans=[plan("s", "19.99", berlin(year, 2, 10, 12))])
    result = compute_cycle_charges(CycleInputs(spec=spec, period=cycle, products=[product]))
    assert amounts(result) == [D(first_part), D("19.99")]
    upcoming = result.lines[1]
    # The next cycle starts on the clamped day and returns to the 31st: 28/29 Feb .. 30 March.
    assert upcoming.period_start.isoformat() == next_start
    assert (upcoming.period_end - upcoming.period_start).days == next_days
    assert upcoming.period_end.isoformat() == f"{year}-03-31"


@pytest.mark.parametrize("bcd", [29, 30, 31])
def test_late_bill_cycle_days_bill_every_day_of_a_common_february_once(bcd):
    spec = monthly(bcd)
    product = ProductTimeline(product_id="p1", plans=[plan("s", "10.00", berlin(2025, 12, 1))])
    cycle = period_of(spec, berlin(2026, 2, 20))
    seen: list[tuple] = []
    fees: list[BilledFee] = []
    for _ in range(3):
        result = compute_cycle_charges(CycleInputs(spec=spec, period=cycle, products=[product], billed_fees=fees))
        fees += stored(result)
        seen += [(line.period_start, line.period_end) for line in result.lines]
        cycle = next_period(spec, cycle)
    # The closed cycle, then three cycles in advance; every stretch starts where the previous one
    # ended: no day billed twice, none skipped, whatever the month length.
    assert len(seen) == 4
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert seen[0][0].isoformat() == f"2026-01-{bcd}"
    assert seen[-1][1].isoformat() == f"2026-05-{bcd}"


# --- discounts ----------------------------------------------------------------------------------


def test_hundred_percent_recurring_discount_makes_the_fee_zero():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    promo = Discount(
        id="free3", name="3 months free", kind="percent", value=D("100"), applies_to="recurring",
        product_id="p1", first_cycle_at=berlin(2026, 4, 1), cycles=3,
    )
    inputs = CycleInputs(
        spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)], discounts=[promo]
    )
    result = compute_cycle_charges(inputs)
    # April in advance: 20.00, discount -20.00.
    assert amounts(result) == [D("20.00"), D("-20.00")]
    assert result.lines[1].description == "3 months free on Mobile M monthly fee, 2026-04-01 to 2026-04-30"
    assert result.charges[0].billed_fee.net_fee == D("0")
    totals = result.invoice.totals
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (D("0.00"), D("0.00"), D("0.00"))


def test_hundred_percent_invoice_discount_gives_a_zero_invoice_never_negative():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    usage = UsageItem(
        record_id="u1", product_id="p1", usage_type="voice", event_time=berlin(2026, 3, 5),
        received_at=berlin(2026, 3, 5), amount=D("3.504999"), chargeable_units=12,
    )
    handset = OneTimeCharge(key="hw:1", product_id="p1", description="Handset", amount=D("29.99"), incurred_at=berlin(2026, 3, 3))
    goodwill = Discount(
        id="sorry", name="Goodwill: invoice free", kind="percent", value=D("100"), applies_to="invoice",
        first_cycle_at=berlin(2026, 3, 1), cycles=1,
    )
    result = compute_cycle_charges(
        CycleInputs(
            spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)],
            usage=[usage], one_time=[handset], discounts=[goodwill],
        )
    )
    # April fee 20.00 + handset 29.99 + usage 3.504999 -> 3.50 = 53.49; discount -53.49.
    assert amounts(result) == [D("20.00"), D("29.99"), D("3.50"), D("-53.49")]
    totals = result.invoice.totals
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (D("0.00"), D("0.00"), D("0.00"))


def test_fixed_invoice_discount_is_capped_and_split_over_vat_groups():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    book = OneTimeCharge(
        key="book:1", description="Printed manual", amount=D("10.00"), incurred_at=berlin(2026, 3, 3), vat_rate_class="reduced"
    )
    promo = Discount(
        id="x", name="Welcome 6 EUR", kind="fixed", value=D("6.00"), applies_to="invoice", first_cycle_at=berlin(2026, 3, 1)
    )
    result = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)],
                    one_time=[book], discounts=[promo])
    )
    # Base 20.00 (19%) + 10.00 (7%) = 30.00. Shares by cumulative rounding:
    # 19% group: round(6.00*20/30) = 4.00; 7% group: 6.00 - 4.00 = 2.00.
    assert amounts(result) == [D("20.00"), D("10.00"), D("-4.00"), D("-2.00")]
    # VAT: 16.00 * 19% = 3.04; 8.00 * 7% = 0.56. Net 24.00, gross 27.60.
    totals = result.invoice.totals
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (D("24.00"), D("3.60"), D("27.60"))

    big = promo.model_copy(update={"value": D("500.00")})
    capped = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)],
                    one_time=[book], discounts=[big])
    )
    # 500.00 is capped at the base 30.00: -20.00 and -10.00, a zero invoice.
    assert amounts(capped) == [D("20.00"), D("10.00"), D("-20.00"), D("-10.00")]
    assert capped.invoice.totals.gross_total == D("0.00")


def test_recurring_discount_window_and_fixed_amount():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    promo = Discount(
        id="five", name="5 EUR off", kind="fixed", value=D("5.00"), applies_to="recurring", product_id="p1",
        first_cycle_at=berlin(2026, 4, 15), cycles=1,
    )
    fees = [billed_in_advance("p1", "m", "20.00", MARCH)]
    march = compute_cycle_charges(CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=fees, discounts=[promo]))
    assert amounts(march) == [D("20.00"), D("-5.00")]  # April is the one discounted cycle
    fees += stored(march)
    april = compute_cycle_charges(CycleInputs(spec=SPEC, period=APRIL, products=[product], billed_fees=fees, discounts=[promo]))
    assert amounts(april) == [D("20.00")]  # May: window over


def test_discount_is_reversed_with_the_credit_for_unused_days():
    product = ProductTimeline(
        product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))], terminated_at=berlin(2026, 3, 21, 10)
    )
    half = Discount(
        id="half", name="50% off", kind="percent", value=D("50"), applies_to="recurring", product_id="p1",
        first_cycle_at=berlin(2026, 3, 1),
    )
    result = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product],
                    billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH, net_fee="10.00")], discounts=[half])
    )
    # 21..31 March = indices 20..31. Fee credit: 20.00 - round(20*20/31 = 12.903) = 7.10
    # Discount reversed: 10.00 - round(10*20/31 = 6.4516) = 3.55. Net -3.55 = the discounted fee's part.
    assert amounts(result) == [D("-7.10"), D("3.55")]
    assert result.lines[1].kind == "discount" and "reversed" in result.lines[1].description


# --- VAT ----------------------------------------------------------------------------------------


def test_reverse_charge_buyer_gets_category_ae_on_every_line():
    treatment = vat_treatment(Buyer(country="AT", is_business=True, vat_id="ATU57194903"))
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    activation = OneTimeCharge(key="activation:p1", product_id="p1", description="Activation fee", amount=D("9.99"), incurred_at=berlin(2026, 3, 2))
    result = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, vat=treatment, products=[product],
                    billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)], one_time=[activation])
    )
    assert {(line.vat_category, line.vat_rate) for line in result.lines} == {("AE", D("0"))}
    # 20.00 + 9.99 = 29.99 net, no VAT.
    totals = result.invoice.totals
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (D("29.99"), D("0.00"), D("29.99"))
    assert result.vat_treatment.exemption_reason_code == "VATEX-EU-AE"
    assert result.vat_treatment.buyer_vat_id == "ATU57194903"


# --- usage --------------------------------------------------------------------------------------


def _usage(record_id, usage_type, event, received, amount, units=1, product="p1"):
    return UsageItem(record_id=record_id, product_id=product, usage_type=usage_type, event_time=event,
                     received_at=received, amount=D(amount), chargeable_units=units)


def test_usage_inside_and_after_the_grace_period():
    grace = timedelta(days=2)  # cut-off: 3 April 00:00 Berlin
    u1 = _usage("u1", "voice", berlin(2026, 3, 31, 23, 50), berlin(2026, 4, 1, 8), "1.234567", 2)  # late, inside grace
    u2 = _usage("u2", "voice", berlin(2026, 3, 15), berlin(2026, 3, 15), "0.500000", 1)
    u3 = _usage("u3", "voice", berlin(2026, 3, 30, 12), berlin(2026, 4, 3, 10), "0.700000", 1)  # after the cut-off
    u4 = _usage("u4", "data", berlin(2026, 4, 1, 0, 10), berlin(2026, 4, 1, 0, 11), "0.050000", 5)  # April usage
    u5 = _usage("u5", "sms", berlin(2026, 2, 20), berlin(2026, 3, 2), "0.190000", 1)  # February's, missed its cut-off
    u6 = _usage("u6", "sms", berlin(2026, 3, 20), berlin(2026, 4, 3), "0.190000", 1)  # arrives exactly at the cut-off
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    base = {"spec": SPEC, "products": [product], "usage_grace": grace}
    march = compute_cycle_charges(
        CycleInputs(period=MARCH, usage=[u1, u2, u3, u4, u5, u6], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)], **base)
    )
    usage_lines = [c for c in march.charges if c.source == "usage"]
    # February (late): 0.19. March voice: 1.234567 + 0.5 = 1.734567 -> 1.73.
    assert [(c.line.net_amount, c.line.quantity, c.usage_ids) for c in usage_lines] == [
        (D("0.19"), D(1), ["u5"]),
        (D("1.73"), D(3), ["u1", "u2"]),
    ]
    assert usage_lines[0].line.description == "Mobile M SMS beyond allowance, 2026-02-01 to 2026-02-28 (late records), 1 record"
    assert usage_lines[0].line.period_start.isoformat() == "2026-02-01"
    assert march.deferred_usage_ids == ["u3", "u4", "u6"]

    # April's invoice takes the rest; no record is billed twice or lost.
    billed = {i for c in usage_lines for i in c.usage_ids}
    left = [u for u in (u1, u2, u3, u4, u5, u6) if u.record_id not in billed]
    april = compute_cycle_charges(CycleInputs(period=APRIL, usage=left, billed_fees=[*stored(march), billed_in_advance("p1", "m", "20.00", MARCH)], **base))
    april_usage = [c for c in april.charges if c.source == "usage"]
    # March (late) sms 0.19 and voice 0.70 (by usage period, then type); April data 0.05.
    assert [(c.line.net_amount, c.usage_ids) for c in april_usage] == [
        (D("0.19"), ["u6"]),
        (D("0.70"), ["u3"]),
        (D("0.05"), ["u4"]),
    ]
    assert april.deferred_usage_ids == []


def test_partition_usage_is_exclusive_at_the_cut_off():
    cutoff = MARCH.end + timedelta(hours=6)
    on_time = _usage("a", "voice", MARCH.end - timedelta(seconds=1), cutoff - timedelta(microseconds=1), "1")
    at_cutoff = _usage("b", "voice", MARCH.end - timedelta(seconds=1), cutoff, "1")
    at_end = _usage("c", "voice", MARCH.end, MARCH.end, "1")
    split = partition_usage([on_time, at_cutoff, at_end], MARCH, timedelta(hours=6))
    assert [u.record_id for u in split.billable] == ["a"]
    assert [u.record_id for u in split.deferred] == ["b", "c"]


# --- one-time charges, credit -------------------------------------------------------------------


def test_one_time_charges_are_billed_once_and_not_before_they_are_incurred():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 3, 12))])
    activation = OneTimeCharge(key="activation:p1", product_id="p1", description="Mobile M activation fee", amount=D("29.99"), incurred_at=berlin(2026, 3, 12))
    handset = OneTimeCharge(key="hw:p1", product_id="p1", description="Handset", amount=D("199.00"), incurred_at=berlin(2026, 4, 2))
    old = OneTimeCharge(key="sim:p1", product_id="p1", description="SIM", amount=D("5.00"), incurred_at=berlin(2026, 3, 1))
    result = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product], one_time=[activation, handset, old], billed_keys=["sim:p1"])
    )
    # March from the 12th (indices 11..31): 20.00 - round(20*11/31 = 7.097) = 12.90; April 20.00; activation 29.99.
    assert amounts(result) == [D("12.90"), D("20.00"), D("29.99")]
    assert result.charges[2].one_time_key == "activation:p1"
    assert result.lines[2].description == "Mobile M activation fee, 2026-03-12"
    assert result.deferred_one_time_keys == ["hw:p1"]


def test_account_credit_is_applied_up_to_the_amount_due_and_the_rest_carried_forward():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    march = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=MARCH, products=[product], billed_fees=[billed_in_advance("p1", "m", "20.00", MARCH)],
                    account_credit=D("50.00"))
    )
    # April 20.00 + 19% VAT 3.80 = 23.80 due; 50.00 credit pays it, 26.20 carried forward.
    assert march.invoice.totals.gross_total == D("23.80")
    assert (march.credit.applied, march.credit.carried_forward, march.amount_due) == (D("23.80"), D("26.20"), D("0.00"))
    assert march.credit.line is not None and march.credit.line.amount == D("-23.80")
    # The credit is a payment, not a price reduction: VAT stays 3.80.
    assert march.invoice.totals.vat_total == D("3.80")

    # On L from May (a change scheduled for the start of the next cycle).
    upgraded = ProductTimeline(product_id="p1", plans=[*product.plans, plan("l", "30.00", berlin(2026, 5, 1))])
    april = compute_cycle_charges(
        CycleInputs(spec=SPEC, period=APRIL, products=[upgraded], billed_fees=stored(march),
                    account_credit=march.credit.carried_forward)
    )
    # May on L: 30.00 + 5.70 VAT = 35.70; 26.20 credit applied, 9.50 due, nothing carried.
    assert amounts(april) == [D("30.00")]
    assert (april.credit.applied, april.amount_due, april.credit.carried_forward) == (D("26.20"), D("9.50"), D("0.00"))


# --- fixed (demo) cycles, inputs ----------------------------------------------------------------


def test_fixed_cycles_prorate_by_elapsed_time():
    anchor = datetime(2026, 3, 1, 10, tzinfo=UTC)
    spec = CycleSpec(kind="fixed", period_seconds=40, anchor=anchor)
    cycle = period_of(spec, anchor)
    product = ProductTimeline(product_id="p1", plans=[plan("demo", "1.00", anchor + timedelta(seconds=10))])
    result = compute_cycle_charges(CycleInputs(spec=spec, period=cycle, products=[product]))
    # 30 of 40 seconds: 1.00 - round(1.00 * 10/40 = 0.25) = 0.75; the next 40 s in advance: 1.00.
    assert amounts(result) == [D("0.75"), D("1.00")]
    assert cycle_charges(again(CycleInputs(spec=spec, period=cycle, products=[product]), result)) == []


def test_inputs_are_checked():
    product = ProductTimeline(product_id="p1", plans=[plan("m", "20.00", berlin(2026, 1, 1))])
    with pytest.raises(ValidationError, match="without a timeline"):
        CycleInputs(spec=SPEC, period=MARCH, billed_fees=[billed_in_advance("p9", "m", "20.00", MARCH)])
    with pytest.raises(ValidationError, match="duplicate usage record_id"):
        CycleInputs(spec=SPEC, period=MARCH, products=[product], usage=[_usage("u", "sms", berlin(2026, 3, 2), berlin(2026, 3, 2), "1")] * 2)
    with pytest.raises(ValidationError, match="not a period of spec"):
        CycleInputs(spec=monthly(15), period=MARCH)
    with pytest.raises(ValidationError, match="increasing"):
        ProductTimeline(product_id="p1", plans=[plan("a", "1", berlin(2026, 2, 1)), plan("b", "2", berlin(2026, 1, 1))])
    with pytest.raises(ValidationError):
        PlanSpan(plan_id="a", name="A", monthly_fee=9.99, effective_at=berlin(2026, 1, 1))  # float money
    with pytest.raises(ValidationError, match="100%"):
        Discount(id="d", name="d", kind="percent", value=D("101"), applies_to="invoice", first_cycle_at=berlin(2026, 1, 1))
