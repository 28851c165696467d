"""Proration of recurring charges for services active during part of a period.

Monthly cycles prorate by whole local days: a day counts when the service was
active on it, where the activation day counts and the termination day does
not (so a mid-period change of plan bills each day exactly once). Fixed cycles
prorate by elapsed time.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import Literal

from domain.billing_cycle import BillingPeriod, require_utc, zone
from domain.money import parse_money

_ZERO = Decimal(0)
_ONE = Decimal(1)
_MICROSECOND = timedelta(microseconds=1)

# Fixed precision so results never depend on the caller's decimal context
# (proration also runs inside Temporal workflows, which must be deterministic).
_ARITHMETIC = Context(prec=40, rounding=ROUND_HALF_EVEN)

# A fraction such as 25/30 has no finite decimal expansion, so the fraction we
# multiply by is short of the true ratio by up to ~1e-28. Left alone, 9.99 *
# 25/30 would come out as 8.32499999... instead of exactly 8.325 and then round
# to the wrong cent. Snapping the product to 1e-18 removes that expansion error
# while staying many orders of magnitude below anything a cent rounding can see.
_SNAP = Decimal("1e-18")


def active_fraction(
    period: BillingPeriod,
    active_from: datetime,
    active_to: datetime | None,
    timezone: str,
    kind: Literal["monthly", "fixed"] = "monthly",
) -> Decimal:
    """The share of `period` during which a service active in [active_from, active_to) was active.

    Unrounded and clamped to [0, 1]; `active_to=None` means still active.
    """
    active_from = require_utc(active_from)
    if active_to is not None:
        active_to = require_utc(active_to)
    if kind == "fixed":
        active, total = _active_microseconds(period, active_from, active_to)
    else:
        active, total = _active_days(period, active_from, active_to, timezone)
    if active <= 0:
        return _ZERO
    if active >= total:
        return _ONE
    return _ARITHMETIC.divide(Decimal(active), Decimal(total))


def prorate(amount: Decimal, fraction: Decimal) -> Decimal:
    """`amount` scaled by `fraction` (0..1); not rounded to cents, that happens per invoice line."""
    amount = parse_money(amount)
    fraction = parse_money(fraction)
    if not _ZERO <= fraction <= _ONE:
        raise ValueError(f"proration fraction must be between 0 and 1, got {fraction}")
    if fraction == _ONE:
        return amount
    if fraction == _ZERO:
        return _ZERO
    product = _ARITHMETIC.multiply(amount, fraction)
    return _strip_trailing_zeros(product.quantize(_SNAP, context=_ARITHMETIC))


def _active_days(
    period: BillingPeriod, active_from: datetime, active_to: datetime | None, timezone: str
) -> tuple[int, int]:
    tz = zone(timezone)
    first_active_day = active_from.astimezone(tz).date()
    # The termination day itself is not billed, so it is the exclusive end.
    end_day = period.local_end if active_to is None else active_to.astimezone(tz).date()
    overlap_start = max(period.local_start, first_active_day)
    overlap_end = min(period.local_end, end_day)
    return _days_between(overlap_start, overlap_end), _days_between(period.local_start, period.local_end)


def _active_microseconds(
    period: BillingPeriod, active_from: datetime, active_to: datetime | None
) -> tuple[int, int]:
    overlap_start = max(period.start, active_from)
    overlap_end = period.end if active_to is None else min(period.end, active_to)
    active = (overlap_end - overlap_start) // _MICROSECOND
    total = period.duration // _MICROSECOND
    return active, total


def _days_between(start: date, end: date) -> int:
    return (end - start).days


def _strip_trailing_zeros(value: Decimal) -> Decimal:
    normalized = value.normalize(context=_ARITHMETIC)
    # normalize() turns 100 into 1E+2; keep whole numbers in plain notation.
    if normalized.as_tuple().exponent > 0:  # type: ignore[operator]
        return normalized.quantize(_ONE, context=_ARITHMETIC)
    return normalized


# --- Cumulative proration: parts of one cycle that add up exactly ------------------------------
#
# Rounding every prorated part on its own can lose or gain a cent: 10.00 split 1/3, 1/3, 1/3 gives
# 3.33 + 3.33 + 3.33 = 9.99. Rounding the *cumulative* share instead,
#
#     part(a, b) = round(fee * b / N) - round(fee * a / N)        (units a..b of N, b exclusive)
#
# makes parts of consecutive sub-periods telescope: part(0, k) + part(k, N) = round(fee) - 0 = fee
# for a fee in whole cents, whatever k is. A fee billed in advance, minus the credit for the unused
# days, is therefore exactly the prorated charge for the days used. Units are local calendar days
# for monthly cycles (a DST day of 23 or 25 hours is one day) and microseconds for fixed cycles.
# The arithmetic is exact (fractions) and rounds half away from zero, as `domain.money.to_cents`.


def period_units(period: BillingPeriod, kind: Literal["monthly", "fixed"] = "monthly") -> int:
    """How many proration units `period` has: local calendar days (monthly) or microseconds (fixed)."""
    if kind == "fixed":
        return period.duration // _MICROSECOND
    return _days_between(period.local_start, period.local_end)


def unit_index(
    period: BillingPeriod, instant: datetime, timezone: str, kind: Literal["monthly", "fixed"] = "monthly"
) -> int:
    """The unit of `period` that `instant` falls in, clamped to [0, period_units(period)].

    Monthly: the index of the instant's local calendar day, so a service that starts at `instant` is
    billed from that day on and one that stops at `instant` is billed up to the day before (the same
    day rule as `active_fraction`). Instants before the period give 0, after it the unit count.
    """
    instant = require_utc(instant)
    total = period_units(period, kind)
    if kind == "fixed":
        index = (instant - period.start) // _MICROSECOND
    else:
        index = _days_between(period.local_start, instant.astimezone(zone(timezone)).date())
    return min(max(index, 0), total)


def prorated_part(amount: Decimal, start: int, end: int, total: int) -> Decimal:
    """The cents of `amount` for units [start, end) of a cycle of `total` units (cumulative rounding).

    Parts of consecutive ranges add up exactly: prorated_part(a, 0, k, n) + prorated_part(a, k, n, n)
    equals `amount` rounded to cents.
    """
    amount = parse_money(amount)
    if total <= 0:
        raise ValueError(f"a cycle needs at least one unit, got {total}")
    if not 0 <= start <= end <= total:
        raise ValueError(f"units must satisfy 0 <= start <= end <= total, got {start}, {end}, {total}")
    exact = Fraction(amount)
    return _fraction_to_cents(exact * end / total) - _fraction_to_cents(exact * start / total)


def split_prorated(amount: Decimal, boundaries: list[int], total: int) -> list[Decimal]:
    """`amount` split over consecutive ranges [b0, b1), [b1, b2), ... of a `total`-unit cycle.

    With boundaries [0, ..., total] the parts add up to `amount` in cents exactly.
    """
    if any(later < earlier for earlier, later in zip(boundaries, boundaries[1:], strict=False)):
        raise ValueError(f"boundaries must not decrease: {boundaries}")
    return [prorated_part(amount, a, b, total) for a, b in zip(boundaries, boundaries[1:], strict=False)]


def _fraction_to_cents(value: Fraction) -> Decimal:
    """Round an exact fraction to cents, half away from zero."""
    hundredths = abs(value) * 100
    cents = math.floor(hundredths + Fraction(1, 2))
    return Decimal(cents if value >= 0 else -cents).scaleb(-2, context=_ARITHMETIC)
