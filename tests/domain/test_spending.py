from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.spending import SpendingLimit, cap_reached, crossed_thresholds

LIMIT = SpendingLimit(amount=Decimal("50.00"), hard_cap=True)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("0", "39.99", []),
        ("0", "40.00", [80]),  # 80 % of 50.00 is reached at exactly 40.00
        ("39.99", "49.99", [80]),
        ("40.00", "49.99", []),  # already past 80 %: not told again
        ("39.00", "75.00", [80, 100]),  # one big record crosses both
        ("50.00", "80.00", []),
    ],
)
def test_thresholds_crossed_between_two_costs(before, after, expected):
    assert crossed_thresholds(LIMIT, Decimal(before), Decimal(after)) == expected


def test_hard_cap_is_reached_at_the_limit_only_when_capped():
    assert not cap_reached(LIMIT, Decimal("49.99"))
    assert cap_reached(LIMIT, Decimal("50.00"))
    assert not cap_reached(SpendingLimit(amount=Decimal("50.00")), Decimal("70.00"))


@pytest.mark.parametrize("thresholds", [(), (100, 80), (0, 100), (80, 80), (50, 120)])
def test_bad_thresholds_are_refused(thresholds):
    with pytest.raises(ValidationError):
        SpendingLimit(amount=Decimal("10"), thresholds_percent=thresholds)


def test_money_is_never_a_float():
    with pytest.raises(ValidationError):
        SpendingLimit(amount=50.0)
