"""TMF641 service order state changes reported by the OSS, routed to the order workflow they belong to.

Activation service orders carry externalId "<order id>:<item id>" (order ids are UUIDs). Other
service orders the OSS runs for o2c (barring: "bar:...", and whatever comes later) are not waited
on by an order workflow, so their events are acknowledged and ignored."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlmodel import Session

from persistence.tables import ProductOrderItem
from services.errors import NotFound
from services.query import run_tx
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import OssUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivationRef:
    order_id: str
    item_id: str


def parse_activation_external_id(external_id: str | None) -> ActivationRef | None:
    """The order item an activation service order is for, or None for any other service order."""
    if not external_id or ":" not in external_id:
        return None
    order_id, _, item_id = external_id.partition(":")
    try:
        uuid.UUID(order_id)
    except ValueError:
        return None
    return ActivationRef(order_id=order_id, item_id=item_id) if item_id else None


def _require_item(session: Session, ref: ActivationRef) -> None:
    if session.get(ProductOrderItem, (ref.order_id, ref.item_id)) is None:
        raise NotFound("productOrderItem", f"{ref.order_id}:{ref.item_id}")


async def service_order_changed(db_url: str, workflows: LazyWorkflows, *, service_order_id: str, external_id: str | None, state: str) -> bool:
    """Signal the order workflow. Returns False when the event is not for an activation (ignored)."""
    ref = parse_activation_external_id(external_id)
    if ref is None:
        log.info("ignoring service order %s event (externalId %r): not an order activation", service_order_id, external_id)
        return False
    await run_tx(db_url, _require_item, ref)
    update = OssUpdate(service_order_id=service_order_id, external_id=external_id or "", state=state)
    try:
        await workflows.call(lambda gateway: gateway.signal_oss_update(ref.order_id, update))
    except Exception as exc:
        if not is_not_found(exc):
            raise
        # The order's workflow has finished: a late or repeated callback has nothing left to change.
        log.info("service order %s event for finished order %s ignored", service_order_id, ref.order_id)
    return True
