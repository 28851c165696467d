"""Spending limits: which notice thresholds a cycle's usage cost has just crossed.

An account may set a limit on the usage cost of a cycle. The customer is told once when the cost
crosses each threshold (by default 80 % and 100 %); with a hard cap, reaching 100 % bars the service
until the next cycle. The EU roaming data cap is one such limit."""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.money import Money
from domain.tariff import Tariff


class SpendingLimit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Money = Field(gt=0)
    hard_cap: bool = False
    thresholds_percent: tuple[int, ...] = (80, 100)

    @field_validator("thresholds_percent")
    @classmethod
    def _sorted_percentages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 < p <= 100 for p in value) or list(value) != sorted(set(value)):
            raise ValueError("thresholds are distinct percentages in (0, 100], ascending")
        return value


def crossed_thresholds(limit: SpendingLimit, cost_before: Decimal, cost_after: Decimal) -> list[int]:
    """The thresholds reached by going from cost_before to cost_after (a threshold is reached at exactly its amount)."""
    crossed = []
    for percent in limit.thresholds_percent:
        mark = limit.amount * percent / 100
        if cost_before < mark <= cost_after:
            crossed.append(percent)
    return crossed


def cap_reached(limit: SpendingLimit, cost: Decimal) -> bool:
    return limit.hard_cap and cost >= limit.amount


def reached_thresholds(limit: SpendingLimit, cost: Decimal) -> list[int]:
    """Every threshold the cost has reached (a threshold is reached at exactly its amount)."""
    return [percent for percent in limit.thresholds_percent if cost >= limit.amount * percent / 100]


# The EU roaming data cut-off limit (Regulation (EU) 2022/612 Art. 15(3)): unless the customer chose
# otherwise, mobile data used while roaming outside the roam-like-at-home area stops at EUR 50 (net of
# VAT) per billing period; the customer is told at 80 % and at 100 %, and may opt out of the limit.
EU_ROAMING_DATA_CAP = SpendingLimit(amount=Decimal("50.00"), hard_cap=False)

# The kinds of limit, each with its own notices (the workflow de-duplicates them separately).
SPENDING = "spending"
ROAMING_DATA = "roamingData"


def capped_roaming_zones(zones: Iterable[tuple[str, bool]]) -> frozenset[str]:
    """The zone ids whose data counts towards the roaming data cap, from (zone id, roam like at home)
    pairs: every roaming zone outside roam-like-at-home (the home zone is not a roaming zone)."""
    return frozenset(zone_id for zone_id, roam_like_at_home in zones if not roam_like_at_home)


def counts_for_roaming_cap(kind: str, zone: str | None, capped: frozenset[str]) -> bool:
    """Whether a rated record's cost counts towards the roaming data cap: data rated in a capped zone."""
    return kind == "data" and zone is not None and zone in capped


def roaming_cap_zones(tariff: Tariff) -> frozenset[str]:
    """The zones of a tariff whose data counts towards the roaming data cap."""
    return capped_roaming_zones((zone.id, zone.roam_like_at_home) for zone in tariff.roaming.zones)
