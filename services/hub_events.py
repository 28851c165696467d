"""Emitting TMF events to the listeners registered at o2c's hubs (see docs/events.md).

`emit_event` is called inside the transaction that makes the change it reports. It writes the event
to the event log (`hub_event`) and one delivery row per active listener whose query matches
(`hub_delivery`); both commit or roll back with the change itself, so an event is never lost when
o2c stops after the commit, and never sent for a change that was rolled back. The hub dispatcher
(adapters.http.hub_dispatcher) POSTs the deliveries afterwards.

Event ids are business keys, "<resourceType>:<id>:<state>:<n>" (n counts how often the resource
reached that state), so running the same transaction again writes nothing new."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from persistence.tables import HubDelivery, HubEvent, Product, ProductOrder, ProductOrderItem
from services.hubs import API_OF_EVENT, active_listeners, parse_query, hub_api

log = logging.getLogger(__name__)

# TMF622
PRODUCT_ORDER_CREATE = "ProductOrderCreateEvent"
PRODUCT_ORDER_STATE_CHANGE = "ProductOrderStateChangeEvent"
# TMF637 (v4 calls the status change of a product a "state change")
PRODUCT_CREATE = "ProductCreateEvent"
PRODUCT_STATE_CHANGE = "ProductStateChangeEvent"
# TMF678
CUSTOMER_BILL_CREATE = "CustomerBillCreateEvent"
CUSTOMER_BILL_STATE_CHANGE = "CustomerBillStateChangeEvent"
# TMF676
PAYMENT_CREATE = "PaymentCreateEvent"
PAYMENT_STATE_CHANGE = "PaymentStateChangeEvent"
REFUND_CREATE = "RefundCreateEvent"
REFUND_STATE_CHANGE = "RefundStateChangeEvent"
# o2c, on the accountManagement hub
DUNNING_LEVEL_CHANGE = "DunningLevelChangeEvent"


def _wall_clock() -> datetime:
    return datetime.now(timezone.utc)


def emit_event(session: Session, *, event_type: str, resource_type: str, resource_id: str, resource: dict[str, Any], at: datetime,
               state: str | None = None, correlation_id: str | None = None) -> str:
    """Record `event_type` about one resource in the caller's transaction; returns the event id.

    - `resource_type` is the TMF resource name as it appears in the event, camelCase
      (productOrder, product, customerBill, payment, billingAccount); the event body is
      {"<resource_type>": resource}.
    - `resource` is the resource's TMF representation (build it with api.tmf).
    - `at` is when it happened (eventTime), UTC.
    - `state` is what happened, for the event id; default: resource["state"] or resource["status"],
      else the event type. Pass it for events whose resource has no state (a dunning level).

    The same event twice in a row for a resource (same type and state as the resource's latest event)
    is recorded once: a transaction that runs again, or an idempotent activity retried, emits nothing new.
    """
    api_name = API_OF_EVENT.get(event_type)
    if api_name is None:
        raise ValueError(f"unknown event type {event_type!r}; add it to services.hubs.HUB_APIS")
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware (UTC)")
    what = str(state or resource.get("state") or resource.get("status") or event_type)
    resource_key = f"{resource_type}:{resource_id}"

    latest = session.exec(select(HubEvent).where(HubEvent.resource_key == resource_key).order_by(col(HubEvent.sequence).desc()).limit(1)).first()
    if latest is not None and latest.event_type == event_type and latest.state == what:
        return latest.id
    occurrence = session.exec(select(func.count()).select_from(HubEvent).where(HubEvent.resource_key == resource_key, HubEvent.state == what)).one()
    event_id = f"{resource_key}:{what}:{int(occurrence) + 1}"
    sequence = (latest.sequence if latest is not None else 0) + 1
    now = _wall_clock()
    event_time = at.astimezone(timezone.utc)
    session.add(HubEvent(id=event_id, event_type=event_type, resource_key=resource_key, state=what, sequence=sequence,
                         event_time=event_time, created_at=now))

    envelope: dict[str, Any] = {
        "eventId": event_id,
        "eventTime": event_time.isoformat().replace("+00:00", "Z"),
        "eventType": event_type,
        "domain": api_name,
    }
    if correlation_id:
        envelope["correlationId"] = correlation_id
    envelope["event"] = {resource_type: resource}

    api = hub_api(api_name)
    for listener in active_listeners(session, api_name):
        try:
            wanted = parse_query(listener.query, api).matches(envelope)
        except Exception:  # noqa: BLE001 - a query stored before a rule change must not fail the caller's change
            log.warning("listener %s has a query that no longer parses (%r); sending it everything", listener.id, listener.query)
            wanted = True
        if wanted:
            session.add(HubDelivery(listener_id=listener.id, event_id=event_id, event_type=event_type, resource_key=resource_key,
                                    sequence=sequence, body=envelope, created_at=now))
    return event_id


# --- the resources o2c's order flow changes ---------------------------------------------------------


class _NoCatalog:
    """Stands in when no catalog can be loaded: order items then carry no offering name."""

    def offering(self, _offering_id: str) -> None:
        return None


@lru_cache(maxsize=1)
def _default_catalog() -> Any:
    try:
        from config.catalog_loader import load_catalog
        from config.settings import get_settings

        return load_catalog(get_settings().catalog_path)
    except Exception:  # noqa: BLE001 - the event is still worth sending without offering names
        log.warning("catalog could not be loaded for event payloads; offering names are left out", exc_info=True)
        return _NoCatalog()


def emit_order_event(session: Session, order: ProductOrder, *, at: datetime, event_type: str = PRODUCT_ORDER_STATE_CHANGE,
                     catalog: Any = None) -> str:
    """A TMF622 event carrying the order as GET productOrder shows it (without @o2cSteps)."""
    from api import tmf

    items = list(session.exec(select(ProductOrderItem).where(ProductOrderItem.order_id == order.id)))
    body = tmf.product_order(order, items, [], catalog if catalog is not None else _default_catalog())
    body.pop("@o2cSteps", None)
    return emit_event(session, event_type=event_type, resource_type="productOrder", resource_id=order.id, resource=body, at=at)


def emit_product_event(session: Session, product: Product, *, at: datetime, event_type: str = PRODUCT_STATE_CHANGE) -> str:
    """A TMF637 event carrying the product as GET product shows it."""
    from api import tmf

    return emit_event(session, event_type=event_type, resource_type="product", resource_id=product.id, resource=tmf.product(product), at=at)


def emit_bill_state_event(session: Session, invoice: Any, at: datetime) -> str:
    """TMF678 CustomerBillStateChangeEvent carrying the bill as GET customerBill shows it, in the caller's
    transaction: when a payment, an allocation, a refund or a chargeback moves a bill's state
    (partiallyPaid, settled, or reopened back to sent / partiallyPaid). The event id names the state and
    how often the bill reached it, so emitting it again for the same state writes nothing new."""
    from api import tmf

    return emit_event(session, event_type=CUSTOMER_BILL_STATE_CHANGE, resource_type="customerBill", resource_id=invoice.id,
                      resource=tmf.customer_bill(invoice), at=at)


def emit_refund_event(session: Session, refund: Any, *, created: bool, at: datetime) -> str:
    """TMF676 RefundCreateEvent (a new refund or chargeback) or RefundStateChangeEvent: a refund's status moved
    (pending -> succeeded / failed), or a chargeback's dispute status did (the event's state is then the
    dispute status: won, lost)."""
    from api import tmf_refund

    return emit_event(session, event_type=REFUND_CREATE if created else REFUND_STATE_CHANGE, resource_type="refund", resource_id=refund.id,
                      resource=tmf_refund.refund(refund), at=at,
                      state=None if created else (refund.dispute_status if refund.kind == "chargeback" else refund.status))
