"""Dunning: the escalation steps taken while an invoice stays unpaid after its due date.

A dunning *episode* starts when an invoice becomes overdue and ends when the
debt is settled. A policy lists the steps with their offsets from the due
date; the state records which steps of the current episode have run. All
functions are pure and return new states, so a workflow can replay them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.billing_cycle import UtcDatetime, require_utc
from domain.money import Money, parse_money

DunningAction = Literal["reminder", "retry_payment", "suspend", "terminate"]

_NO_LEVEL = "none"


class DunningStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    after: timedelta  # offset from the invoice due date
    action: DunningAction
    # The step only fires when at least this much is overdue (e.g. German
    # TKG §61 allows barring only from EUR 100 in arrears).
    min_overdue: Money = Field(default=Decimal("0"), ge=0)

    @field_validator("after")
    @classmethod
    def _not_before_due_date(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("a dunning step cannot run before the due date (negative offset)")
        return value


class DunningPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    steps: list[DunningStep]

    @model_validator(mode="after")
    def _well_ordered(self) -> DunningPolicy:
        names = [step.name for step in self.steps]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"dunning step names must be unique, repeated: {duplicates}")
        for earlier, later in zip(self.steps, self.steps[1:]):
            if later.after < earlier.after:
                raise ValueError(
                    f"dunning steps must be sorted by 'after': {later.name!r} comes before {earlier.name!r}"
                )
        suspend_positions = [i for i, step in enumerate(self.steps) if step.action == "suspend"]
        if len(suspend_positions) > 1:
            raise ValueError("a dunning policy may suspend at most once")
        if suspend_positions:
            before_suspend = self.steps[: suspend_positions[0]]
            if not any(step.action == "reminder" for step in before_suspend):
                raise ValueError("a suspend step needs at least one reminder step before it")
        return self


class DunningState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_id: str | None = None
    due_at: UtcDatetime | None = None
    overdue_amount: Money = Decimal("0")
    steps_done: list[str] = []  # steps already executed in the current episode, in order
    suspended: bool = False
    paused: bool = False

    @property
    def in_episode(self) -> bool:
        return self.due_at is not None


def next_due_step(policy: DunningPolicy, state: DunningState) -> tuple[DunningStep, datetime] | None:
    """The next step to run and the instant it becomes due (which may already have passed).

    Steps whose min_overdue is not met are passed over. None when there is no
    episode, dunning is paused, nothing is overdue, or no step is left.
    """
    if state.due_at is None or state.paused or state.overdue_amount <= 0:
        return None
    for step in policy.steps:
        if step.name in state.steps_done:
            continue
        if state.overdue_amount >= step.min_overdue:
            return step, state.due_at + step.after
    return None


def start_episode(state: DunningState, invoice_id: str, due_at: datetime, overdue_amount: Decimal) -> DunningState:
    """Begin dunning for an overdue invoice, replacing any open episode.

    `suspended` and `paused` carry over: they describe the account (a barred
    line stays barred until a settlement restores it), not the invoice.
    """
    return DunningState(
        invoice_id=invoice_id,
        due_at=require_utc(due_at),
        overdue_amount=parse_money(overdue_amount),
        steps_done=[],
        suspended=state.suspended,
        paused=state.paused,
    )


def mark_step_done(state: DunningState, step: DunningStep) -> DunningState:
    """Record that `step` was executed; idempotent, so a retried activity cannot double-count.

    If the episode was settled while the step was running, the step is not
    added to the (closed) episode, but a suspension is still recorded because
    it really happened; `restore_needed` then reports that it must be undone.
    """
    suspended = state.suspended or step.action == "suspend"
    steps_done = list(state.steps_done)
    if state.in_episode and step.name not in steps_done:
        steps_done.append(step.name)
    return state.model_copy(update={"steps_done": steps_done, "suspended": suspended})


def settle(state: DunningState) -> tuple[DunningState, bool]:
    """The debt is paid: close the episode and report whether a suspension must be lifted.

    A pause is cleared as well; it was a hold on collecting this debt, and a
    pause left behind would silently stop dunning for the next one.
    """
    return DunningState(), state.suspended


def restore_needed(state: DunningState) -> bool:
    """True when the line is suspended although no debt is being dunned."""
    return state.suspended and (not state.in_episode or state.overdue_amount <= 0)


def update_overdue(state: DunningState, overdue_amount: Decimal) -> DunningState:
    """Record a new outstanding amount after a partial payment (a full payment should `settle`)."""
    return state.model_copy(update={"overdue_amount": parse_money(overdue_amount)})


def pause(state: DunningState) -> DunningState:
    """Hold dunning (e.g. while a dispute or payment promise is open)."""
    return state.model_copy(update={"paused": True})


def resume(state: DunningState) -> DunningState:
    return state.model_copy(update={"paused": False})


def dunning_level(state: DunningState) -> str:
    """'none' or the name of the last step executed in the current episode."""
    return state.steps_done[-1] if state.steps_done else _NO_LEVEL
