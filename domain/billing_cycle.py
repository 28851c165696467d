"""Billing periods: which cycle an instant belongs to, and the cycles around it.

Two kinds of cycle:

* ``monthly``: periods run from local midnight of the bill cycle day (BCD) to
  local midnight of the BCD in the following month, in the account's time
  zone. A BCD beyond a month's length clamps to that month's last day (BCD 31
  starts on 28/29 February) and returns to the BCD in months that have it.
  Because the boundaries are local midnights, a period containing a DST change
  is an hour shorter or longer in UTC than its day count suggests.
* ``fixed``: back-to-back periods of ``period_seconds`` starting at ``anchor``
  (a UTC instant). Used by the demo profile to run whole cycles in seconds.

Instants are always stored as aware UTC datetimes; local dates are derived.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

CycleKind = Literal["monthly", "fixed"]

# The smallest step a datetime can take; used to find the last instant of a period.
_RESOLUTION = timedelta(microseconds=1)


def require_utc(value: datetime) -> datetime:
    """Reject naive datetimes (their instant is unknown) and normalise aware ones to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


# An aware datetime, normalised to UTC on validation.
UtcDatetime = Annotated[datetime, AfterValidator(require_utc)]


def zone(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, with a ValueError for unknown names."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


class CycleSpec(BaseModel):
    """How an account's billing periods are laid out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CycleKind = "monthly"
    bill_cycle_day: int = Field(default=1, ge=1, le=31)
    timezone: str = "Europe/Berlin"
    period_seconds: int | None = Field(default=None, gt=0)
    anchor: UtcDatetime | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _fields_match_kind(self) -> CycleSpec:
        if self.kind == "fixed":
            if self.period_seconds is None or self.anchor is None:
                raise ValueError("a fixed cycle needs both period_seconds and anchor")
        elif self.period_seconds is not None or self.anchor is not None:
            raise ValueError("period_seconds and anchor only apply to fixed cycles")
        return self


class BillingPeriod(BaseModel):
    """One billing period: [start, end) in UTC and [local_start, local_end) as account-local dates.

    For fixed cycles the local dates cover every local day the period touches,
    so a 40-second period inside one day has local_end = local_start + 1 day.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: UtcDatetime
    end: UtcDatetime
    local_start: date
    local_end: date

    @model_validator(mode="after")
    def _non_empty(self) -> BillingPeriod:
        if self.end <= self.start:
            raise ValueError("a billing period must end after it starts")
        if self.local_end <= self.local_start:
            raise ValueError("local_end is exclusive and must be after local_start")
        return self

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def contains(self, instant: datetime) -> bool:
        return self.start <= require_utc(instant) < self.end


def period_containing(spec: CycleSpec, instant: datetime) -> BillingPeriod:
    """The period of `spec` that `instant` falls in (start inclusive, end exclusive)."""
    instant = require_utc(instant)
    if spec.kind == "fixed":
        return _fixed_period_containing(spec, instant)
    return _monthly_period_containing(spec, instant)


def next_period(spec: CycleSpec, period: BillingPeriod) -> BillingPeriod:
    """The period that starts where `period` ends."""
    return period_containing(spec, period.end)


def previous_period(spec: CycleSpec, period: BillingPeriod) -> BillingPeriod:
    """The period that ends where `period` starts."""
    return period_containing(spec, period.start - _RESOLUTION)


def cycle_start_date(year: int, month: int, bill_cycle_day: int) -> date:
    """The local date a monthly cycle starts on in the given month (BCD clamped to the month)."""
    last_day = calendar.monthrange(year, month)[1]
    return date(year, month, min(bill_cycle_day, last_day))


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of local `day`, in UTC.

    fold=0 picks the earlier reading of an ambiguous midnight, and for a
    midnight skipped by a DST gap it yields the transition instant, which is
    the first instant of that local day either way.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _monthly_period_containing(spec: CycleSpec, instant: datetime) -> BillingPeriod:
    tz = zone(spec.timezone)
    local_day = instant.astimezone(tz).date()
    bcd = spec.bill_cycle_day
    this_month_start = cycle_start_date(local_day.year, local_day.month, bcd)
    if local_day >= this_month_start:
        next_year, next_month = _shift_month(local_day.year, local_day.month, 1)
        start_day = this_month_start
        end_day = cycle_start_date(next_year, next_month, bcd)
    else:
        prev_year, prev_month = _shift_month(local_day.year, local_day.month, -1)
        start_day = cycle_start_date(prev_year, prev_month, bcd)
        end_day = this_month_start
    return BillingPeriod(
        start=local_midnight(start_day, tz),
        end=local_midnight(end_day, tz),
        local_start=start_day,
        local_end=end_day,
    )


def _fixed_period_containing(spec: CycleSpec, instant: datetime) -> BillingPeriod:
    # The validator guarantees both are set for fixed cycles.
    assert spec.period_seconds is not None and spec.anchor is not None
    tz = zone(spec.timezone)
    length = timedelta(seconds=spec.period_seconds)
    # timedelta // timedelta floors, so instants before the anchor land in
    # earlier periods rather than in the first one.
    index = (instant - spec.anchor) // length
    start = spec.anchor + index * length
    end = start + length
    return BillingPeriod(
        start=start,
        end=end,
        local_start=start.astimezone(tz).date(),
        local_end=(end - _RESOLUTION).astimezone(tz).date() + timedelta(days=1),
    )
