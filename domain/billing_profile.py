"""Billing profiles: the cycle layout, payment terms and dunning policy an account is billed under."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.billing_cycle import CycleSpec, require_utc
from domain.dunning import DunningPolicy


class BillingProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    cycle_kind: Literal["monthly", "fixed"] = "monthly"
    period_seconds: int | None = Field(default=None, gt=0)  # fixed cycles only
    payment_terms: timedelta  # due date = issue instant + terms
    dunning: DunningPolicy  # the legacy in-workflow ladder; only histories begun before the DunningWorkflow hand-over use it
    # The dunning policy (config/dunning/<segment>.yaml) a DunningWorkflow episode of this profile's accounts follows.
    dunning_segment: str = Field(default="consumer-de", min_length=1)
    demo: bool = False  # demo profiles compress time and must never bill real customers
    # Late usage: the cycle invoice bills records that arrived by period end + usage_grace; later ones wait
    # for the next invoice (billed there once). None: no cut-off, every record that arrived before the invoice.
    usage_grace: timedelta | None = None

    @field_validator("payment_terms")
    @classmethod
    def _terms_not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("payment_terms must not be negative")
        return value

    @field_validator("usage_grace")
    @classmethod
    def _grace_not_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(0):
            raise ValueError("usage_grace must not be negative")
        return value

    @model_validator(mode="after")
    def _period_matches_kind(self) -> BillingProfile:
        if self.cycle_kind == "fixed" and self.period_seconds is None:
            raise ValueError("period_seconds is required for a fixed cycle")
        if self.cycle_kind == "monthly" and self.period_seconds is not None:
            raise ValueError("period_seconds only applies to fixed cycles")
        return self

    def cycle_spec(self, bill_cycle_day: int, timezone: str, anchor: datetime | None) -> CycleSpec:
        """The account's cycle under this profile.

        Monthly cycles use the account's bill cycle day and ignore `anchor`;
        fixed cycles start at `anchor` (typically the activation instant) and
        ignore the bill cycle day.
        """
        if self.cycle_kind == "monthly":
            return CycleSpec(kind="monthly", bill_cycle_day=bill_cycle_day, timezone=timezone)
        if anchor is None:
            raise ValueError(f"billing profile {self.name!r} has a fixed cycle and needs an anchor instant")
        return CycleSpec(
            kind="fixed",
            timezone=timezone,
            period_seconds=self.period_seconds,
            anchor=require_utc(anchor),
        )

    def due_at(self, issued_at: datetime) -> datetime:
        """When an invoice issued at `issued_at` falls due."""
        return require_utc(issued_at) + self.payment_terms
