from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from domain.billing_cycle import CycleSpec, period_containing
from domain.money import to_cents
from domain.proration import active_fraction, prorate

BERLIN = "Europe/Berlin"
BERLIN_TZ = ZoneInfo(BERLIN)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN_TZ)


def month_period(year: int, month: int, tz: str = BERLIN):
    return period_containing(CycleSpec(bill_cycle_day=1, timezone=tz), datetime(year, month, 10, tzinfo=UTC))


def assert_ratio(fraction: Decimal, numerator: int, denominator: int) -> None:
    assert abs(fraction * denominator - numerator) < Decimal("1e-25")


def test_service_active_all_period_is_charged_in_full():
    march = month_period(2026, 3)
    assert active_fraction(march, berlin(2025, 12, 1), None, BERLIN) == 1


def test_activation_day_counts():
    march = month_period(2026, 3)
    fraction = active_fraction(march, berlin(2026, 3, 10, 14, 0), None, BERLIN)
    assert_ratio(fraction, 22, 31)  # 10th..31st
    assert to_cents(prorate(Decimal("31.00"), fraction)) == Decimal("22.00")


def test_days_are_account_local_not_utc():
    march = month_period(2026, 3)
    # 9 March 23:30 UTC is already 10 March in Berlin, so the 9th is not billed.
    fraction = active_fraction(march, datetime(2026, 3, 9, 23, 30, tzinfo=UTC), None, BERLIN)
    assert_ratio(fraction, 22, 31)


def test_termination_day_does_not_count():
    march = month_period(2026, 3)
    fraction = active_fraction(march, berlin(2026, 1, 1), berlin(2026, 3, 20, 10), BERLIN)
    assert_ratio(fraction, 19, 31)  # 1st..19th


def test_plan_change_bills_every_day_exactly_once():
    march = month_period(2026, 3)
    change = berlin(2026, 3, 12, 9, 30)
    old = active_fraction(march, berlin(2026, 1, 1), change, BERLIN)
    new = active_fraction(march, change, None, BERLIN)
    assert_ratio(old, 11, 31)
    assert_ratio(new, 20, 31)
    assert_ratio(old + new, 31, 31)


def test_proration_in_dst_month_counts_days_not_hours():
    march = month_period(2026, 3)  # clocks go forward on 29 March
    fraction = active_fraction(march, datetime(2026, 3, 29, 1, 30, tzinfo=UTC), None, BERLIN)
    assert_ratio(fraction, 3, 31)  # 29th, 30th, 31st
    # By elapsed time it would be (3*24 - 1) / (31*24 - 1); by days it is exactly 3/31.
    assert to_cents(prorate(Decimal("31.00"), fraction)) == Decimal("3.00")


def test_leap_february_has_29_days():
    february = month_period(2028, 2)
    fraction = active_fraction(february, berlin(2028, 2, 15, 8), None, BERLIN)
    assert_ratio(fraction, 15, 29)
    assert to_cents(prorate(Decimal("29.00"), fraction)) == Decimal("15.00")


def test_common_february_half_is_exact():
    february = month_period(2026, 2)
    assert active_fraction(february, berlin(2026, 2, 15), None, BERLIN) == Decimal("0.5")


def test_new_york_account_uses_its_own_local_days():
    tz = "America/New_York"
    march = month_period(2026, 3, tz)
    # 10 March 02:00 UTC is still 9 March in New York.
    fraction = active_fraction(march, datetime(2026, 3, 10, 2, tzinfo=UTC), None, tz)
    assert_ratio(fraction, 23, 31)


@pytest.mark.parametrize(
    ("active_from", "active_to"),
    [
        (berlin(2026, 1, 1), berlin(2026, 2, 15)),  # ended before the period
        (berlin(2026, 4, 1), None),  # starts on the (exclusive) end day
        (berlin(2026, 3, 10, 8), berlin(2026, 3, 10, 18)),  # on and off the same day
        (berlin(2026, 3, 20), berlin(2026, 3, 10)),  # ends before it starts
    ],
)
def test_no_active_day_gives_zero(active_from, active_to):
    assert active_fraction(month_period(2026, 3), active_from, active_to, BERLIN) == 0


def test_fixed_cycles_prorate_by_elapsed_time():
    anchor = datetime(2026, 3, 1, 10, tzinfo=UTC)
    spec = CycleSpec(kind="fixed", period_seconds=40, anchor=anchor)
    period = period_containing(spec, anchor)
    start = period.start
    assert active_fraction(period, start + timedelta(seconds=10), None, BERLIN, "fixed") == Decimal("0.75")
    half_second = active_fraction(
        period, start + timedelta(seconds=10, milliseconds=500), start + timedelta(seconds=30), BERLIN, "fixed"
    )
    assert half_second == Decimal("0.4875")
    assert active_fraction(period, start - timedelta(seconds=5), None, BERLIN, "fixed") == 1
    assert active_fraction(period, period.end, None, BERLIN, "fixed") == 0


def test_prorated_half_cent_rounds_up_despite_non_terminating_fraction():
    february = month_period(2026, 2)
    fraction = active_fraction(february, berlin(2026, 2, 28), None, BERLIN)  # 1/28 = 0.0357142857...
    # 0.14 * 1/28 is exactly half a cent; the truncated expansion of 1/28
    # alone would give 0.00499999... and round down to 0.00.
    amount = prorate(Decimal("0.14"), fraction)
    assert amount == Decimal("0.005")
    assert to_cents(amount) == Decimal("0.01")


def test_prorated_half_cent_with_a_common_price():
    april = month_period(2026, 4)  # 30 days
    fraction = active_fraction(april, berlin(2026, 4, 6), None, BERLIN)  # 25/30 = 0.8333...
    amount = prorate(Decimal("9.99"), fraction)
    assert amount == Decimal("8.325")  # exactly, not 8.32499999...
    assert to_cents(amount) == Decimal("8.33")


def test_prorate_is_not_rounded_to_cents():
    assert prorate(Decimal("10.00"), Decimal("0.333")) == Decimal("3.33")
    assert prorate(Decimal("0.10"), Decimal("0.125")) == Decimal("0.0125")


def test_prorate_edges():
    assert prorate(Decimal("9.99"), Decimal(1)) == Decimal("9.99")
    assert prorate(Decimal("9.99"), Decimal(0)) == 0
    assert prorate(Decimal("-20.00"), Decimal("0.5")) == Decimal("-10")


def test_prorate_rejects_bad_input():
    with pytest.raises(ValueError):
        prorate(Decimal("9.99"), Decimal("1.5"))
    with pytest.raises(ValueError):
        prorate(Decimal("9.99"), Decimal("-0.1"))
    with pytest.raises(TypeError):
        prorate(9.99, Decimal("0.5"))  # type: ignore[arg-type]


def test_naive_activation_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        active_fraction(month_period(2026, 3), datetime(2026, 3, 10), None, BERLIN)
