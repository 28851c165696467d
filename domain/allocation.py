"""Allocating money to open invoices: oldest due first; what is left over becomes account credit."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class OpenItem(BaseModel):
    invoice_id: str
    due_at: datetime
    open_cents: int


class Allocation(BaseModel):
    invoice_id: str
    amount_cents: int


def allocate(amount_cents: int, open_items: list[OpenItem]) -> tuple[list[Allocation], int]:
    """Returns the allocations and the unallocated rest (credit). Ties on the due date go by invoice id,
    so the result never depends on the order the items were read in."""
    if amount_cents < 0:
        raise ValueError("cannot allocate a negative amount")
    allocations: list[Allocation] = []
    rest = amount_cents
    for item in sorted(open_items, key=lambda i: (i.due_at, i.invoice_id)):
        if rest == 0:
            break
        if item.open_cents <= 0:
            continue
        share = min(rest, item.open_cents)
        allocations.append(Allocation(invoice_id=item.invoice_id, amount_cents=share))
        rest -= share
    return allocations, rest


class Reversal(BaseModel):
    """Where money taken back from a payment (a refund, a chargeback) comes from: first the payment's
    unallocated rest (account credit), then its invoice allocations, latest invoice first."""

    credit_cents: int
    invoices: list[Allocation]

    @property
    def total_cents(self) -> int:
        return self.credit_cents + sum(a.amount_cents for a in self.invoices)


def reverse(amount_cents: int, credit_cents: int, allocations: list[OpenItem]) -> Reversal:
    """Takes `amount_cents` back: from `credit_cents` (the payment's unallocated rest) first, then from
    the allocations (`open_cents` = how much of the payment went to that invoice), the one due last
    first, so the oldest debt stays paid longest. Raises ValueError when more is asked than there is."""
    if amount_cents <= 0:
        raise ValueError("cannot reverse a non-positive amount")
    available = max(credit_cents, 0) + sum(max(a.open_cents, 0) for a in allocations)
    if amount_cents > available:
        raise ValueError(f"cannot reverse {amount_cents} cents, only {available} are on the payment")
    from_credit = min(amount_cents, max(credit_cents, 0))
    rest = amount_cents - from_credit
    taken: list[Allocation] = []
    for item in sorted(allocations, key=lambda i: (i.due_at, i.invoice_id), reverse=True):
        if rest == 0:
            break
        share = min(rest, item.open_cents)
        if share > 0:
            taken.append(Allocation(invoice_id=item.invoice_id, amount_cents=share))
            rest -= share
    return Reversal(credit_cents=from_credit, invoices=taken)
