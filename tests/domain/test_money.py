from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from domain.money import (
    CENT,
    MICRO,
    Money,
    from_micros,
    from_minor,
    parse_money,
    to_cents,
    to_micros,
    to_minor,
)


def test_constants():
    assert CENT == Decimal("0.01")
    assert MICRO == Decimal("0.000001")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("1.005", "1.01"),  # half rounds up, unlike banker's rounding (1.00)
        ("1.015", "1.02"),
        ("1.0049999", "1.00"),
        ("-1.005", "-1.01"),  # half away from zero for credits
        ("7", "7.00"),
    ],
)
def test_to_cents_rounds_half_up(amount, expected):
    result = to_cents(Decimal(amount))
    assert result == Decimal(expected)
    assert str(result) == expected


def test_to_minor_and_back():
    assert to_minor(Decimal("12.34")) == 1234
    assert to_minor(Decimal("12.345")) == 1235
    assert to_minor(Decimal("-0.005")) == -1
    assert from_minor(1234) == Decimal("12.34")
    assert str(from_minor(0)) == "0.00"
    assert str(from_minor(-5)) == "-0.05"


def test_minor_round_trip_is_lossless_for_cents():
    for cents in (-100_001, -1, 0, 1, 99, 100, 123_456_789):
        assert to_minor(from_minor(cents)) == cents


def test_micros_round_trip_and_rounding():
    assert to_micros(Decimal("0.0049")) == 4900
    assert to_micros(Decimal("0.0000015")) == 2
    assert to_micros(Decimal("-0.0000015")) == -2
    assert from_micros(4900) == Decimal("0.0049")
    assert str(from_micros(1_500_000)) == "1.500000"
    for micros in (-7, 0, 1, 4900, 10**12):
        assert to_micros(from_micros(micros)) == micros


def test_parse_money_keeps_the_written_precision():
    assert str(parse_money("12.30")) == "12.30"
    assert parse_money(" 5 ") == Decimal(5)
    assert parse_money(7) == Decimal(7)
    assert parse_money(Decimal("0.0049")) == Decimal("0.0049")


def test_parse_money_rejects_floats_explicitly():
    with pytest.raises(TypeError, match="float"):
        parse_money(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["abc", "1,50", "", "NaN", "Infinity"])
def test_parse_money_rejects_non_amounts(text):
    with pytest.raises(ValueError):
        parse_money(text)


def test_conversions_refuse_floats_and_bools():
    with pytest.raises(TypeError):
        to_cents(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_minor(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_minor(12.0)  # type: ignore[arg-type]


def test_money_field_rejects_float_but_accepts_text_and_int():
    class Price(BaseModel):
        amount: Money

    assert Price(amount="9.99").amount == Decimal("9.99")
    assert Price(amount=5).amount == Decimal(5)
    with pytest.raises(ValidationError, match="float"):
        Price(amount=9.99)
