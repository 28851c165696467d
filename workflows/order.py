"""OrderWorkflow: one per TMF622 product order, from acknowledgement to an active, billed product.

Steps per item: reserve an MSISDN, send a TMF641 service order to the OSS, wait for its completion
(callback signal, with a status poll as fallback and an overall timeout). When every item is
provisioned the products are created and billing starts. On a failure or a cancellation the
compensations registered so far run in reverse (cancel service order, release number).

A `modify` item (a plan change of an existing product) needs no number and no service order: after
the point of no return its change is recorded (services.plan_changes: an upgrade at once, a downgrade
at the cycle end) and billing picks it up from the product's plan timeline."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities, activation_external_id
    from domain.orders import OrderState
    from workflows.messages import (
        ORDER_WORKFLOW,
        QUERY_ORDER_STATUS,
        SIGNAL_CANCEL_ORDER,
        SIGNAL_OSS_UPDATE,
        CancelOrder,
        OrderInput,
        OrderStatus,
        OssUpdate,
    )

MODIFY = "modify"
PLAN_CHANGE_PATCH = "order-plan-change-items"
OSS_FINAL_STATES = frozenset({"completed", "failed", "cancelled", "rejected"})
DB_CALL = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30))}
OSS_CALL = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=10, non_retryable_error_types=["OssRejected"]),
}
# Compensations must eventually succeed: they retry for a day before the order is left for a human.
COMPENSATION_CALL = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(days=1),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=5)),
}


class OrderFailed(Exception):
    pass


class OrderCancelled(Exception):
    pass


@workflow.defn(name=ORDER_WORKFLOW)
class OrderWorkflow:
    def __init__(self) -> None:
        self._oss_states: dict[str, str] = {}
        self._cancel: CancelOrder | None = None
        self._state = OrderState.ACKNOWLEDGED
        self._step = "received"
        self._reason: str | None = None
        self._order_id = ""
        self._point_of_no_return = False

    @workflow.signal(name=SIGNAL_OSS_UPDATE)
    def oss_update(self, update: OssUpdate) -> None:
        # Callbacks can repeat or arrive late; a final state is never overwritten.
        if self._oss_states.get(update.external_id) not in OSS_FINAL_STATES:
            self._oss_states[update.external_id] = update.state

    @workflow.signal(name=SIGNAL_CANCEL_ORDER)
    def cancel_order(self, request: CancelOrder) -> None:
        if self._cancel is None:
            self._cancel = request

    @workflow.query(name=QUERY_ORDER_STATUS)
    def order_status(self) -> OrderStatus:
        return OrderStatus(order_id=self._order_id, state=self._state, step=self._step, reason=self._reason)

    @workflow.run
    async def run(self, order: OrderInput) -> OrderStatus:
        self._order_id = order.order_id
        compensations: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        try:
            await self._provision(order, compensations)
            self._state = OrderState.COMPLETED
        except OrderCancelled:
            self._state, self._reason = OrderState.CANCELLED, self._cancel.reason if self._cancel else None
            await self._activity(OrderActivities.mark_cancelling, order.order_id, options=DB_CALL)
            await self._compensate(compensations)
        except (OrderFailed, ActivityError) as error:
            self._state, self._reason = OrderState.FAILED, _reason_of(error)
            await self._compensate(compensations)
        self._step = "finish"
        await self._activity(OrderActivities.finish_order, order.order_id, self._state, self._reason, options=DB_CALL)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.order_status()

    async def _provision(self, order: OrderInput, compensations: list) -> None:
        self._step = "validate"
        self._check_cancel()
        errors = await self._activity(OrderActivities.start_order, order.order_id, options=DB_CALL)
        if errors:
            raise OrderFailed("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self._state = OrderState.IN_PROGRESS
        service_states: dict[str, str] = {}
        for item in order.items:
            if item.action == MODIFY:
                continue
            self._check_cancel()
            self._step = f"reserve_msisdn[{item.item_id}]"
            msisdn = await self._activity(OrderActivities.reserve_msisdn, order.order_id, item.item_id, options=DB_CALL)
            compensations.append(("release_msisdn", lambda i=item.item_id: self._activity(OrderActivities.release_msisdn, order.order_id, i, options=COMPENSATION_CALL)))
            self._check_cancel()
            self._step = f"oss_service_order[{item.item_id}]"
            ref = await self._activity(
                OrderActivities.submit_service_order, order.order_id, item.item_id, msisdn, item.offering_id, order.customer_id, options=OSS_CALL
            )
            compensations.append(
                ("cancel_service_order", lambda i=item.item_id, so=ref.id: self._activity(OrderActivities.cancel_service_order, order.order_id, i, so, options=COMPENSATION_CALL))
            )
            self._step = f"await_oss[{item.item_id}]"
            state = await self._await_oss(order, activation_external_id(order.order_id, item.item_id), ref.id, ref.state)
            if state != "completed":
                raise OrderFailed(f"OSS service order {ref.id} for item {item.item_id} ended {state}")
            service_states[item.item_id] = state
        self._check_cancel()
        # From here on the customer has a working line: the order completes, a late cancel is refused.
        self._point_of_no_return = True
        for item in order.items:
            if item.action == MODIFY and workflow.patched(PLAN_CHANGE_PATCH):
                self._step = f"change_plan[{item.item_id}]"
                await self._activity(OrderActivities.change_plan, order.order_id, item.item_id, options=DB_CALL)
                continue
            self._step = f"create_product[{item.item_id}]"
            activated = await self._activity(OrderActivities.create_product, order.order_id, item.item_id, service_states[item.item_id], options=DB_CALL)
            self._step = f"start_billing[{item.item_id}]"
            await self._activity(OrderActivities.start_billing, order.billing_account_id, order.customer_id, activated, options=DB_CALL)

    async def _await_oss(self, order: OrderInput, external_id: str, service_order_id: str, initial_state: str) -> str:
        """Waits for the OSS callback; polls the service order when it is late; gives up at the overall timeout."""
        if initial_state in OSS_FINAL_STATES:
            return initial_state
        deadline = workflow.now() + timedelta(seconds=order.oss_total_timeout_s)
        while True:
            if self._oss_states.get(external_id) in OSS_FINAL_STATES:
                return self._oss_states[external_id]
            self._check_cancel()
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                raise OrderFailed(f"OSS did not complete service order {service_order_id} within {order.oss_total_timeout_s:.0f} s")
            try:
                await workflow.wait_condition(
                    lambda: self._oss_states.get(external_id) in OSS_FINAL_STATES or self._cancel is not None,
                    timeout=timedelta(seconds=min(order.oss_callback_wait_s, remaining)),
                )
            except asyncio.TimeoutError:
                polled = await self._activity(OrderActivities.get_service_order_state, service_order_id, options=OSS_CALL)
                if polled in OSS_FINAL_STATES:
                    self._oss_states[external_id] = polled

    def _check_cancel(self) -> None:
        if self._cancel is not None and not self._point_of_no_return:
            raise OrderCancelled()

    async def _compensate(self, compensations: list) -> None:
        for name, compensation in reversed(compensations):
            self._step = f"compensate:{name}"
            await compensation()

    async def _activity(self, fn, *args, options: dict):
        return await workflow.execute_activity_method(fn, args=list(args), **options)


def _reason_of(error: BaseException) -> str:
    cause = error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause)
