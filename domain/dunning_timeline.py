"""One dunning episode: its timeline, its state and the rules the DunningWorkflow applies at each step.

The timeline is one list computed from the policy and the due date, holding both the payment retries
and the escalation levels, so a retry and a notice can never drift apart: the workflow walks it in
order. Time the episode spends paused (a dispute, a promise to pay), or waiting because a barring
needs its written notice first, moves every later step by the same amount (`shift`), so the spacing
the policy plans between steps (e.g. two weeks between the suspension notice and the barring) holds.

Everything here is pure and deterministic: the workflow replays it. Also the vocabulary that crosses
the workflow boundary (input, signals, query result, what balance reads return), so the API and the
activities can use it without importing workflow code.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.billing_cycle import UtcDatetime
from domain.dunning_policy import DunningLevel, DunningPolicy
from domain.money import from_minor

DUNNING_WORKFLOW = "DunningWorkflow"
SIGNAL_BALANCE_SETTLED = "balance_settled"
SIGNAL_PAUSE = "pause"
SIGNAL_RESUME = "resume"
SIGNAL_WAIVE_FEE = "waive_fee"
SIGNAL_RETRY_PAYMENT_NOW = "retry_payment_now"
QUERY_DUNNING_STATUS = "dunning_status"

Barring = Literal["none", "outgoing", "full"]
_BARRING_RANK = {"none": 0, "outgoing": 1, "full": 2}


def dunning_workflow_id(billing_account_id: str, first_overdue_invoice_id: str) -> str:
    return f"dunning-{billing_account_id}-{first_overdue_invoice_id}"


# --- the timeline -------------------------------------------------------------------------------------


class TimelineEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str  # "retry-<n>" or "level:<name>": unique in the episode, part of every idempotency key
    kind: Literal["payment_retry", "level"]
    offset: timedelta  # from the due date, as planned by the policy
    at: UtcDatetime  # due date + offset, before any pause or deferral
    level: str | None = None
    attempt: int | None = None  # the n-th scheduled retry

    @property
    def label(self) -> str:
        return self.level if self.kind == "level" else f"payment retry {self.attempt}"


def dunning_timeline(policy: DunningPolicy, due_at: datetime) -> list[TimelineEntry]:
    """The episode's plan: every scheduled payment retry and every level, in the order they run.
    At the same instant a retry runs before a level: a notice should not go out for money just collected."""
    entries: list[tuple[timedelta, int, int, TimelineEntry]] = []
    for n, offset in enumerate(policy.payment_retries, start=1):
        entries.append((offset, 0, n, TimelineEntry(key=f"retry-{n}", kind="payment_retry", offset=offset, at=due_at + offset, attempt=n)))
    for index, level in enumerate(policy.levels):
        entries.append((level.after, 1, index,
                        TimelineEntry(key=f"level:{level.name}", kind="level", offset=level.after, at=due_at + level.after, level=level.name)))
    return [entry for *_order, entry in sorted(entries, key=lambda item: item[:3])]


# --- what crosses the workflow boundary ------------------------------------------------------------------


class DunningInput(BaseModel):
    billing_account_id: str
    customer_id: str
    invoice_id: str  # the first overdue invoice: names the episode
    due_at: UtcDatetime  # its due date: the timeline's origin
    segment: str = "consumer-de"
    # The policy as it stood when the episode began; None: the worker's loaded policy for `segment`.
    policy: DunningPolicy | None = None
    # Started by the account's BillingAccountWorkflow: tell it (signal `dunning_ended`) when the episode ends,
    # so it can start the next episode and re-apply a spending cap's barring that the episode's lifting removed.
    report_to_account: bool = False

    @property
    def episode_id(self) -> str:
        return dunning_workflow_id(self.billing_account_id, self.invoice_id)


class BalanceSettled(BaseModel):
    """Any payment path: "the account's balance may be paid". The workflow re-reads the balance to be sure."""

    source: str = Field(min_length=1)  # bank_transfer | card | sepa_debit | webhook | billing_account | ...
    payment_id: str | None = None


class StaffCommand(BaseModel):
    command_id: str = Field(min_length=1)  # the audit record's key: a repeated signal is applied once
    actor: str = Field(min_length=1)  # "<role>:<key fingerprint>"
    reason: str = Field(min_length=1)


class PauseCommand(StaffCommand):
    kind: Literal["dispute", "promise_to_pay"]
    until: UtcDatetime | None = None  # auto-resume then; required for a promise to pay

    @model_validator(mode="after")
    def _promise_has_a_date(self) -> PauseCommand:
        if self.kind == "promise_to_pay" and self.until is None:
            raise ValueError("a promise to pay needs the date it was promised for ('until')")
        return self


class ResumeCommand(StaffCommand):
    pass


class WaiveFeeCommand(StaffCommand):
    level: str | None = None  # the level whose fee is waived; None: every unbilled fee of the episode


class RetryPaymentCommand(StaffCommand):
    pass


class DunningBalance(BaseModel):
    """The account as dunning sees it at one instant (`as_of`): arrears are what is past its due date
    and still open, less any received money not yet allocated to an invoice."""

    as_of: UtcDatetime
    overdue_cents: int
    open_cents: int
    overdue_invoice_ids: list[str]
    overdue_invoice_numbers: list[str] = []
    # Of overdue_cents: what is open on overdue late-fee invoices (dunning's own fees).
    fee_cents: int = 0

    @property
    def paid(self) -> bool:
        return self.overdue_cents <= 0

    @property
    def barring_arrears(self) -> Decimal:
        """The arrears a barring may rest on (§61 TKG floor): without dunning's own late fees, so fees alone
        can never lift a debt over the floor."""
        return from_minor(max(self.overdue_cents - self.fee_cents, 0))

    @property
    def overdue(self) -> Decimal:
        return from_minor(max(self.overdue_cents, 0))

    @property
    def unpaid_invoices(self) -> int:
        return len(self.overdue_invoice_ids) if self.overdue_cents > 0 else 0


class DunningStatus(BaseModel):
    """What the support console shows: where the episode stands, what comes next and when."""

    episode_id: str
    billing_account_id: str
    invoice_id: str
    segment: str
    state: Literal["active", "paused", "ended"]
    level: str  # "none" or the last level whose actions ran
    barred: Barring
    next_step: str | None
    next_step_kind: str | None
    next_step_at: datetime | None
    pause_kind: str | None = None
    paused_until: datetime | None = None
    pause_reason: str | None = None
    retries_made: int = 0
    fees: list[str] = []
    outcome: str | None = None
    end_reason: str | None = None


class DunningOutcome(BaseModel):
    episode_id: str
    outcome: Literal["settled", "collections", "written_off"]
    reason: str
    level: str
    ended_at: UtcDatetime


# --- the episode's state ---------------------------------------------------------------------------------


class Pause(BaseModel):
    kind: Literal["dispute", "promise_to_pay"]
    since: UtcDatetime
    until: UtcDatetime | None = None
    reason: str
    actor: str
    command_id: str


class PendingDebit(BaseModel):
    """A debit a dunning retry made that is still in flight (a SEPA debit in `processing`): the webhook
    settles it (the billing-account workflow signals `balance_settled`); failing that, the episode looks it up
    at the gateway every DEBIT_POLL_INTERVAL, for at most DEBIT_POLL_LIMIT."""

    payment_id: str
    invoice_id: str
    amount_cents: int
    since: UtcDatetime
    next_check: UtcDatetime


# The polling fallback for dunning's own SEPA debits (as workflows.billing_account does for its charges).
DEBIT_POLL_INTERVAL = timedelta(days=1)
DEBIT_POLL_LIMIT = timedelta(days=14)


class EpisodeState(BaseModel):
    episode_id: str
    billing_account_id: str
    customer_id: str
    invoice_id: str
    due_at: UtcDatetime
    segment: str
    shift: timedelta = timedelta(0)  # pauses and deferrals so far: every later step moves by it
    done: list[str] = []  # timeline keys that ran (or were skipped)
    level: str | None = None
    pause: Pause | None = None
    barred: Barring = "none"
    barring_notice_at: UtcDatetime | None = None  # when the written barring notice went out
    lifts: int = 0  # how many times the bars were lifted: part of the OSS idempotency key
    retries_made: int = 0
    hard_declined: bool = False
    fees: list[str] = []  # pending charge keys of this episode's late fees
    pending_debits: list[PendingDebit] = []  # retries' debits still in flight, polled daily
    applied_commands: list[str] = []
    outcome: str | None = None
    end_reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None


def start_state(inp: DunningInput) -> EpisodeState:
    return EpisodeState(episode_id=inp.episode_id, billing_account_id=inp.billing_account_id, customer_id=inp.customer_id,
                        invoice_id=inp.invoice_id, due_at=inp.due_at, segment=inp.segment)


def entry_at(entry: TimelineEntry, state: EpisodeState) -> datetime:
    """When the entry runs: as planned, moved by every pause and deferral before it."""
    return entry.at + state.shift


def next_entry(timeline: list[TimelineEntry], state: EpisodeState) -> TimelineEntry | None:
    for entry in timeline:
        if entry.key not in state.done:
            return entry
    return None


def mark_done(state: EpisodeState, entry: TimelineEntry, *, ran_level: bool = False) -> EpisodeState:
    done = state.done if entry.key in state.done else [*state.done, entry.key]
    return state.model_copy(update={"done": done, "level": entry.level if ran_level else state.level})


def pause(state: EpisodeState, command: PauseCommand, now: datetime) -> EpisodeState:
    """Holds the timeline. A second pause while paused replaces the terms but keeps when the hold began."""
    since = state.pause.since if state.pause is not None else now
    return state.model_copy(update={"pause": Pause(kind=command.kind, since=since, until=command.until, reason=command.reason,
                                                   actor=command.actor, command_id=command.command_id)})


def resume(state: EpisodeState, now: datetime) -> EpisodeState:
    """Ends a hold: every remaining step moves by the time spent paused."""
    if state.pause is None:
        return state
    held = max(now - state.pause.since, timedelta(0))
    return state.model_copy(update={"pause": None, "shift": state.shift + held})


def defer(state: EpisodeState, entry: TimelineEntry, until: datetime) -> EpisodeState:
    """Moves `entry` (and with it every later step) to `until`."""
    delay = until - entry_at(entry, state)
    return state if delay <= timedelta(0) else state.model_copy(update={"shift": state.shift + delay})


def level_applies(level: DunningLevel, balance: DunningBalance) -> bool:
    return level.when.hold(balance.overdue, balance.unpaid_invoices)


def stronger_barring(current: Barring, wanted: Barring) -> bool:
    return _BARRING_RANK[wanted] > _BARRING_RANK[current]


class BarringDecision(BaseModel):
    verdict: Literal["bar", "skip", "wait", "notice_first"]
    until: datetime | None = None
    reason: str


def barring_gate(policy: DunningPolicy, state: EpisodeState, balance: DunningBalance, now: datetime) -> BarringDecision:
    """May the service be barred now? With barring protection (§61 TKG for German consumers): only for
    arrears of at least the minimum, and only once a written notice went out at least the notice period
    ago. Checked on the balance and the notice actually sent, not on the plan: a notice that could not go
    out, or went out late, moves the barring instead of being assumed."""
    protection = policy.barring_protection
    if protection is None:
        return BarringDecision(verdict="bar", reason="the policy sets no barring protection")
    if balance.barring_arrears < protection.min_overdue:
        fees = f" ({from_minor(balance.fee_cents)} EUR late fees not counted)" if balance.fee_cents > 0 else ""
        return BarringDecision(verdict="skip", reason=f"arrears of {balance.barring_arrears} EUR{fees} are below the {protection.min_overdue} EUR "
                                                      "from which barring is allowed")
    if state.barring_notice_at is None:
        return BarringDecision(verdict="notice_first", until=now + protection.notice_period,
                               reason="no written barring notice was sent in this episode: it goes out now and the barring waits")
    earliest = state.barring_notice_at + protection.notice_period
    if now < earliest:
        return BarringDecision(verdict="wait", until=earliest, reason=f"the written notice went out on {state.barring_notice_at:%Y-%m-%d %H:%M} UTC; "
                                                                       f"barring is allowed from {earliest:%Y-%m-%d %H:%M} UTC")
    return BarringDecision(verdict="bar", reason="arrears and written notice allow barring")


def lift_for_low_arrears(policy: DunningPolicy, state: EpisodeState, balance: DunningBalance) -> bool:
    """A part payment that brings the arrears below the barring floor lifts the bars (the episode goes on)."""
    protection = policy.barring_protection
    return state.barred != "none" and protection is not None and balance.barring_arrears < protection.min_overdue


def announced_barring(policy: DunningPolicy, timeline: list[TimelineEntry], state: EpisodeState, after: TimelineEntry | None,
                      now: datetime) -> tuple[datetime, str] | None:
    """The barring a notice sent now announces: the next level after `after` that bars, at its planned
    instant (never sooner than the notice period from now) and its scope."""
    started = after is None
    for entry in timeline:
        if not started:
            started = entry.key == after.key
            continue
        if entry.kind != "level" or entry.key in state.done:
            continue
        bar = policy.level(entry.level).bars
        if bar is not None:
            at = entry_at(entry, state)
            if policy.barring_protection is not None:
                at = max(at, now + policy.barring_protection.notice_period)
            return at, bar.scope
    return None


def status_view(timeline: list[TimelineEntry], state: EpisodeState) -> DunningStatus:
    upcoming = None if state.ended else next_entry(timeline, state)
    at = entry_at(upcoming, state) if upcoming is not None else None
    if upcoming is not None and state.pause is not None:
        # While paused the step waits; with an end date it runs that much later after the auto-resume.
        at = at + (state.pause.until - state.pause.since) if state.pause.until is not None else None
    return DunningStatus(
        episode_id=state.episode_id, billing_account_id=state.billing_account_id, invoice_id=state.invoice_id, segment=state.segment,
        state="ended" if state.ended else "paused" if state.pause is not None else "active",
        level=state.level or "none", barred=state.barred,
        next_step=upcoming.label if upcoming is not None else None, next_step_kind=upcoming.kind if upcoming is not None else None,
        next_step_at=at,
        pause_kind=state.pause.kind if state.pause else None, paused_until=state.pause.until if state.pause else None,
        pause_reason=state.pause.reason if state.pause else None,
        retries_made=state.retries_made, fees=list(state.fees), outcome=state.outcome, end_reason=state.end_reason,
    )
