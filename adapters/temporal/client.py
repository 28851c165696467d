"""Connecting to Temporal, and the few workflow operations the API and activities need."""
from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError

from workflows.messages import (
    BILLING_ACCOUNT_WORKFLOW,
    ORDER_WORKFLOW,
    SIGNAL_CANCEL_ORDER,
    SIGNAL_OSS_UPDATE,
    SIGNAL_PAYMENT_RECEIVED,
    SIGNAL_PRODUCT_ACTIVATED,
    SIGNAL_SPENDING_THRESHOLD,
    BillingAccountInput,
    CancelOrder,
    OrderInput,
    OrderStatus,
    OssUpdate,
    PaymentReceived,
    ProductActivated,
    SpendingThresholdCrossed,
    billing_account_workflow_id,
    order_workflow_id,
)

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
BILLING_ACCOUNT_ID = SearchAttributeKey.for_keyword("BillingAccountId")


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)


class WorkflowGateway:
    """Starts and signals o2c's workflows. Every start is keyed by a business id, so a repeat finds the same run."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start_order(self, order: OrderInput) -> WorkflowHandle:
        attributes = TypedSearchAttributes(
            [SearchAttributePair(CUSTOMER_ID, order.customer_id), SearchAttributePair(ORDER_ID, order.order_id)]
        )
        try:
            return await self.client.start_workflow(
                ORDER_WORKFLOW,
                order,
                id=order_workflow_id(order.order_id),
                task_queue=self.task_queue,
                search_attributes=attributes,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                result_type=OrderStatus,
            )
        except WorkflowAlreadyStartedError:
            # The order's workflow exists already, which is exactly what a repeated submission wants.
            return self.client.get_workflow_handle(order_workflow_id(order.order_id), result_type=OrderStatus)

    async def signal_oss_update(self, order_id: str, update: OssUpdate) -> None:
        await self.client.get_workflow_handle(order_workflow_id(order_id)).signal(SIGNAL_OSS_UPDATE, update)

    async def cancel_order(self, order_id: str, cancel: CancelOrder) -> None:
        await self.client.get_workflow_handle(order_workflow_id(order_id)).signal(SIGNAL_CANCEL_ORDER, cancel)

    async def product_activated(self, billing_account_id: str, customer_id: str, event: ProductActivated) -> None:
        """Signal-with-start: the account's workflow is started by its first product, signalled by later ones."""
        attributes = TypedSearchAttributes(
            [SearchAttributePair(CUSTOMER_ID, customer_id), SearchAttributePair(BILLING_ACCOUNT_ID, billing_account_id)]
        )
        await self.client.start_workflow(
            BILLING_ACCOUNT_WORKFLOW,
            BillingAccountInput(billing_account_id=billing_account_id, customer_id=customer_id),
            id=billing_account_workflow_id(billing_account_id),
            task_queue=self.task_queue,
            search_attributes=attributes,
            start_signal=SIGNAL_PRODUCT_ACTIVATED,
            start_signal_args=[event],
        )

    async def payment_received(self, billing_account_id: str, payment: PaymentReceived) -> None:
        await self.client.get_workflow_handle(billing_account_workflow_id(billing_account_id)).signal(SIGNAL_PAYMENT_RECEIVED, payment)

    async def spending_threshold(self, billing_account_id: str, event: SpendingThresholdCrossed) -> None:
        await self.client.get_workflow_handle(billing_account_workflow_id(billing_account_id)).signal(SIGNAL_SPENDING_THRESHOLD, event)
