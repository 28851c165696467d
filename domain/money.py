"""Exact money arithmetic: rounding to cents and conversion to stored integer units.

Amounts are `Decimal` throughout the domain. Persistence stores whole cents
(`to_minor`) for invoice amounts and micro-units (`to_micros`) for unit prices
and rates that need sub-cent precision. Floats are refused everywhere: a float
has already lost the exact value before we ever see it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")

_CENT_EXPONENT = 2
_MICRO_EXPONENT = 6


def _require_exact(amount: Decimal | int) -> Decimal:
    """Accept Decimal or int (both exact); refuse floats, bools and non-finite values."""
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise TypeError(f"expected a Decimal amount, got {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"amount must be finite, got {value}")
    return value


def _require_int(units: int) -> int:
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"expected integer units, got {type(units).__name__}")
    return units


def to_cents(amount: Decimal) -> Decimal:
    """Round to whole cents, half away from zero (commercial rounding, as EN 16931 expects)."""
    return _require_exact(amount).quantize(CENT, rounding=ROUND_HALF_UP)


def to_minor(amount: Decimal) -> int:
    """Whole cents as an int for storage; sub-cent amounts are rounded half-up first."""
    return int(to_cents(amount).scaleb(_CENT_EXPONENT))


def from_minor(minor: int) -> Decimal:
    """Stored cents back to a Decimal with exactly two decimal places."""
    return Decimal(_require_int(minor)).scaleb(-_CENT_EXPONENT)


def to_micros(amount: Decimal) -> int:
    """Micro-units (1e-6) as an int for storing rates and unit prices; rounded half-up."""
    micro_amount = _require_exact(amount).quantize(MICRO, rounding=ROUND_HALF_UP)
    return int(micro_amount.scaleb(_MICRO_EXPONENT))


def from_micros(micros: int) -> Decimal:
    """Stored micro-units back to a Decimal with six decimal places."""
    return Decimal(_require_int(micros)).scaleb(-_MICRO_EXPONENT)


def parse_money(value: str | int | Decimal) -> Decimal:
    """Parse an amount from text, an int or a Decimal without rounding it.

    Floats raise TypeError on purpose: `0.1` is not one tenth, and accepting it
    would let binary rounding errors into invoices.
    """
    if isinstance(value, float):
        raise TypeError("money must not be given as a float; pass a string or Decimal")
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"not a valid amount: {value!r}") from exc
        if not parsed.is_finite():
            raise ValueError(f"amount must be finite, got {value!r}")
        return parsed
    return _require_exact(value)


def _refuse_float(value: Any) -> Any:
    # Pydantic only turns ValueError into a ValidationError, so this raises
    # ValueError where parse_money raises TypeError.
    if isinstance(value, (float, bool)):
        raise ValueError(
            f"exact decimal expected, got {type(value).__name__} {value!r}; "
            "write amounts as strings (e.g. \"100.00\") or Decimal"
        )
    return value


# Decimal fields that refuse floats. `Money` is for amounts, `ExactDecimal` for
# rates, percentages and quantities; the validation is the same.
Money = Annotated[Decimal, BeforeValidator(_refuse_float)]
ExactDecimal = Annotated[Decimal, BeforeValidator(_refuse_float)]
