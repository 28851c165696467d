"""TMF622 product orders: accept an order (idempotently), start its workflow, cancel it, read it.

An order is stored before its workflow is started, so an accepted order survives Temporal being
down; re-sending it with the same Idempotency-Key starts the workflow then (starting is keyed by
the order id, so a second start finds the first run)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from domain.catalog import Catalog
from domain.orders import OrderItemRequest, OrderState, is_cancellable
from persistence.tables import BillingAccount, BusinessEvent, CancelProductOrder, Customer, OrderStep, ProductOrder, ProductOrderItem
from services.errors import Conflict, Invalid, NotFound, Unavailable, field_error
from services.hub_events import PRODUCT_ORDER_CREATE, emit_order_event
from services.plan_changes import MODIFY, item_extras, validate_items
from services.query import Page, new_id, paginate, run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import CancelOrder, OrderInput, OrderItemInput

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


@dataclass
class OrderView:
    order: ProductOrder
    items: list[ProductOrderItem]
    steps: list[OrderStep]


@dataclass
class NewOrder:
    customer_id: str | None
    customer_field: str  # where the customer reference sits in the request, for error messages
    billing_account_id: str
    items: list[OrderItemRequest]
    external_id: str | None
    request: dict[str, Any]
    idempotency_key: str | None


def request_hash(body: Any) -> str:
    """Hash of the body as canonical JSON, so key order and whitespace do not make a retry 'different'."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_order(session: Session, new: NewOrder, catalog: Catalog) -> tuple[ProductOrder, bool]:
    """Store the order and its items (one transaction). Returns (order, created); a repeat of a known
    Idempotency-Key with the same body returns the first order."""
    digest = request_hash(new.request)
    if new.idempotency_key is not None:
        existing = session.exec(select(ProductOrder).where(ProductOrder.idempotency_key == new.idempotency_key)).first()
        if existing is not None:
            if existing.request_hash != digest:
                raise Conflict(
                    f"Idempotency-Key {new.idempotency_key!r} was used for a different order ({existing.id}); use a new key for a new order",
                    code=IDEMPOTENCY_KEY_REUSED,
                )
            return existing, False

    _validate(session, new, catalog)
    now = utcnow()
    order = ProductOrder(
        id=new_id(),
        customer_id=new.customer_id or "",
        billing_account_id=new.billing_account_id,
        state=OrderState.ACKNOWLEDGED,
        idempotency_key=new.idempotency_key,
        request_hash=digest,
        request=new.request,
        external_id=new.external_id,
        order_date=now,
    )
    session.add(order)
    session.flush()  # the items reference the order row
    extras = item_extras(new.request)
    for item in new.items:
        product_id = extras.get(item.item_id, (None, []))[0] if item.action == MODIFY else None
        session.add(ProductOrderItem(order_id=order.id, item_id=item.item_id, action=item.action, offering_id=item.offering_id or "",
                                     product_id=product_id))
    session.add(OrderStep(order_id=order.id, step="received", status="done", detail=f"{len(new.items)} item(s)", at=now))
    session.add(
        BusinessEvent(
            customer_id=order.customer_id,
            billing_account_id=order.billing_account_id,
            kind="order_received",
            message=f"Order {order.id} received with {len(new.items)} item(s)",
            data={"orderId": order.id},
            at=now,
        )
    )
    emit_order_event(session, order, at=now, event_type=PRODUCT_ORDER_CREATE, catalog=catalog)
    return order, True


def _validate(session: Session, new: NewOrder, catalog: Catalog) -> None:
    errors = []
    if new.customer_id is None:
        errors.append(field_error("relatedParty", "required", "a relatedParty with role 'customer' is required"))
    elif session.get(Customer, new.customer_id) is None:
        errors.append(field_error(new.customer_field, "unknown_customer", f"no customer {new.customer_id!r}"))
    account = session.get(BillingAccount, new.billing_account_id)
    if account is None:
        errors.append(field_error("billingAccount.id", "unknown_billing_account", f"no billing account {new.billing_account_id!r}"))
    elif new.customer_id is not None and not any(e.code == "unknown_customer" for e in errors) and account.customer_id != new.customer_id:
        errors.append(field_error("billingAccount.id", "billing_account_mismatch", "the billing account belongs to another customer"))
    errors.extend(validate_items(session, new.items, new.request, new.customer_id, catalog))
    if errors:
        raise Invalid(errors, "the order cannot be accepted; see errors", code="invalid_order")


async def submit_order(db_url: str, catalog: Catalog, workflows: LazyWorkflows, new: NewOrder, *, oss_callback_wait_s: float, oss_total_timeout_s: float) -> tuple[OrderView, bool]:
    order, created = await run_tx(db_url, record_order, new, catalog)
    view = await run_tx(db_url, load_order_view, order.id)
    # Only an order nobody has picked up yet needs its workflow (re)started; a started one moved on.
    if view.order.state == OrderState.ACKNOWLEDGED:
        order_input = OrderInput(
            order_id=order.id,
            customer_id=order.customer_id,
            billing_account_id=order.billing_account_id,
            items=[OrderItemInput(item_id=i.item_id, offering_id=i.offering_id, action=i.action) for i in view.items],
            oss_callback_wait_s=oss_callback_wait_s,
            oss_total_timeout_s=oss_total_timeout_s,
        )
        try:
            await workflows.call(lambda gateway: gateway.start_order(order_input))
        except Unavailable as exc:
            await run_tx(db_url, _note_start_failed, order.id, exc.message)
            retry = (
                "send the same request with the same Idempotency-Key again to start it"
                if new.idempotency_key
                else "it stays acknowledged until it is started; send an Idempotency-Key next time so a retry can start it"
            )
            raise Unavailable(f"order {order.id} is stored but could not be started (Temporal unavailable); {retry}", code=exc.code) from exc
    return view, created


def _note_start_failed(session: Session, order_id: str, detail: str) -> None:
    session.add(OrderStep(order_id=order_id, step="start_workflow", status="failed", detail=detail[:500], at=utcnow()))


def load_order_view(session: Session, order_id: str) -> OrderView:
    order = session.get(ProductOrder, order_id)
    if order is None:
        raise NotFound("productOrder", order_id)
    return _views(session, [order])[0]


def _views(session: Session, orders: list[ProductOrder]) -> list[OrderView]:
    # Two set queries for the whole page instead of two per order.
    ids = [o.id for o in orders]
    items: dict[str, list[ProductOrderItem]] = {i: [] for i in ids}
    steps: dict[str, list[OrderStep]] = {i: [] for i in ids}
    if ids:
        for item in session.exec(select(ProductOrderItem).where(col(ProductOrderItem.order_id).in_(ids))):
            items[item.order_id].append(item)
        for step in session.exec(select(OrderStep).where(col(OrderStep.order_id).in_(ids)).order_by(OrderStep.at, OrderStep.id)):
            steps[step.order_id].append(step)
    return [OrderView(order=o, items=items[o.id], steps=steps[o.id]) for o in orders]


def list_orders(session: Session, *, state: str | None, customer_id: str | None, limit: int, offset: int) -> Page[OrderView]:
    statement = select(ProductOrder).order_by(col(ProductOrder.order_date).desc(), ProductOrder.id)
    if state is not None:
        statement = statement.where(ProductOrder.state == state)
    if customer_id is not None:
        statement = statement.where(ProductOrder.customer_id == customer_id)
    page = paginate(session, statement, limit, offset)
    return Page(items=_views(session, page.items), total=page.total)


# --- cancellation -------------------------------------------------------------------------------


def record_cancel(session: Session, order_id: str, reason: str | None) -> tuple[CancelProductOrder, bool]:
    """Store a cancel request. Returns (request, created); an open request for the same order is
    returned as it is, because the workflow acts on the first one only."""
    order = session.get(ProductOrder, order_id)
    if order is None:
        raise Invalid([field_error("productOrder.id", "unknown_order", f"no productOrder {order_id!r}")])
    open_request = session.exec(
        select(CancelProductOrder).where(CancelProductOrder.order_id == order_id, col(CancelProductOrder.state).in_(("acknowledged", "inProgress")))
    ).first()
    if open_request is not None:
        return open_request, False
    if not is_cancellable(OrderState(order.state)):
        raise Conflict(f"productOrder {order_id} is {order.state} and can no longer be cancelled", code="order_not_cancellable")
    now = utcnow()
    cancel = CancelProductOrder(id=new_id(), order_id=order_id, state="acknowledged", reason=reason, requested_at=now)
    session.add(cancel)
    session.add(OrderStep(order_id=order_id, step="cancel_requested", status="started", detail=reason, at=now))
    return cancel, True


def _cancel_without_workflow(session: Session, cancel_id: str) -> CancelProductOrder:
    """The order's workflow never started (Temporal was down when it was submitted): nobody is working
    on the order, so it can be cancelled right here."""
    cancel = session.get(CancelProductOrder, cancel_id)
    order = session.get(ProductOrder, cancel.order_id) if cancel else None
    assert cancel is not None and order is not None
    now = utcnow()
    if order.state == OrderState.ACKNOWLEDGED:
        order.state = OrderState.CANCELLED
        order.cancellation_date = now
        order.cancellation_reason = cancel.reason
        cancel.state, cancel.effective_at = "done", now
        session.add(OrderStep(order_id=order.id, step="cancel", status="done", detail="cancelled before processing started", at=now))
        emit_order_event(session, order, at=now)
    else:
        cancel.state = "terminatedWithError"
        session.add(OrderStep(order_id=order.id, step="cancel", status="failed", detail="the order's workflow is not running", at=now))
    return cancel


def _cancel_not_delivered(session: Session, cancel_id: str, detail: str) -> None:
    cancel = session.get(CancelProductOrder, cancel_id)
    if cancel is not None:
        cancel.state = "terminatedWithError"
        session.add(OrderStep(order_id=cancel.order_id, step="cancel", status="failed", detail=detail[:500], at=utcnow()))


async def cancel_order(db_url: str, workflows: LazyWorkflows, order_id: str, reason: str | None) -> tuple[CancelProductOrder, bool]:
    # Stored first, signalled second: the workflow can always find the request it is told about.
    cancel, created = await run_tx(db_url, record_cancel, order_id, reason)
    if not created:
        return cancel, False
    try:
        await workflows.call(lambda gateway: gateway.cancel_order(order_id, CancelOrder(cancel_id=cancel.id, reason=reason)))
    except Unavailable as exc:
        # Not accepted after all: close the request so a retry can file a new one.
        await run_tx(db_url, _cancel_not_delivered, cancel.id, exc.message)
        raise
    except Exception as exc:
        if not is_not_found(exc):
            raise
        cancel = await run_tx(db_url, _cancel_without_workflow, cancel.id)
    return cancel, True


def get_cancel(session: Session, cancel_id: str) -> CancelProductOrder:
    row = session.get(CancelProductOrder, cancel_id)
    if row is None:
        raise NotFound("cancelProductOrder", cancel_id)
    return row


def list_cancels(session: Session, *, order_id: str | None, limit: int, offset: int) -> Page[CancelProductOrder]:
    statement = select(CancelProductOrder).order_by(col(CancelProductOrder.requested_at).desc(), CancelProductOrder.id)
    if order_id is not None:
        statement = statement.where(CancelProductOrder.order_id == order_id)
    return paginate(session, statement, limit, offset)
