"""TMF622 product order: states, allowed transitions and request validation against the catalog."""
from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from domain.catalog import Catalog


class OrderState(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    PENDING = "pending"
    HELD = "held"
    IN_PROGRESS = "inProgress"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"
    ASSESSING_CANCELLATION = "assessingCancellation"
    PENDING_CANCELLATION = "pendingCancellation"


TERMINAL_STATES = frozenset({OrderState.REJECTED, OrderState.CANCELLED, OrderState.COMPLETED, OrderState.FAILED, OrderState.PARTIAL})

_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.ACKNOWLEDGED: frozenset({OrderState.IN_PROGRESS, OrderState.REJECTED, OrderState.PENDING_CANCELLATION, OrderState.CANCELLED}),
    OrderState.PENDING: frozenset({OrderState.IN_PROGRESS, OrderState.PENDING_CANCELLATION}),
    OrderState.HELD: frozenset({OrderState.IN_PROGRESS, OrderState.PENDING_CANCELLATION}),
    OrderState.IN_PROGRESS: frozenset(
        {OrderState.COMPLETED, OrderState.FAILED, OrderState.PARTIAL, OrderState.PENDING_CANCELLATION, OrderState.HELD, OrderState.PENDING}
    ),
    OrderState.ASSESSING_CANCELLATION: frozenset({OrderState.PENDING_CANCELLATION, OrderState.IN_PROGRESS}),
    OrderState.PENDING_CANCELLATION: frozenset({OrderState.CANCELLED, OrderState.FAILED}),
}


class InvalidTransition(ValueError):
    pass


def can_transition(current: OrderState, target: OrderState) -> bool:
    return target == current or target in _TRANSITIONS.get(current, frozenset())


def transition(current: OrderState, target: OrderState) -> OrderState:
    if not can_transition(current, target):
        raise InvalidTransition(f"productOrder cannot move from {current} to {target}")
    return target


def is_cancellable(state: OrderState) -> bool:
    """An order can be cancelled until it has reached a terminal state."""
    return state not in TERMINAL_STATES and state != OrderState.PENDING_CANCELLATION


class OrderItemRequest(BaseModel):
    item_id: str
    action: str
    offering_id: str | None


class FieldError(BaseModel):
    field: str
    code: str
    message: str


SUPPORTED_ACTIONS = frozenset({"add"})


def validate_order_items(items: list[OrderItemRequest], catalog: Catalog) -> list[FieldError]:
    """Business validation of an order's items; an empty list means the order can proceed."""
    errors: list[FieldError] = []
    if not items:
        errors.append(FieldError(field="productOrderItem", code="required", message="an order needs at least one item"))
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"productOrderItem[{index}]"
        if item.item_id in seen:
            errors.append(FieldError(field=f"{where}.id", code="duplicate", message=f"item id {item.item_id!r} is used twice"))
        seen.add(item.item_id)
        if item.action not in SUPPORTED_ACTIONS:
            errors.append(
                FieldError(field=f"{where}.action", code="unsupported_action", message=f"action {item.action!r} is not supported; use one of {sorted(SUPPORTED_ACTIONS)}")
            )
        if not item.offering_id:
            errors.append(FieldError(field=f"{where}.productOffering.id", code="required", message="productOffering.id is required"))
            continue
        offering = catalog.offering(item.offering_id)
        if offering is None:
            errors.append(FieldError(field=f"{where}.productOffering.id", code="unknown_offering", message=f"no productOffering {item.offering_id!r}"))
        elif not offering.orderable:
            errors.append(FieldError(field=f"{where}.productOffering.id", code="offering_retired", message=f"productOffering {item.offering_id!r} is retired"))
    return errors
