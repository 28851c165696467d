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
