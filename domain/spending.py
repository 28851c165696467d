"""Spending limits: which notice thresholds a cycle's usage cost has just crossed.

An account may set a limit on the usage cost of a cycle. The customer is told once when the cost
crosses each threshold (by default 80 % and 100 %); with a hard cap, reaching 100 % bars the service
until the next cycle. The EU roaming data cap is one such limit."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.money import Money


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
