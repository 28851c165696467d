from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from domain.billing_cycle import (
    BillingPeriod,
    CycleSpec,
    next_period,
    period_containing,
    previous_period,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def monthly(bcd: int, tz: str = "Europe/Berlin") -> CycleSpec:
    return CycleSpec(kind="monthly", bill_cycle_day=bcd, timezone=tz)


def starts(spec: CycleSpec, first: BillingPeriod, count: int) -> list[date]:
    result, period = [], first
    for _ in range(count):
        result.append(period.local_start)
        period = next_period(spec, period)
    return result


# --- DST ---------------------------------------------------------------------


def test_berlin_period_over_spring_dst_change_is_one_hour_short():
    spec = monthly(15)
    period = period_containing(spec, utc(2026, 3, 20, 12))
    assert (period.local_start, period.local_end) == (date(2026, 3, 15), date(2026, 4, 15))
    assert (period.local_end - period.local_start).days == 31
    # Local midnight: CET (+1) at the start, CEST (+2) at the end.
    assert period.start == utc(2026, 3, 14, 23)
    assert period.end == utc(2026, 4, 14, 22)
    assert period.end - period.start == (31 * 24 - 1) * HOUR


def test_berlin_period_over_autumn_dst_change_is_one_hour_long():
    spec = monthly(15)
    period = period_containing(spec, utc(2026, 10, 25, 12))
    assert (period.local_start, period.local_end) == (date(2026, 10, 15), date(2026, 11, 15))
    assert period.start == utc(2026, 10, 14, 22)
    assert period.end == utc(2026, 11, 14, 23)
    assert period.end - period.start == (31 * 24 + 1) * HOUR


def test_new_york_month_boundaries_follow_local_midnight():
    spec = monthly(1, "America/New_York")
    march = period_containing(spec, utc(2026, 3, 15))
    assert march.start == utc(2026, 3, 1, 5)  # EST, -5
    assert march.end == utc(2026, 4, 1, 4)  # EDT, -4
    assert march.end - march.start == (31 * 24 - 1) * HOUR

    november = period_containing(spec, utc(2026, 11, 15))
    assert november.start == utc(2026, 11, 1, 4)
    assert november.end == utc(2026, 12, 1, 5)
    assert november.end - november.start == (30 * 24 + 1) * HOUR


def test_midnight_skipped_by_dst_starts_the_period_at_the_first_instant_of_the_day():
    # Cuba springs forward at midnight: 2026-03-08 00:00 local does not exist.
    spec = monthly(8, "America/Havana")
    period = period_containing(spec, utc(2026, 3, 20))
    havana = ZoneInfo("America/Havana")
    assert period.local_start == date(2026, 3, 8)
    assert period.start.astimezone(havana).date() == date(2026, 3, 8)
    assert (period.start - MICROSECOND).astimezone(havana).date() == date(2026, 3, 7)


def test_same_instant_falls_in_different_periods_per_time_zone():
    instant = utc(2026, 3, 31, 23, 30)  # Berlin: 1 April 01:30; New York: 31 March 19:30
    assert period_containing(monthly(1), instant).local_start == date(2026, 4, 1)
    assert period_containing(monthly(1, "America/New_York"), instant).local_start == date(2026, 3, 1)


# --- bill cycle day clamping -----------------------------------------------------


def test_bcd_31_clamps_to_end_of_february_2026_and_returns_to_31():
    spec = monthly(31)
    january = period_containing(spec, utc(2026, 2, 15))
    assert (january.local_start, january.local_end) == (date(2026, 1, 31), date(2026, 2, 28))
    february = next_period(spec, january)
    assert (february.local_start, february.local_end) == (date(2026, 2, 28), date(2026, 3, 31))
    march = next_period(spec, february)
    assert (march.local_start, march.local_end) == (date(2026, 3, 31), date(2026, 4, 30))


def test_bcd_31_in_leap_february_2028():
    spec = monthly(31)
    period = period_containing(spec, utc(2028, 2, 29, 12))
    assert (period.local_start, period.local_end) == (date(2028, 2, 29), date(2028, 3, 31))
    assert previous_period(spec, period).local_start == date(2028, 1, 31)


def test_bcd_31_over_a_year():
    spec = monthly(31)
    first = period_containing(spec, utc(2026, 1, 31, 12))
    assert starts(spec, first, 13) == [
        date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30),
        date(2026, 5, 31), date(2026, 6, 30), date(2026, 7, 31), date(2026, 8, 31),
        date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 30), date(2026, 12, 31),
        date(2027, 1, 31),
    ]  # fmt: skip


@pytest.mark.parametrize("bcd", [29, 30])
def test_bcd_29_and_30_only_clamp_in_february(bcd):
    spec = monthly(bcd)
    first = period_containing(spec, utc(2026, 1, bcd, 12))
    expected = [date(2026, month, 28 if month == 2 else bcd) for month in range(1, 13)]
    assert starts(spec, first, 12) == expected


@pytest.mark.parametrize("bcd", [29, 30, 31])
def test_leap_february_2028_starts_on_the_29th(bcd):
    spec = monthly(bcd)
    period = period_containing(spec, utc(2028, 3, 1, 12))
    assert period.local_start == date(2028, 2, 29)
    assert previous_period(spec, period).local_start == date(2028, 1, bcd)


@pytest.mark.parametrize("bcd", [1, 15, 29, 30, 31])
def test_periods_tile_time_without_gaps_and_previous_undoes_next(bcd):
    spec = monthly(bcd)
    period = period_containing(spec, utc(2026, 1, 10))
    for _ in range(24):
        following = next_period(spec, period)
        assert following.start == period.end
        assert following.local_start == period.local_end
        assert previous_period(spec, following) == period
        period = following


# --- boundaries ------------------------------------------------------------------


def test_period_containing_at_exact_boundaries():
    spec = monthly(1)
    april_start = utc(2026, 3, 31, 22)  # 1 April 00:00 CEST
    april = period_containing(spec, april_start)
    assert april.local_start == date(2026, 4, 1)
    assert april.start == april_start
    assert period_containing(spec, april_start - MICROSECOND).local_start == date(2026, 3, 1)
    assert period_containing(spec, april.end - MICROSECOND) == april
    assert period_containing(spec, april.end).local_start == date(2026, 5, 1)


def test_contains_is_start_inclusive_end_exclusive():
    period = period_containing(monthly(1), utc(2026, 4, 10))
    assert period.contains(period.start)
    assert period.contains(period.end - MICROSECOND)
    assert not period.contains(period.end)
    assert not period.contains(period.start - MICROSECOND)


def test_period_containing_accepts_non_utc_aware_instants():
    local = datetime(2026, 4, 1, 0, 0, tzinfo=BERLIN)
    period = period_containing(monthly(1), local)
    assert period.local_start == date(2026, 4, 1)
    assert period.start.tzinfo is UTC


def test_naive_instant_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        period_containing(monthly(1), datetime(2026, 4, 1))


# --- fixed cycles ------------------------------------------------------------------


def fixed(anchor: datetime, seconds: int = 40, tz: str = "Europe/Berlin") -> CycleSpec:
    return CycleSpec(kind="fixed", period_seconds=seconds, anchor=anchor, timezone=tz)


def test_fixed_cycle_periods_count_from_the_anchor():
    anchor = utc(2026, 3, 1, 10)
    spec = fixed(anchor)
    period = period_containing(spec, anchor + timedelta(seconds=100))
    assert period.start == anchor + timedelta(seconds=80)
    assert period.end == anchor + timedelta(seconds=120)
    assert (period.local_start, period.local_end) == (date(2026, 3, 1), date(2026, 3, 2))
    assert period_containing(spec, anchor).start == anchor
    assert period_containing(spec, anchor + timedelta(seconds=40)).start == anchor + timedelta(seconds=40)
    assert next_period(spec, period).start == anchor + timedelta(seconds=120)
    assert previous_period(spec, period).start == anchor + timedelta(seconds=40)


def test_fixed_cycle_before_the_anchor_floors_to_earlier_periods():
    anchor = utc(2026, 3, 1, 10)
    period = period_containing(fixed(anchor), anchor - timedelta(seconds=1))
    assert (period.start, period.end) == (anchor - timedelta(seconds=40), anchor)


def test_fixed_period_across_local_midnight_covers_both_local_days():
    anchor = utc(2026, 3, 1, 22, 59, 50)  # 23:59:50 in Berlin
    period = period_containing(fixed(anchor), anchor)
    assert (period.local_start, period.local_end) == (date(2026, 3, 1), date(2026, 3, 3))


def test_fixed_anchor_is_normalised_to_utc():
    spec = fixed(datetime(2026, 3, 1, 11, tzinfo=BERLIN))
    assert spec.anchor == utc(2026, 3, 1, 10)
    assert spec.anchor.tzinfo is UTC


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"bill_cycle_day": 0},
        {"bill_cycle_day": 32},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": ""},
        {"period_seconds": 40},
        {"kind": "fixed", "period_seconds": 40},
        {"kind": "fixed", "anchor": datetime(2026, 1, 1, tzinfo=UTC)},
        {"kind": "fixed", "period_seconds": 0, "anchor": datetime(2026, 1, 1, tzinfo=UTC)},
        {"kind": "fixed", "period_seconds": 40, "anchor": datetime(2026, 1, 1)},
        {"kind": "weekly"},
    ],
)
def test_invalid_cycle_specs_are_rejected(fields):
    with pytest.raises(ValidationError):
        CycleSpec(**fields)


def test_cycle_spec_is_frozen():
    spec = monthly(1)
    with pytest.raises(ValidationError):
        spec.bill_cycle_day = 5  # type: ignore[misc]


def test_billing_period_must_not_be_empty():
    with pytest.raises(ValidationError):
        BillingPeriod(
            start=utc(2026, 1, 1), end=utc(2026, 1, 1), local_start=date(2026, 1, 1), local_end=date(2026, 1, 2)
        )


def test_spec_and_period_survive_a_json_round_trip():
    spec = fixed(utc(2026, 3, 1, 10))
    period = period_containing(spec, utc(2026, 3, 1, 10, 1))
    assert CycleSpec.model_validate_json(spec.model_dump_json()) == spec
    assert BillingPeriod.model_validate_json(period.model_dump_json()) == period
