"""Dunning policies as data: one policy per customer segment (config/dunning/<segment>.yaml).

A policy is a ladder of *levels*, each at a fixed delay after the invoice due date, with conditions
(overdue amount, number of unpaid invoices) and actions (notice, late fee, payment retry, barring,
termination with a final bill, hand-over to collections, write-off), plus the payment retry schedule.
Both the retries and the levels live in the same policy so one timeline (domain.dunning_timeline)
orders them and they can never drift apart.

Pure: pydantic only, no I/O. The loader (config.dunning_loader) reads the YAML and the notice
templates and checks what needs the file system (that templates exist, their placeholders).

German consumer policies must follow §61 TKG: service may be barred only for arrears of at least
EUR 100 and only after a written notice of the barring at least two weeks before. A consumer policy
for Germany that could bar earlier is refused here, at start-up, not discovered at run time.
"""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from domain.money import Money

# §61 Abs. 2 TKG (2021): barring for arrears only from EUR 100, after two weeks' written notice.
TKG61_MIN_ARREARS = Decimal("100.00")
TKG61_NOTICE_PERIOD = timedelta(days=14)

# Placeholders a notice template may use; the activity fills every one of them.
TEMPLATE_PLACEHOLDERS = frozenset({
    "customer_name",      # the customer's name
    "account_id",         # billing account id
    "invoice_numbers",    # the overdue invoices' numbers, comma separated
    "due_date",           # due date of the first overdue invoice (dd.mm.yyyy, account time zone)
    "overdue_amount",     # arrears: open amount of the overdue invoices, e.g. "123.45"
    "unpaid_invoices",    # how many invoices are overdue
    "late_fee",           # the late fee of this level ("0.00" when the level has none)
    "total_fees",         # every late fee of this episode so far
    "barring_date",       # when the service will be barred (suspension notices), dd.mm.yyyy HH:MM
    "barring_scope",      # "outgoing" or "full" (the barring announced)
    "level",              # the level's name
    "seller_name",        # o2c's operator name (settings)
    "currency",           # "EUR"
})

_ISO_DURATION = re.compile(r"^P(?!$)(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _iso_duration(value: Any) -> Any:
    """Durations are ISO 8601 strings (P14D, PT12H, P2W). Months and years are refused: their length
    varies, and a dunning delay must mean the same number of days for every customer."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 duration string such as 'P14D', got {type(value).__name__} {value!r}")
    text = value.strip().upper()
    if not _ISO_DURATION.match(text):
        raise ValueError(f"{value!r} is not an ISO 8601 duration in weeks, days, hours, minutes or seconds (e.g. 'P14D', 'PT36H'); "
                         "months and years are not allowed because their length varies")
    return text


IsoDuration = Annotated[timedelta, BeforeValidator(_iso_duration)]


def _cents(value: Decimal, what: str) -> Decimal:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"{what} must be a whole number of cents, got {value}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- actions ----------------------------------------------------------------------------------------


class NoticeAction(_Strict):
    """A notice to the customer from a template (config/dunning/templates/<template>.txt)."""

    type: Literal["notice"]
    channel: Literal["email", "sms"] = "email"
    template: str = Field(min_length=1)
    # True for the written notice that announces a barring (§61 TKG): its text must name the date.
    announces_barring: bool = False

    @field_validator("template")
    @classmethod
    def _template_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"template names are lower-case file names without '.txt' (letters, digits, '-', '_'), got {value!r}")
        return value


class LateFeeAction(_Strict):
    """A late fee (Mahngebühr): recorded as a pending one-time charge and billed at once on a fee-only invoice
    of its own (activities.dunning_fee_invoice). German late fees are damages, not a supply: outside the scope
    of VAT (EN 16931 category O, 0 %), which cannot share an invoice with other categories (BR-O-11)."""

    type: Literal["late_fee"]
    amount: Money = Field(gt=0)
    description: str = Field(default="Mahngebühr", min_length=1)
    vat_rate: Money = Field(default=Decimal("0"), ge=0)
    vat_category: str = "O"

    @field_validator("amount")
    @classmethod
    def _whole_cents(cls, value: Decimal) -> Decimal:
        return _cents(value, "a late fee")


class RetryPaymentAction(_Strict):
    """An extra payment attempt at this level (besides the policy's retry schedule)."""

    type: Literal["retry_payment"]


class BarAction(_Strict):
    """Barring through the OSS: `outgoing` (incoming calls and emergency numbers still work) or `full`."""

    type: Literal["bar"]
    scope: Literal["outgoing", "full"]


class TerminateAction(_Strict):
    """Contract termination for arrears, with a final bill (an on-demand bill of everything not yet billed)."""

    type: Literal["terminate"]
    final_bill: bool = True


class CollectionsAction(_Strict):
    """Hand the debt over to a collection agency. Ends the episode."""

    type: Literal["collections"]
    agency: str = Field(default="collections", min_length=1)


class WriteOffAction(_Strict):
    """Write the debt off. Ends the episode."""

    type: Literal["write_off"]


DunningAction = Annotated[
    Union[NoticeAction, LateFeeAction, RetryPaymentAction, BarAction, TerminateAction, CollectionsAction, WriteOffAction],
    Field(discriminator="type"),
]
TERMINAL_ACTIONS = ("collections", "write_off")


# --- levels and policy --------------------------------------------------------------------------------


class LevelConditions(_Strict):
    """All must hold when the level is due, on the balance re-read at that moment."""

    min_overdue: Money = Field(default=Decimal("0.01"), ge=0)
    min_unpaid_invoices: int | None = Field(default=None, ge=1)

    @field_validator("min_overdue")
    @classmethod
    def _whole_cents(cls, value: Decimal) -> Decimal:
        return _cents(value, "min_overdue")

    def hold(self, overdue: Decimal, unpaid_invoices: int) -> bool:
        return overdue > 0 and overdue >= self.min_overdue and unpaid_invoices >= (self.min_unpaid_invoices or 0)

    def at_most_as_strict_as(self, other: LevelConditions) -> bool:
        """Whenever `other` holds, this holds too."""
        return self.min_overdue <= other.min_overdue and (self.min_unpaid_invoices or 0) <= (other.min_unpaid_invoices or 0)


class DunningLevel(_Strict):
    name: str = Field(min_length=1)
    after: IsoDuration  # delay from the invoice due date
    when: LevelConditions = LevelConditions()
    actions: list[DunningAction] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _simple_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"level names are lower-case letters, digits, '-' and '_', got {value!r}")
        return value

    @field_validator("after")
    @classmethod
    def _not_before_due(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("a level cannot come before the due date")
        return value

    @model_validator(mode="after")
    def _consistent_actions(self) -> DunningLevel:
        kinds = [a.type for a in self.actions]
        for kind in ("late_fee", "bar", "terminate", "collections", "write_off"):
            if kinds.count(kind) > 1:
                raise ValueError(f"a level has at most one {kind!r} action")
        if "collections" in kinds and "write_off" in kinds:
            raise ValueError("a level either hands the debt to collections or writes it off, not both")
        return self

    def actions_of(self, kind: str) -> list:
        return [a for a in self.actions if a.type == kind]

    @property
    def bars(self) -> BarAction | None:
        found = self.actions_of("bar")
        return found[0] if found else None

    @property
    def announces_barring(self) -> bool:
        return any(a.type == "notice" and a.announces_barring for a in self.actions)

    @property
    def terminal(self) -> bool:
        return any(a.type in TERMINAL_ACTIONS for a in self.actions)


class BarringProtection(_Strict):
    """When barring is allowed at all, checked again at run time before every barring."""

    min_overdue: Money = Field(ge=0)
    notice_period: IsoDuration  # a written notice must precede the barring by at least this


class DunningPolicy(_Strict):
    segment: str = Field(min_length=1)
    description: str = Field(min_length=1)
    customer_type: Literal["consumer", "business"]
    country: str = Field(default="DE", min_length=2, max_length=2)
    currency: Literal["EUR"] = "EUR"
    barring_protection: BarringProtection | None = None
    # Payment retries, as delays from the due date (e.g. P3D, P7D, P14D).
    payment_retries: list[IsoDuration] = []
    # Stop the scheduled retries after a hard decline (lost card, revoked mandate): retrying only adds fees.
    stop_retries_on_hard_decline: bool = True
    levels: list[DunningLevel] = Field(min_length=1)
    # A demonstration policy (durations in seconds, e.g. config/dunning/demo.yaml): never for real customers.
    # The §61 TKG amounts and periods are not checked for it; the notice-before-barring order still is.
    demo: bool = False

    @field_validator("segment")
    @classmethod
    def _segment_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"segment names are lower-case letters, digits, '-' and '_', got {value!r}")
        return value

    @field_validator("payment_retries")
    @classmethod
    def _retries_sorted(cls, value: list[timedelta]) -> list[timedelta]:
        if any(r < timedelta(0) for r in value):
            raise ValueError("a payment retry cannot come before the due date")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("payment retries must be in strictly increasing order")
        return value

    @model_validator(mode="after")
    def _ladder(self) -> DunningPolicy:
        names = [level.name for level in self.levels]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"level names must be unique, repeated: {repeated}")
        for earlier, later in zip(self.levels, self.levels[1:]):
            if later.after < earlier.after:
                raise ValueError(f"levels must be sorted by 'after': {later.name!r} ({_fmt(later.after)}) comes after "
                                 f"{earlier.name!r} ({_fmt(earlier.after)})")
        for index, level in enumerate(self.levels):
            if level.terminal and index != len(self.levels) - 1:
                raise ValueError(f"level {level.name!r} ends the episode (collections / write-off) and must be the last level")
            if level.announces_barring and not any(later.bars for later in self.levels[index + 1:]):
                raise ValueError(f"level {level.name!r} announces a barring but no later level bars")
            for notice in level.actions_of("notice"):
                if notice.announces_barring and notice.channel != "email":
                    raise ValueError(f"level {level.name!r}: a barring must be announced in writing (channel email), not {notice.channel!r}")
        if self.customer_type == "consumer" and self.country == "DE" and not self.demo:
            self._check_tkg61()
        if self.barring_protection is not None:
            self._check_protected_barring(self.barring_protection)
        return self

    def _check_tkg61(self) -> None:
        protection = self.barring_protection
        if any(level.bars for level in self.levels):
            if protection is None:
                raise ValueError("a German consumer policy that bars must set barring_protection "
                                 f"(§61 TKG: min_overdue at least {TKG61_MIN_ARREARS}, notice_period at least P14D)")
            if protection.min_overdue < TKG61_MIN_ARREARS:
                raise ValueError(f"barring_protection.min_overdue is {protection.min_overdue}; §61 TKG allows barring a consumer "
                                 f"only from {TKG61_MIN_ARREARS} EUR in arrears")
            if protection.notice_period < TKG61_NOTICE_PERIOD:
                raise ValueError(f"barring_protection.notice_period is {_fmt(protection.notice_period)}; §61 TKG requires written "
                                 "notice at least two weeks (P14D) before barring a consumer")

    def _check_protected_barring(self, protection: BarringProtection) -> None:
        """Every barring level needs the arrears floor and an earlier written announcement that reaches
        every customer the barring reaches, at least `notice_period` before."""
        for level in self.levels:
            if not level.bars:
                continue
            if level.when.min_overdue < protection.min_overdue:
                raise ValueError(f"level {level.name!r} bars from {level.when.min_overdue} EUR overdue; barring is allowed only "
                                 f"from {protection.min_overdue} EUR (set when.min_overdue to at least that)")
            notices = [n for n in self.levels if n.announces_barring and n.after <= level.after - protection.notice_period
                       and n.when.at_most_as_strict_as(level.when)]
            if not notices:
                raise ValueError(f"level {level.name!r} bars at {_fmt(level.after)} but no earlier level announces the barring in "
                                 f"writing at least {_fmt(protection.notice_period)} before (at {_fmt(level.after - protection.notice_period)} "
                                 "or earlier) under conditions that hold whenever the barring's do")
            for notice_level in notices:
                if notice_level.when.min_overdue < protection.min_overdue:
                    raise ValueError(f"level {notice_level.name!r} announces a barring from {notice_level.when.min_overdue} EUR overdue, "
                                     f"but barring is allowed only from {protection.min_overdue} EUR: the notice would threaten "
                                     "what may not happen")

    # --- look-ups -------------------------------------------------------------------------------------

    def level(self, name: str) -> DunningLevel:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(name)

    def barring_notice(self) -> tuple[DunningLevel, NoticeAction] | None:
        """The first written notice announcing a barring, for a barring whose notice was never sent."""
        for level in self.levels:
            for action in level.actions_of("notice"):
                if action.announces_barring:
                    return level, action
        return None


def _fmt(value: timedelta) -> str:
    """A delay as an ISO 8601 duration, for error messages."""
    if value < timedelta(0):
        return "-" + _fmt(-value)
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days or not time else "") + (f"T{time}" if time else "")
