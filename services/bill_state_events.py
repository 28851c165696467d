"""CustomerBillStateChangeEvent for every payment-driven state change of a bill, wherever it is made.

Bills change state through payments in several places: the ledger's allocation (activities.ledger), a
settlement booked with a payment or credit note (activities.invoice_issuer.record_settlement), refunds and
chargebacks (services.refunds). Rather than asking each to remember the event, a `before_flush` hook on
every ORM session looks at the invoices whose `state` changed in that flush and, when the change involves
a payment state (partiallyPaid, settled, or leaving one of them: a reopened bill), emits the event with
services.hub_events.emit_bill_state_event, in the same transaction. emit_event records the same state of
the same bill once in a row, so a caller that also emits it explicitly adds nothing.

Imported for its effect by services.stripe_webhooks (so both the API and the worker, through the outbox
relay, load it)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from persistence.tables import Invoice
from services.hub_events import _wall_clock, emit_bill_state_event

PAYMENT_STATES = frozenset({"partiallyPaid", "settled"})


def changed_bills(session: Session) -> list[tuple[Invoice, str | None]]:
    """(invoice, previous state) for each invoice in the session whose state changed since it was loaded or last flushed."""
    found = []
    for obj in list(session.dirty):
        if not isinstance(obj, Invoice):
            continue
        history = inspect(obj).attrs.state.history
        if not history.has_changes():
            continue
        previous = history.deleted[0] if history.deleted else None
        if previous != obj.state:
            found.append((obj, previous))
    return found


@event.listens_for(Session, "before_flush")
def _emit_payment_driven_bill_changes(session: Session, _flush_context: Any, _instances: Any) -> None:
    for invoice, previous in changed_bills(session):
        if invoice.state in PAYMENT_STATES or previous in PAYMENT_STATES:
            emit_bill_state_event(session, invoice, _wall_clock())
