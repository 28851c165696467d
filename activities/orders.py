"""Activities of the order workflow: catalog check, number pool, OSS service orders, inventory, billing start.
Each is idempotent on the order and item ids, so Temporal may retry any of them safely."""
from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import msisdn_pool
from activities.order_records import load_item, load_order, open_cancel_requests, order_items, record_event, record_step, utcnow
from adapters.oss.port import OssClient, OssRejected, OssUnavailable, ServiceOrderRef
from adapters.temporal.client import WorkflowGateway
from domain.catalog import Catalog
from domain.orders import OrderItemRequest, OrderState
from domain.products import ProductStatus
from persistence.db import session_scope
from persistence.tables import Product
from services.hub_events import PRODUCT_CREATE, emit_order_event, emit_product_event
from services.plan_changes import PlanChangeRefused, grant_promotions, item_extras, schedule_plan_change, validate_items
from workflows.messages import ProductActivated

PRODUCT_ID_NAMESPACE = uuid.UUID("0d6f1c2e-7c1b-4a47-9a55-6f1f2b0a0c01")


def activation_external_id(order_id: str, item_id: str) -> str:
    return f"{order_id}:{item_id}"


def _business_key(order_id: str, item_id: str) -> str:
    return f"{order_id}/{item_id}"


class OrderActivities:
    def __init__(self, db_url: str, catalog: Catalog, oss: OssClient, task_queue: str) -> None:
        self.db_url = db_url
        self.catalog = catalog
        self.oss = oss
        self.task_queue = task_queue

    @activity.defn(name="start_order")
    def start_order(self, order_id: str) -> list[dict]:
        """Moves the order to inProgress and re-checks it against today's catalog; returns per-field errors."""
        with session_scope(self.db_url) as session:
            order = load_order(session, order_id)
            items = [OrderItemRequest(item_id=i.item_id, action=i.action, offering_id=i.offering_id) for i in order_items(session, order_id)]
            errors = validate_items(session, items, order.request, order.customer_id, self.catalog, order_id=order_id)
            if order.state == OrderState.ACKNOWLEDGED and not errors:
                order.state = OrderState.IN_PROGRESS
                session.add(order)
                record_step(session, order_id, "validate", "done")
                emit_order_event(session, order, at=utcnow(), catalog=self.catalog)
            return [e.model_dump() for e in errors]

    @activity.defn(name="reserve_msisdn")
    def reserve_msisdn(self, order_id: str, item_id: str) -> str:
        with session_scope(self.db_url) as session:
            msisdn = msisdn_pool.reserve(session, _business_key(order_id, item_id))
            item = load_item(session, order_id, item_id)
            item.msisdn, item.state = msisdn, "inProgress"
            session.add(item)
            record_step(session, order_id, f"reserve_msisdn[{item_id}]", "done", msisdn)
            return msisdn

    @activity.defn(name="release_msisdn")
    def release_msisdn(self, order_id: str, item_id: str) -> None:
        with session_scope(self.db_url) as session:
            released = msisdn_pool.release(session, _business_key(order_id, item_id))
            record_step(session, order_id, f"release_msisdn[{item_id}]", "compensated", released)

    @activity.defn(name="submit_service_order")
    async def submit_service_order(self, order_id: str, item_id: str, msisdn: str, offering_id: str, customer_id: str) -> ServiceOrderRef:
        try:
            ref = await self.oss.submit_activation(
                external_id=activation_external_id(order_id, item_id), msisdn=msisdn, product_offering_id=offering_id, customer_id=customer_id
            )
        except OssRejected as error:
            raise ApplicationError(f"OSS rejected the service order: {error}", type="OssRejected", non_retryable=True) from error
        except OssUnavailable as error:
            raise ApplicationError(f"OSS unavailable: {error}", type="OssUnavailable") from error
        with session_scope(self.db_url) as session:
            item = load_item(session, order_id, item_id)
            item.service_order_id, item.service_order_state = ref.id, ref.state
            session.add(item)
            record_step(session, order_id, f"oss_service_order[{item_id}]", "started", f"serviceOrder {ref.id} {ref.state}")
        return ref

    @activity.defn(name="get_service_order_state")
    async def get_service_order_state(self, service_order_id: str) -> str:
        try:
            return (await self.oss.get_service_order(service_order_id)).state
        except OssUnavailable as error:
            raise ApplicationError(f"OSS unavailable: {error}", type="OssUnavailable") from error

    @activity.defn(name="cancel_service_order")
    async def cancel_service_order(self, order_id: str, item_id: str, service_order_id: str) -> None:
        try:
            await self.oss.cancel_service_order(service_order_id=service_order_id, reason=f"compensation for productOrder {order_id}")
        except OssUnavailable as error:
            raise ApplicationError(f"OSS unavailable: {error}", type="OssUnavailable") from error
        with session_scope(self.db_url) as session:
            item = load_item(session, order_id, item_id)
            item.service_order_state = "cancelled"
            session.add(item)
            record_step(session, order_id, f"oss_service_order[{item_id}]", "compensated", f"serviceOrder {service_order_id} cancelled")

    @activity.defn(name="create_product")
    def create_product(self, order_id: str, item_id: str, service_order_state: str) -> ProductActivated:
        """Creates the active product in inventory; billing starts from this activation instant."""
        with session_scope(self.db_url) as session:
            order = load_order(session, order_id)
            item = load_item(session, order_id, item_id)
            product_id = str(uuid.uuid5(PRODUCT_ID_NAMESPACE, _business_key(order_id, item_id)))
            product = session.get(Product, product_id)
            if product is None:
                offering = self.catalog.offering(item.offering_id)
                if offering is None:
                    raise ApplicationError(f"offering {item.offering_id} vanished from the catalog", type="UnknownOffering", non_retryable=True)
                now = utcnow()
                product = Product(
                    id=product_id, customer_id=order.customer_id, billing_account_id=order.billing_account_id,
                    offering_id=offering.id, offering_version=offering.version, catalog_version=self.catalog.version,
                    name=offering.name, msisdn=item.msisdn, status=ProductStatus.ACTIVE, order_id=order_id, order_item_id=item_id,
                    start_date=now, billing_start=now,
                )
                session.add(product)
                grant_promotions(session, self.catalog, product, item_extras(order.request).get(item_id, (None, []))[1], now, order_id)
                msisdn_pool.assign(session, _business_key(order_id, item_id))
                item.product_id, item.state, item.service_order_state = product_id, "completed", service_order_state
                session.add(item)
                record_step(session, order_id, f"oss_service_order[{item_id}]", "done", f"serviceOrder {item.service_order_id} {service_order_state}")
                record_step(session, order_id, f"create_product[{item_id}]", "done", f"product {product_id} active, MSISDN {item.msisdn}")
                record_event(session, customer_id=order.customer_id, billing_account_id=order.billing_account_id, kind="product.activated",
                             message=f"{offering.name} active on MSISDN {item.msisdn}", data={"productId": product_id, "orderId": order_id})
                emit_product_event(session, product, at=now, event_type=PRODUCT_CREATE)
            return ProductActivated(product_id=product.id, msisdn=product.msisdn or "", offering_id=product.offering_id, activated_at=product.start_date)

    @activity.defn(name="change_plan")
    def change_plan(self, order_id: str, item_id: str) -> None:
        """Carries out a modify item: records the plan change (at once for an upgrade, at the cycle end for a
        downgrade, as the catalog says) and the item's promotions. Once per item; no number, no OSS order."""
        with session_scope(self.db_url) as session:
            order = load_order(session, order_id)
            item = load_item(session, order_id, item_id)
            if item.state == "completed":
                return
            product = session.get(Product, item.product_id)
            if product is None:
                raise ApplicationError(f"product {item.product_id} of item {item_id} does not exist", type="UnknownProduct", non_retryable=True)
            now = utcnow()
            try:
                span = schedule_plan_change(session, self.catalog, item, product.id, now)
            except PlanChangeRefused as refused:
                # Another order changed the product after this one was validated: retrying cannot help.
                raise ApplicationError(f"item {item_id}: {refused.message}", refused.code, type="PlanChangeRefused", non_retryable=True) from refused
            previous = span.previous_offering_id
            grant_promotions(session, self.catalog, product, item_extras(order.request).get(item_id, (None, []))[1], span.effective_at, order_id)
            item.state = "completed"
            session.add(item)
            when = "now" if span.applied else f"at {span.effective_at.isoformat()}"
            record_step(session, order_id, f"change_plan[{item_id}]", "done", f"product {product.id}: {previous} -> {span.offering_id} {when}")
            record_event(session, customer_id=order.customer_id, billing_account_id=order.billing_account_id, kind="product.plan_changed",
                         message=f"Plan of {product.msisdn or product.id} changes from {previous} to {span.offering_id} {when}",
                         data={"productId": product.id, "orderId": order_id, "from": previous, "to": span.offering_id,
                               "effectiveAt": span.effective_at.isoformat()})
            if span.applied:
                emit_product_event(session, product, at=now)

    @activity.defn(name="start_billing")
    async def start_billing(self, billing_account_id: str, customer_id: str, activated: ProductActivated) -> None:
        gateway = WorkflowGateway(activity.client(), self.task_queue)
        await gateway.product_activated(billing_account_id, customer_id, activated)

    @activity.defn(name="finish_order")
    def finish_order(self, order_id: str, state: str, reason: str | None) -> None:
        with session_scope(self.db_url) as session:
            order = load_order(session, order_id)
            now = utcnow()
            changed = order.state != state
            order.state, order.state_reason = state, reason
            if state == OrderState.COMPLETED:
                order.completion_date = now
            cancels = open_cancel_requests(session, order_id)
            if state == OrderState.CANCELLED:
                order.cancellation_date = now
                order.cancellation_reason = next((c.reason for c in cancels if c.reason), reason)
            for cancel in cancels:
                # A cancel that arrived too late to stop the order ends with an error, as TMF622 says.
                cancel.state = "done" if state == OrderState.CANCELLED else "terminatedWithError"
                cancel.effective_at = now
                session.add(cancel)
            for item in order_items(session, order_id):
                if item.state != "completed" or state != OrderState.COMPLETED:
                    item.state = "completed" if state == OrderState.COMPLETED else state
                    session.add(item)
            session.add(order)
            record_step(session, order_id, "finish", "done" if state == OrderState.COMPLETED else state, reason)
            record_event(session, customer_id=order.customer_id, billing_account_id=order.billing_account_id, kind=f"order.{state}",
                         message=f"productOrder {order_id} {state}" + (f": {reason}" if reason else ""), data={"orderId": order_id})
            if changed:
                emit_order_event(session, order, at=now, catalog=self.catalog)

    @activity.defn(name="mark_cancelling")
    def mark_cancelling(self, order_id: str) -> None:
        with session_scope(self.db_url) as session:
            order = load_order(session, order_id)
            changed = order.state != OrderState.PENDING_CANCELLATION
            order.state = OrderState.PENDING_CANCELLATION
            session.add(order)
            if changed:
                emit_order_event(session, order, at=utcnow(), catalog=self.catalog)
            for cancel in open_cancel_requests(session, order_id):
                cancel.state = "inProgress"
                session.add(cancel)
            record_step(session, order_id, "cancel", "started")

