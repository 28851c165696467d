"""Thin usage rating: plan rates applied to usage net of the plan's allowances.

Each usage record is rounded up to whole billable units on its own (a 61 s
call is 2 minutes, a 1-byte session is 1 MB), the way retail mobile tariffs
bill per call and per session. Data uses decimal megabytes: 1 MB = 1,000,000
bytes, the SI unit that tariff sheets and EU roaming rules quote.

Tariffs with destination prefixes and time bands come later; this module only
knows one rate per usage kind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.money import Money, parse_money

UsageKind = Literal["voice", "sms", "data"]

SECONDS_PER_MINUTE = 60
BYTES_PER_MB = 1_000_000


class Rates(BaseModel):
    """Price per billable unit, net of VAT, exact (sub-cent rates allowed)."""

    model_config = ConfigDict(extra="forbid")

    voice_per_minute: Money = Field(ge=0)
    sms_per_message: Money = Field(ge=0)
    data_per_mb: Money = Field(ge=0)

    def for_kind(self, kind: UsageKind) -> Decimal:
        return {"voice": self.voice_per_minute, "sms": self.sms_per_message, "data": self.data_per_mb}[kind]


class _UnitsPerKind(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voice_minutes: int = Field(default=0, ge=0)
    sms: int = Field(default=0, ge=0)
    data_mb: int = Field(default=0, ge=0)

    def for_kind(self, kind: UsageKind) -> int:
        return getattr(self, _FIELD_BY_KIND[kind])


class Allowances(_UnitsPerKind):
    """Units included in the plan per billing cycle."""


class AllowanceUsage(_UnitsPerKind):
    """Allowance units consumed so far in the cycle (charged units are not counted here)."""


_FIELD_BY_KIND: dict[str, str] = {"voice": "voice_minutes", "sms": "sms", "data": "data_mb"}


def billable_units(kind: UsageKind, quantity: Decimal) -> int:
    """Billable units for one usage record.

    voice: `quantity` is seconds, billed per started minute (0 s is 0 minutes).
    sms: `quantity` is the number of messages and must be whole.
    data: `quantity` is bytes, billed per started MB of 1,000,000 bytes.
    """
    quantity = parse_money(quantity)
    if quantity < 0:
        raise ValueError(f"usage quantity must not be negative, got {quantity}")
    if kind == "voice":
        return _ceil_div(quantity, SECONDS_PER_MINUTE)
    if kind == "sms":
        if quantity != quantity.to_integral_value():
            raise ValueError(f"sms quantity must be a whole number of messages, got {quantity}")
        return int(quantity)
    if kind == "data":
        return _ceil_div(quantity, BYTES_PER_MB)
    raise ValueError(f"unknown usage kind {kind!r}")


class RatedUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: UsageKind
    units: int
    allowance_units: int
    chargeable_units: int
    amount: Money  # exact; rounded to cents only on the invoice line


def rate_usage(
    kind: UsageKind,
    quantity: Decimal,
    rates: Rates,
    allowances: Allowances,
    used: AllowanceUsage,
) -> tuple[RatedUsage, AllowanceUsage]:
    """Rate one usage record, drawing on the remaining allowance first.

    A record that crosses the end of the allowance is split: the part that
    fits is free, the rest is charged. Returns the rated record and the
    allowance consumption after it.
    """
    units = billable_units(kind, quantity)
    remaining = max(0, allowances.for_kind(kind) - used.for_kind(kind))
    from_allowance = min(units, remaining)
    chargeable = units - from_allowance
    rated = RatedUsage(
        kind=kind,
        units=units,
        allowance_units=from_allowance,
        chargeable_units=chargeable,
        amount=rates.for_kind(kind) * chargeable,
    )
    field = _FIELD_BY_KIND[kind]
    new_used = used.model_copy(update={field: used.for_kind(kind) + from_allowance})
    return rated, new_used


def _ceil_div(quantity: Decimal, divisor: int) -> int:
    # divmod on Decimal is exact (no precision loss from a division), and for
    # non-negative quantities its quotient is the floor.
    whole, remainder = divmod(quantity, divisor)
    return int(whole) + (1 if remainder > 0 else 0)
