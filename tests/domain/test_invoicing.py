from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.invoicing import ChargeLine, ComputedInvoice, compute_invoice, format_invoice_number


def charge(net: str, rate: str = "19", category: str = "S", kind: str = "usage", **extra) -> ChargeLine:
    return ChargeLine(
        kind=kind,
        description=f"{kind} {net}",
        net_amount=Decimal(net),
        vat_rate=Decimal(rate),
        vat_category=category,
        **extra,
    )


def test_lines_are_rounded_before_they_are_summed():
    invoice = compute_invoice([charge("0.333"), charge("0.333"), charge("0.333")])
    assert [line.net_amount for line in invoice.lines] == [Decimal("0.33")] * 3
    # Summing first would give 0.999 -> 1.00; EN 16931 sums the rounded lines.
    assert invoice.totals.net_total == Decimal("0.99")
    assert invoice.totals.vat_total == Decimal("0.19")  # 0.99 * 19% = 0.1881
    assert invoice.totals.gross_total == Decimal("1.18")


def test_vat_is_rounded_once_per_rate_group_not_per_line():
    invoice = compute_invoice([charge("1.05", rate="7"), charge("1.05", rate="7")])
    # Per line 0.0735 -> 0.07 twice would be 0.14; the group 2.10 * 7% = 0.147 -> 0.15.
    assert invoice.totals.vat_total == Decimal("0.15")
    assert invoice.totals.gross_total == Decimal("2.25")


def test_breakdown_per_category_and_rate_in_order_of_first_appearance():
    invoice = compute_invoice(
        [
            charge("10.00", kind="recurring"),
            charge("5.005", rate="7"),
            charge("2.50", rate="0", category="Z"),
            charge("1.00"),
        ]
    )
    groups = [(g.vat_category, g.vat_rate, g.taxable_amount, g.tax_amount) for g in invoice.totals.vat_breakdown]
    assert groups == [
        ("S", Decimal("19"), Decimal("11.00"), Decimal("2.09")),
        ("S", Decimal("7"), Decimal("5.01"), Decimal("0.35")),
        ("Z", Decimal("0"), Decimal("2.50"), Decimal("0.00")),
    ]
    assert invoice.totals.net_total == Decimal("18.51")
    assert invoice.totals.vat_total == Decimal("2.44")
    assert invoice.totals.gross_total == Decimal("20.95")


def test_equal_rates_written_differently_share_a_group():
    invoice = compute_invoice([charge("1.00", rate="19"), charge("1.00", rate="19.00")])
    assert len(invoice.totals.vat_breakdown) == 1
    assert invoice.totals.vat_breakdown[0].taxable_amount == Decimal("2.00")


def test_negative_lines_round_half_away_from_zero():
    invoice = compute_invoice([charge("20.00", kind="recurring"), charge("-5.005", kind="discount")])
    assert invoice.lines[1].net_amount == Decimal("-5.01")
    assert invoice.totals.net_total == Decimal("14.99")
    assert invoice.totals.vat_total == Decimal("2.85")  # 14.99 * 19% = 2.8481


def test_lines_are_numbered_and_keep_their_details():
    recurring = charge(
        "9.99",
        kind="recurring",
        period_start=date(2026, 3, 1),
        period_end=date(2026, 4, 1),
        product_id="plan-s",
        unit_price=Decimal("9.99"),
    )
    invoice = compute_invoice([recurring, charge("0.27")])
    assert [line.line_no for line in invoice.lines] == [1, 2]
    first = invoice.lines[0]
    assert (first.kind, first.product_id, first.period_start, first.period_end) == (
        "recurring",
        "plan-s",
        date(2026, 3, 1),
        date(2026, 4, 1),
    )
    assert first.unit_price == Decimal("9.99")
    assert recurring.net_amount == Decimal("9.99")  # the input is not touched


def test_empty_invoice_has_zero_totals():
    invoice = compute_invoice([])
    assert invoice.lines == []
    assert invoice.totals.vat_breakdown == []
    assert (invoice.totals.net_total, invoice.totals.vat_total, invoice.totals.gross_total) == (0, 0, 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"vat_category": "Z", "vat_rate": Decimal("19")},
        {"vat_category": "AE", "vat_rate": Decimal("19")},
        {"vat_category": "S", "vat_rate": Decimal("0")},
        {"vat_category": "X"},
        {"vat_rate": Decimal("-1")},
        {"net_amount": 9.99},
        {"period_start": date(2026, 3, 1), "period_end": date(2026, 3, 1)},
        {"kind": "refund"},
    ],
)
def test_invalid_charge_lines_are_rejected(fields):
    base = {"kind": "usage", "description": "x", "net_amount": Decimal("1.00")}
    with pytest.raises(ValidationError):
        ChargeLine(**{**base, **fields})


def test_reverse_charge_line_is_accepted_at_zero_rate():
    line = ChargeLine(kind="usage", description="x", net_amount=Decimal("1"), vat_rate=Decimal(0), vat_category="AE")
    assert compute_invoice([line]).totals.vat_total == 0


def test_invoice_number_format():
    assert format_invoice_number("INV", 2026, 42) == "INV-2026-000042"
    assert format_invoice_number("CN", 2027, 1_234_567) == "CN-2027-1234567"


@pytest.mark.parametrize(
    ("series", "year", "sequence"), [("INV", 2026, 0), ("", 2026, 1), ("IN V", 2026, 1), ("INV", 0, 1)]
)
def test_invoice_number_rejects_nonsense(series, year, sequence):
    with pytest.raises(ValueError):
        format_invoice_number(series, year, sequence)


def test_computed_invoice_survives_a_json_round_trip():
    invoice = compute_invoice([charge("0.333", period_start=date(2026, 3, 1), period_end=date(2026, 4, 1))])
    restored = ComputedInvoice.model_validate_json(invoice.model_dump_json())
    assert restored == invoice
    assert str(restored.totals.gross_total) == "0.39"
