"""The EU roaming data cap as a spending limit (domain.spending): which usage counts towards it."""
from decimal import Decimal

from config.tariff_loader import load_tariff_book
from domain.spending import EU_ROAMING_DATA_CAP, capped_roaming_zones, counts_for_roaming_cap, reached_thresholds, roaming_cap_zones


def test_the_cap_is_50_euros_with_notices_at_80_and_100_percent_and_no_hard_cap():
    assert EU_ROAMING_DATA_CAP.amount == Decimal("50.00") and not EU_ROAMING_DATA_CAP.hard_cap
    assert reached_thresholds(EU_ROAMING_DATA_CAP, Decimal("39.99")) == []
    assert reached_thresholds(EU_ROAMING_DATA_CAP, Decimal("40.00")) == [80]
    assert reached_thresholds(EU_ROAMING_DATA_CAP, Decimal("50.00")) == [80, 100]


def test_only_zones_outside_roam_like_at_home_are_capped():
    assert capped_roaming_zones([("eu", True), ("world1", False), ("world2", False)]) == {"world1", "world2"}
    assert capped_roaming_zones([("eu", True)]) == frozenset()
    tariff = load_tariff_book().latest("de-mobile-2026")
    assert roaming_cap_zones(tariff) == {"world1", "world2"}  # EU/EEA roams like at home; the home zone is not roaming


def test_only_data_rated_in_a_capped_zone_counts():
    capped = frozenset({"world1"})
    assert counts_for_roaming_cap("data", "world1", capped)
    assert not counts_for_roaming_cap("voice", "world1", capped)  # calls and SMS abroad are outside the data cap
    assert not counts_for_roaming_cap("sms", "world1", capped)
    assert not counts_for_roaming_cap("data", "eu", capped)
    assert not counts_for_roaming_cap("data", "home", capped)
    assert not counts_for_roaming_cap("data", None, capped)
