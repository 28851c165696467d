"""What barring the OSS should hold for a product, derived from o2c's view (status and reason), and the
rules of staff (manual) suspension. Pure: no I/O. docs/service-state.md explains the rules.

Three parties bar a line: dunning (outgoing/full, reason "barred for arrears (<scope>)"), a hard spending cap
(outgoing) and staff (manual suspension, always full). A manual suspension is kept apart (table
manual_suspension) together with the bar the other parties want underneath it, so:
- while a line is manually suspended, dunning and the spending cap change only that underlying bar;
- restoring a manual suspension re-applies the underlying bar (a dunning bar that still applies stays);
- each party changes only its own underlying bar (underlying_after): a spending cap never replaces dunning's."""
from __future__ import annotations

from typing import Literal

Barring = Literal["none", "outgoing", "full"]
BARRINGS: tuple[Barring, ...] = ("none", "outgoing", "full")

ServiceStateTarget = Literal["suspended", "active"]
BarPurpose = Literal["arrears", "spending"]  # the party (other than staff) whose bar changes
SOURCES = ("manual", "dunning", "spending", "reconciliation")

MANUAL_REASON_PREFIX = "suspended by staff: "
MANUAL_BARRING: Barring = "full"
ARREARS_PREFIX = "barred for arrears ("
SPENDING_REASON = "outgoing use barred: spending limit reached"
LIVE_STATUSES = ("active", "suspended")


def manual_reason(reason: str) -> str:
    return MANUAL_REASON_PREFIX + reason


def is_manual_reason(reason: str | None) -> bool:
    return (reason or "").startswith(MANUAL_REASON_PREFIX)


def is_arrears_reason(reason: str | None) -> bool:
    return (reason or "").startswith(ARREARS_PREFIX)


def purpose_of(reason: str | None) -> BarPurpose:
    """The party whose bar a barring reason names (a spending cap's, else dunning's)."""
    return "spending" if reason == SPENDING_REASON else "arrears"


def underlying_after(current: tuple[str, str | None], barring: str, reason: str | None, purpose: BarPurpose) -> tuple[str, str | None]:
    """The bar kept under a manual suspension after `purpose`'s party set `barring` (reason `reason`) on the line.
    Each party changes only its own bar: a spending cap never replaces another party's bar (dunning's arrears
    bar lasts until the episode ends), and lifts only its own; dunning's lift leaves a
    spending cap's bar (the cap lifts it at the next cycle). Dunning's bar replaces a spending bar, as it does on
    a line no one holds."""
    current_barring, current_reason = current
    if purpose == "spending":
        if barring == "none":
            return ("none", None) if current_reason == SPENDING_REASON else current
        return (barring, reason) if current_barring == "none" or current_reason == SPENDING_REASON else current
    if barring == "none":
        return current if current_reason == SPENDING_REASON else ("none", None)
    return barring, reason


def expected_barring(status: str, status_reason: str | None, *, manually_suspended: bool = False) -> Barring | None:
    """The barring the OSS should hold for a product in this state; None for a product that is not live
    (its line is not o2c's to bar). A suspension whose reason names no scope is a full bar."""
    if status not in LIVE_STATUSES:
        return None
    if manually_suspended:
        return MANUAL_BARRING
    if status == "active":
        return "none"
    reason = status_reason or ""
    if reason.startswith(ARREARS_PREFIX):
        scope = reason[len(ARREARS_PREFIX):].split(")", 1)[0]
        if scope in BARRINGS and scope != "none":
            return scope  # type: ignore[return-value]
    if reason == SPENDING_REASON:
        return "outgoing"
    return "full"


def state_for_barring(barring: Barring, reason: str | None) -> tuple[str, str | None]:
    """(status, status_reason) of a line left with `barring` by a party whose reason is `reason`."""
    return ("active", None) if barring == "none" else ("suspended", reason)
