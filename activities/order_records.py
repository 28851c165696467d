"""Database writes the order workflow needs. Each is idempotent on the order and item ids."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from persistence.tables import BillingAccount, BusinessEvent, CancelProductOrder, OrderStep, ProductOrder, ProductOrderItem


def utcnow() -> datetime:
    """Business time. Inside an activity it is when the workflow scheduled this attempt, i.e. the
    workflow's own clock: an invoice is issued, and a notice sent, at the workflow's time, which is also
    what makes these records testable under time skipping. Elsewhere it is the wall clock."""
    if activity.in_activity():
        return activity.info().current_attempt_scheduled_time.astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def require_billing_account(session: Session, billing_account_id: str) -> BillingAccount:
    """The account an activity works on; a missing one is not retried (no retry can make it exist)."""
    account = session.get(BillingAccount, billing_account_id)
    if account is None:
        raise ApplicationError(f"billingAccount {billing_account_id} does not exist", type="UnknownBillingAccount", non_retryable=True)
    return account


def record_step(session: Session, order_id: str, step: str, status: str, detail: str | None = None) -> None:
    session.add(OrderStep(order_id=order_id, step=step, status=status, detail=detail, at=utcnow()))


def record_event(session: Session, *, customer_id: str | None, billing_account_id: str | None, kind: str, message: str, data: dict | None = None) -> None:
    session.add(BusinessEvent(customer_id=customer_id, billing_account_id=billing_account_id, kind=kind, message=message, data=data or {}, at=utcnow()))


def load_order(session: Session, order_id: str) -> ProductOrder:
    order = session.get(ProductOrder, order_id)
    if order is None:
        raise LookupError(f"productOrder {order_id} does not exist")
    return order


def load_item(session: Session, order_id: str, item_id: str) -> ProductOrderItem:
    item = session.get(ProductOrderItem, (order_id, item_id))
    if item is None:
        raise LookupError(f"productOrderItem {order_id}/{item_id} does not exist")
    return item


def open_cancel_requests(session: Session, order_id: str) -> list[CancelProductOrder]:
    return list(
        session.exec(
            select(CancelProductOrder).where(CancelProductOrder.order_id == order_id, CancelProductOrder.state.in_(("acknowledged", "inProgress")))
        )
    )


def order_items(session: Session, order_id: str) -> list[ProductOrderItem]:
    return list(session.exec(select(ProductOrderItem).where(ProductOrderItem.order_id == order_id)))
