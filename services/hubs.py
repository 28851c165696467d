"""TMF event hubs: which APIs have one and which events each carries, registering and deleting
listeners (`POST/GET/DELETE {api}/hub`), the TMF `query` filter, and the o2c extensions for failed
deliveries (list, replay one, replay all).

Events themselves are written by services.hub_events and sent by adapters.http.hub_dispatcher."""
from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from sqlmodel import Session, col, select

from persistence.tables import HubDelivery, HubListener
from services.errors import Invalid, NotFound, field_error
from services.query import Page, new_id, paginate


@dataclass(frozen=True)
class HubApi:
    name: str  # the API's path segment, e.g. "productOrderingManagement"
    prefix: str  # e.g. "/tmf-api/productOrderingManagement/v4"
    title: str
    event_types: tuple[str, ...]


HUB_APIS: dict[str, HubApi] = {
    api.name: api
    for api in (
        HubApi("productOrderingManagement", "/tmf-api/productOrderingManagement/v4", "TMF622 Product Ordering", (
            "ProductOrderCreateEvent", "ProductOrderStateChangeEvent", "ProductOrderAttributeValueChangeEvent",
            "ProductOrderDeleteEvent", "ProductOrderInformationRequiredEvent",
            "CancelProductOrderCreateEvent", "CancelProductOrderStateChangeEvent", "CancelProductOrderInformationRequiredEvent",
        )),
        HubApi("productInventory", "/tmf-api/productInventory/v4", "TMF637 Product Inventory", (
            "ProductCreateEvent", "ProductStateChangeEvent", "ProductAttributeValueChangeEvent", "ProductDeleteEvent", "ProductBatchEvent",
        )),
        HubApi("customerBillManagement", "/tmf-api/customerBillManagement/v4", "TMF678 Customer Bill", (
            "CustomerBillCreateEvent", "CustomerBillStateChangeEvent",
            "CustomerBillOnDemandCreateEvent", "CustomerBillOnDemandStateChangeEvent",
        )),
        HubApi("paymentManagement", "/tmf-api/paymentManagement/v4", "TMF676 Payment", (
            "PaymentCreateEvent", "PaymentStateChangeEvent", "PaymentAttributeValueChangeEvent",
            "RefundCreateEvent", "RefundStateChangeEvent",
        )),
        # TMF666 Account has no dunning resource; DunningLevelChangeEvent is o2c's own event.
        HubApi("accountManagement", "/tmf-api/accountManagement/v4", "TMF666 Account (o2c dunning events)", (
            "DunningLevelChangeEvent", "BillingAccountCreateEvent", "BillingAccountStateChangeEvent",
            "BillingAccountAttributeValueChangeEvent",
        )),
    )
}

API_OF_EVENT: dict[str, str] = {event_type: api.name for api in HUB_APIS.values() for event_type in api.event_types}

# Envelope fields a query may filter on, besides paths into "event".
_ENVELOPE_FIELDS = frozenset({"eventType", "eventId", "domain", "correlationId"})
MAX_CALLBACK_LENGTH = 2000
MAX_QUERY_LENGTH = 2000


def hub_api(name: str) -> HubApi:
    try:
        return HUB_APIS[name]
    except KeyError:
        raise ValueError(f"no hub for API {name!r}; known: {sorted(HUB_APIS)}") from None


def listener_path(event_type: str) -> str:
    """TMF: ProductOrderStateChangeEvent is POSTed to {callback}/listener/productOrderStateChangeEvent."""
    return f"/listener/{event_type[:1].lower()}{event_type[1:]}"


def listener_url(callback: str, event_type: str) -> str:
    return callback.rstrip("/") + listener_path(event_type)


# --- callback -----------------------------------------------------------------------------------


def validate_callback(callback: str) -> str:
    """An absolute http(s) URL with a host, no credentials, query or fragment (events are POSTed to
    `{callback}/listener/<eventType>`). Raises Invalid with a machine-readable code per reason."""
    value = callback.strip()

    def bad(code: str, message: str) -> Invalid:
        return Invalid([field_error("callback", code, message)], f"callback {value!r} cannot be used: {message}", code="invalid_callback")

    if not value:
        raise bad("callback_missing", "the callback URL is empty")
    if len(value) > MAX_CALLBACK_LENGTH:
        raise bad("callback_too_long", f"the callback URL is longer than {MAX_CALLBACK_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise bad("callback_malformed", "the callback URL contains white space or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a port that is not a number or out of range
    except ValueError as exc:
        raise bad("callback_malformed", f"the callback URL cannot be parsed ({exc})") from None
    if not parts.scheme:
        raise bad("callback_not_absolute", "the callback must be an absolute URL such as https://crm.example/o2c")
    if parts.scheme.lower() not in ("http", "https"):
        raise bad("callback_scheme_not_allowed", f"scheme {parts.scheme!r} is not allowed; use http or https")
    if not parts.hostname:
        raise bad("callback_missing_host", "the callback URL has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("callback_has_credentials", "credentials in the URL are not allowed; deliveries are signed with the listener's secret")
    if parts.query or value.endswith("?"):
        raise bad("callback_has_query", "the callback may not have a query string; o2c appends /listener/<eventType> to it")
    if parts.fragment or "#" in value:
        raise bad("callback_has_fragment", "the callback may not have a fragment")
    if port == 0:
        raise bad("callback_malformed", "port 0 cannot be reached")
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and (address.is_multicast or address.is_unspecified):
        raise bad("callback_host_not_allowed", f"{host} cannot receive deliveries")
    return value.rstrip("/")


# --- query --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """A parsed TMF hub query: every term must hold (AND); a term holds when the value at its path
    is one of its alternatives (comma-separated, OR). Paths are envelope fields (eventType, domain,
    eventId, correlationId) or dotted paths into the event (`event.productOrder.state`); a list on
    the way matches when any element does."""

    terms: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, envelope: Mapping[str, Any]) -> bool:
        return all(_values_at(envelope, path.split(".")) & alternatives for path, alternatives in self.terms)


def _values_at(node: Any, path: list[str]) -> set[str]:
    if isinstance(node, list):
        found: set[str] = set()
        for element in node:
            found |= _values_at(element, path)
        return found
    if not path:
        if node is None or isinstance(node, (dict, list)):
            return set()
        if isinstance(node, bool):
            return {"true" if node else "false"}
        return {str(node)}
    if isinstance(node, Mapping) and path[0] in node:
        return _values_at(node[path[0]], path[1:])
    return set()


def parse_query(query: str | None, api: HubApi) -> EventFilter:
    """`eventType=ProductOrderStateChangeEvent&event.productOrder.state=completed,failed`. Raises
    Invalid (code invalid_query) for a malformed term, an unknown field or an event type this API
    does not emit."""
    if query is None or not query.strip():
        return EventFilter()

    def bad(code: str, message: str) -> Invalid:
        return Invalid([field_error("query", code, message)], f"query {query!r} cannot be used: {message}", code="invalid_query")

    if len(query) > MAX_QUERY_LENGTH:
        raise bad("query_too_long", f"the query is longer than {MAX_QUERY_LENGTH} characters")
    terms: list[tuple[str, frozenset[str]]] = []
    for raw in query.strip().lstrip("?").split("&"):
        if not raw.strip():
            continue
        path, sep, value = raw.partition("=")
        path = unquote_plus(path).strip()
        if not sep or not path:
            raise bad("query_malformed", f"{raw!r} is not a field=value term")
        if path not in _ENVELOPE_FIELDS and not (path.startswith("event.") and all(path.split(".")[1:])):
            raise bad("query_unknown_field", f"{path!r} is not a filterable field; use eventType, domain, eventId, correlationId or event.<resource>.<field>")
        alternatives = frozenset(unquote_plus(v).strip() for v in value.split(",") if v.strip())
        if not alternatives:
            raise bad("query_malformed", f"{raw!r} has no value")
        if path == "eventType":
            unknown = sorted(alternatives - set(api.event_types))
            if unknown:
                raise bad("unknown_event_type", f"{api.title} has no event type {', '.join(unknown)}; it has {', '.join(api.event_types)}")
        terms.append((path, alternatives))
    return EventFilter(tuple(terms))


# --- listeners ----------------------------------------------------------------------------------


def register_listener(session: Session, api_name: str, callback: str, query: str | None, *, created_by: str | None, now: datetime) -> HubListener:
    api = hub_api(api_name)
    errors = []
    clean_callback: str | None = None
    clean_query = query.strip() if query and query.strip() else None
    try:
        clean_callback = validate_callback(callback)
    except Invalid as exc:
        errors.extend(exc.errors)
    try:
        parse_query(clean_query, api)
    except Invalid as exc:
        errors.extend(exc.errors)
    if errors:
        code = "invalid_callback" if any(e.field == "callback" for e in errors) else "invalid_query"
        raise Invalid(errors, "the listener cannot be registered; see errors", code=code)
    assert clean_callback is not None
    listener = HubListener(id=new_id(), api=api.name, callback=clean_callback, query=clean_query,
                           secret=f"whsec_{secrets.token_urlsafe(32)}", created_by=created_by, created_at=now)
    session.add(listener)
    return listener


def get_listener(session: Session, api_name: str, listener_id: str) -> HubListener:
    listener = session.get(HubListener, listener_id)
    if listener is None or listener.api != api_name or listener.deleted_at is not None:
        raise NotFound("hub", listener_id)
    return listener


def list_listeners(session: Session, api_name: str, *, limit: int, offset: int) -> Page[HubListener]:
    statement = (select(HubListener).where(HubListener.api == api_name, col(HubListener.deleted_at).is_(None))
                 .order_by(col(HubListener.created_at), HubListener.id))
    return paginate(session, statement, limit, offset)


def delete_listener(session: Session, api_name: str, listener_id: str, now: datetime) -> int:
    """Stops deliveries: the listener gets no new events, and what was waiting for it is cancelled.
    Returns how many deliveries were cancelled."""
    listener = get_listener(session, api_name, listener_id)
    listener.deleted_at = now
    session.add(listener)
    cancelled = 0
    for delivery in session.exec(select(HubDelivery).where(HubDelivery.listener_id == listener_id, HubDelivery.status == "pending")):
        delivery.status, delivery.last_error = "cancelled", "listener deleted"
        session.add(delivery)
        cancelled += 1
    return cancelled


def active_listeners(session: Session, api_name: str) -> list[HubListener]:
    return list(session.exec(select(HubListener).where(HubListener.api == api_name, col(HubListener.deleted_at).is_(None))
                             .order_by(col(HubListener.created_at), HubListener.id)))


# --- failed deliveries (o2c extension) ----------------------------------------------------------


def failed_deliveries(session: Session, api_name: str, listener_id: str, *, limit: int, offset: int) -> Page[HubDelivery]:
    get_listener(session, api_name, listener_id)
    statement = (select(HubDelivery).where(HubDelivery.listener_id == listener_id, HubDelivery.status == "failed")
                 .order_by(col(HubDelivery.resource_key), col(HubDelivery.sequence), col(HubDelivery.id)))
    return paginate(session, statement, limit, offset)


def _requeue(delivery: HubDelivery, now: datetime) -> None:
    delivery.status = "pending"
    delivery.next_attempt_at = None
    delivery.replayed_at = now  # a new retry window
    delivery.failed_at = None


def replay_delivery(session: Session, api_name: str, listener_id: str, delivery_id: int, now: datetime) -> HubDelivery:
    """Puts one failed delivery back in line. It goes out in its place in its resource's sequence:
    after any earlier event of the same resource that is still pending."""
    get_listener(session, api_name, listener_id)
    delivery = session.get(HubDelivery, delivery_id)
    if delivery is None or delivery.listener_id != listener_id or delivery.status != "failed":
        raise NotFound("failedDelivery", str(delivery_id))
    _requeue(delivery, now)
    session.add(delivery)
    return delivery


def replay_all(session: Session, api_name: str, listener_id: str, now: datetime) -> list[HubDelivery]:
    get_listener(session, api_name, listener_id)
    deliveries = list(session.exec(select(HubDelivery).where(HubDelivery.listener_id == listener_id, HubDelivery.status == "failed")
                                   .order_by(col(HubDelivery.id))))
    for delivery in deliveries:
        _requeue(delivery, now)
        session.add(delivery)
    return deliveries
