"""Invoice arithmetic following EN 16931 (the EU e-invoicing standard).

The order of rounding is what the standard prescribes and what a receiving
system will recompute: every line net amount is rounded to cents first; the
rounded lines are summed per VAT category and rate; the VAT of each such group
is the rounded group sum times the rate, rounded once; document totals are
sums of these already rounded parts. Rounding is half away from zero.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.money import ExactDecimal, Money, to_cents

ChargeKind = Literal["recurring", "usage", "one_time", "late_fee", "discount", "credit"]

# UNCL5305 duty/tax category codes used by EN 16931.
_ZERO_RATED_CATEGORIES = frozenset({"Z", "E", "AE", "K", "G", "O"})  # BR-*-5: rate must be 0
_POSITIVE_RATE_CATEGORIES = frozenset({"S"})  # BR-S-5: standard rate is above 0
_VARIABLE_RATE_CATEGORIES = frozenset({"L", "M"})  # Canary Islands IGIC / Ceuta-Melilla IPSI
VAT_CATEGORIES = _ZERO_RATED_CATEGORIES | _POSITIVE_RATE_CATEGORIES | _VARIABLE_RATE_CATEGORIES

_ZERO_CENTS = Decimal("0.00")
_HUNDRED = Decimal(100)


class ChargeLine(BaseModel):
    """A charge to put on an invoice; amounts are net of VAT and may carry any precision."""

    model_config = ConfigDict(extra="forbid")

    kind: ChargeKind
    description: str = Field(min_length=1)
    quantity: ExactDecimal = Decimal(1)
    unit: str = "EA"  # UN/ECE Recommendation 20 unit code (EA each, MIN minute, ...)
    unit_price: Money | None = None
    net_amount: Money
    vat_rate: ExactDecimal = Field(default=Decimal("19"), ge=0)  # percent
    vat_category: str = "S"
    period_start: date | None = None  # account-local, inclusive
    period_end: date | None = None  # account-local, exclusive
    product_id: str | None = None

    @field_validator("vat_category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in VAT_CATEGORIES:
            raise ValueError(f"unknown VAT category {value!r}; expected one of {sorted(VAT_CATEGORIES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChargeLine:
        if self.vat_category in _ZERO_RATED_CATEGORIES and self.vat_rate != 0:
            raise ValueError(f"VAT category {self.vat_category} requires a 0% rate, got {self.vat_rate}%")
        if self.vat_category in _POSITIVE_RATE_CATEGORIES and self.vat_rate <= 0:
            raise ValueError("VAT category S (standard rate) requires a rate above 0%")
        if (
            self.period_start is not None
            and self.period_end is not None
            and self.period_end <= self.period_start
        ):
            raise ValueError("period_end is exclusive and must be after period_start")
        return self


class InvoiceLine(ChargeLine):
    """A charge as it appears on the invoice: numbered, net amount rounded to cents."""

    line_no: int = Field(ge=1)


class VatBreakdown(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vat_category: str
    vat_rate: ExactDecimal
    taxable_amount: Money
    tax_amount: Money


class InvoiceTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    net_total: Money
    vat_total: Money
    gross_total: Money
    vat_breakdown: list[VatBreakdown]


class ComputedInvoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[InvoiceLine]
    totals: InvoiceTotals


def compute_invoice(charges: list[ChargeLine]) -> ComputedInvoice:
    """Number the charges, round each line to cents and derive the VAT breakdown and totals."""
    lines = [
        InvoiceLine(**charge.model_dump(exclude={"net_amount"}), net_amount=to_cents(charge.net_amount), line_no=number)
        for number, charge in enumerate(charges, start=1)
    ]
    breakdown = _vat_breakdown(lines)
    net_total = sum((group.taxable_amount for group in breakdown), _ZERO_CENTS)
    vat_total = sum((group.tax_amount for group in breakdown), _ZERO_CENTS)
    return ComputedInvoice(
        lines=lines,
        totals=InvoiceTotals(
            net_total=net_total,
            vat_total=vat_total,
            gross_total=net_total + vat_total,
            vat_breakdown=breakdown,
        ),
    )


def _vat_breakdown(lines: list[InvoiceLine]) -> list[VatBreakdown]:
    # Groups keep the order in which they first appear, so output is stable
    # for a given list of charges. Decimal("19") and Decimal("19.0") are the
    # same key, as they must be.
    taxable: dict[tuple[str, Decimal], Decimal] = {}
    for line in lines:
        key = (line.vat_category, line.vat_rate)
        taxable[key] = taxable.get(key, _ZERO_CENTS) + line.net_amount
    return [
        VatBreakdown(
            vat_category=category,
            vat_rate=rate,
            taxable_amount=amount,
            tax_amount=to_cents(amount * rate / _HUNDRED),
        )
        for (category, rate), amount in taxable.items()
    ]


def format_invoice_number(series: str, year: int, sequence: int) -> str:
    """Human-facing invoice number, e.g. ("INV", 2026, 42) -> "INV-2026-000042".

    The sequence is zero-padded to six digits so numbers sort as text within a
    year; larger sequences simply get longer rather than wrapping.
    """
    if not series or any(char.isspace() for char in series):
        raise ValueError(f"invoice series must be non-empty without whitespace, got {series!r}")
    if not 1 <= year <= 9999:
        raise ValueError(f"invoice year out of range: {year}")
    if sequence < 1:
        raise ValueError(f"invoice sequence starts at 1, got {sequence}")
    return f"{series}-{year:04d}-{sequence:06d}"
