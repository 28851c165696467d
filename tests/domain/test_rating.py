from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.rating import AllowanceUsage, Allowances, Rates, billable_units, rate_usage

RATES = Rates(voice_per_minute=Decimal("0.09"), sms_per_message=Decimal("0.19"), data_per_mb=Decimal("0.0049"))


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [("0", 0), ("1", 1), ("59.5", 1), ("60", 1), ("60.000001", 2), ("61", 2), ("120", 2), ("3599", 60)],
)
def test_voice_is_billed_per_started_minute(seconds, minutes):
    assert billable_units("voice", Decimal(seconds)) == minutes


@pytest.mark.parametrize(
    ("octets", "megabytes"),
    [(0, 0), (1, 1), (1_000_000, 1), (1_000_001, 2), (2_500_000, 3), (1_048_576, 2)],  # 1 MiB > 1 MB
)
def test_data_is_billed_per_started_decimal_megabyte(octets, megabytes):
    assert billable_units("data", Decimal(octets)) == megabytes


def test_sms_counts_messages():
    assert billable_units("sms", Decimal(3)) == 3
    with pytest.raises(ValueError, match="whole"):
        billable_units("sms", Decimal("1.5"))


def test_negative_usage_is_rejected():
    with pytest.raises(ValueError, match="negative"):
        billable_units("voice", Decimal(-1))


def test_usage_inside_the_allowance_is_free():
    rated, used = rate_usage("sms", Decimal(2), RATES, Allowances(sms=100), AllowanceUsage(sms=10))
    assert (rated.units, rated.allowance_units, rated.chargeable_units) == (2, 2, 0)
    assert rated.amount == 0
    assert used.sms == 12


def test_record_straddling_the_allowance_is_split():
    allowances = Allowances(voice_minutes=100)
    used = AllowanceUsage(voice_minutes=98, sms=4)
    rated, after = rate_usage("voice", Decimal(300), RATES, allowances, used)  # 5 minutes
    assert (rated.units, rated.allowance_units, rated.chargeable_units) == (5, 2, 3)
    assert rated.amount == Decimal("0.27")
    assert after.voice_minutes == 100
    assert after.sms == 4  # other kinds untouched
    assert used.voice_minutes == 98  # the input is not mutated

    rated, after = rate_usage("voice", Decimal(61), RATES, allowances, after)
    assert (rated.allowance_units, rated.chargeable_units) == (0, 2)
    assert rated.amount == Decimal("0.18")
    assert after.voice_minutes == 100  # only allowance consumption is tracked


def test_amount_is_exact_not_rounded_to_cents():
    rated, _ = rate_usage("data", Decimal(2_500_000), RATES, Allowances(), AllowanceUsage())
    assert rated.kind == "data"
    assert rated.chargeable_units == 3
    assert rated.amount == Decimal("0.0147")


def test_allowance_reduced_below_consumption_charges_everything():
    rated, after = rate_usage("data", Decimal(1), RATES, Allowances(data_mb=10), AllowanceUsage(data_mb=12))
    assert (rated.allowance_units, rated.chargeable_units) == (0, 1)
    assert after.data_mb == 12


def test_rates_refuse_floats_and_negative_prices():
    with pytest.raises(ValidationError):
        Rates(voice_per_minute=0.09, sms_per_message=Decimal("0.19"), data_per_mb=Decimal("0.0049"))
    with pytest.raises(ValidationError):
        Rates(voice_per_minute=Decimal("-0.01"), sms_per_message=Decimal("0.19"), data_per_mb=Decimal("0.0049"))
