"""OrderWorkflow on the time-skipping server with real activities, a real database and the OSS simulator."""
from __future__ import annotations

import asyncio

from sqlmodel import select

from domain.orders import OrderState
from persistence.db import session_scope
from persistence.tables import CancelProductOrder, MsisdnPoolEntry, OrderStep, Product, ProductOrder, ProductOrderItem
from tests.support.records import create_billing_account, create_customer, create_order, now
from workflows.messages import (
    SIGNAL_CANCEL_ORDER,
    CancelOrder,
    OrderInput,
    OrderItemInput,
    OrderStatus,
    billing_account_workflow_id,
)
from adapters.temporal.client import WorkflowGateway


async def _start(client, settings, db_url, offerings=("mobile-s",), *, total_timeout_s=3600.0):
    customer_id = create_customer(db_url)
    account_id = create_billing_account(db_url, customer_id)
    order_id = create_order(db_url, customer_id, account_id, list(offerings))
    order = OrderInput(order_id=order_id, customer_id=customer_id, billing_account_id=account_id,
                       items=[OrderItemInput(item_id=str(i), offering_id=o) for i, o in enumerate(offerings, start=1)],
                       oss_callback_wait_s=30.0, oss_total_timeout_s=total_timeout_s)
    handle = await WorkflowGateway(client, settings.task_queue).start_order(order)
    return handle, order


def _order_row(db_url, order_id):
    with session_scope(db_url) as session:
        order = session.get(ProductOrder, order_id)
        items = list(session.exec(select(ProductOrderItem).where(ProductOrderItem.order_id == order_id)))
        steps = [(s.step, s.status) for s in session.exec(select(OrderStep).where(OrderStep.order_id == order_id).order_by(OrderStep.id))]
        return order, items, steps


def _pool_status(db_url, msisdn):
    with session_scope(db_url) as session:
        return session.get(MsisdnPoolEntry, msisdn).status


async def test_happy_path_activates_product_and_starts_billing(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    async with running_worker(settings) as client:
        handle, order = await _start(client, settings, db_url, ("mobile-s", "mobile-l"))
        status = await handle.result()
        assert status.state == OrderState.COMPLETED

        row, items, steps = _order_row(db_url, order.order_id)
        assert row.state == "completed" and row.completion_date is not None
        assert {i.state for i in items} == {"completed"}
        with session_scope(db_url) as session:
            products = list(session.exec(select(Product).where(Product.order_id == order.order_id)))
        assert sorted(p.offering_id for p in products) == ["mobile-l", "mobile-s"]
        assert {p.status for p in products} == {"active"}
        for product in products:
            assert _pool_status(db_url, product.msisdn) == "assigned"
            service = (await oss_http.get(f"/sim/services/{product.msisdn}")).json()
            assert service["state"] == "active"
        assert ("finish", "done") in steps

        description = await handle.describe()
        attributes = {k.name: v for k, v in ((p.key, p.value) for p in description.typed_search_attributes)}
        assert attributes == {"CustomerId": order.customer_id, "OrderId": order.order_id}
        account = await client.get_workflow_handle(billing_account_workflow_id(order.billing_account_id)).describe()
        assert account.status.name == "RUNNING"
        # TemporalChangeVersion is Temporal's own record of the workflow.patched() markers the run went through.
        account_attributes = {p.key.name: p.value for p in account.typed_search_attributes if p.key.name != "TemporalChangeVersion"}
        assert account_attributes == {"CustomerId": order.customer_id, "BillingAccountId": order.billing_account_id}


async def test_oss_failure_compensates_and_fails_the_order(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    await oss_http.post("/sim/rules", json={"match": {"productOfferingId": "mobile-l"}, "behaviour": "fail", "times": 1})
    async with running_worker(settings) as client:
        handle, order = await _start(client, settings, db_url, ("mobile-l",))
        status = await handle.result()
    assert status.state == OrderState.FAILED
    assert "failed" in status.reason
    row, items, steps = _order_row(db_url, order.order_id)
    assert row.state == "failed" and "ended failed" in row.state_reason
    assert ("release_msisdn[1]", "compensated") in steps and ("oss_service_order[1]", "compensated") in steps
    # Compensations run in reverse: the service order is cancelled before the number goes back.
    assert steps.index(("oss_service_order[1]", "compensated")) < steps.index(("release_msisdn[1]", "compensated"))
    assert _pool_status(db_url, items[0].msisdn) == "free"
    with session_scope(db_url) as session:
        assert session.exec(select(Product).where(Product.order_id == order.order_id)).first() is None


async def test_oss_that_never_calls_back_times_out_and_compensates(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    async with running_worker(settings) as client:
        await oss_http.post("/sim/rules", json={"match": {"productOfferingId": "mobile-s"}, "behaviour": "no-callback", "times": 1})
        handle, order = await _start(client, settings, db_url, ("mobile-s",), total_timeout_s=600)
        status = await handle.result()
    assert status.state == OrderState.FAILED
    assert "did not complete" in status.reason
    _, items, _ = _order_row(db_url, order.order_id)
    sim_order = (await oss_http.get(f"/tmf-api/serviceOrdering/v4/serviceOrder/{items[0].service_order_id}")).json()
    assert sim_order["state"] == "cancelled"
    assert _pool_status(db_url, items[0].msisdn) == "free"


async def test_cancellation_midway_runs_compensations(running_worker, make_settings, db_url, oss_http, ts_env):
    settings = make_settings()
    await oss_http.post("/sim/rules", json={"match": {"productOfferingId": "mobile-s"}, "behaviour": "no-callback", "times": 1})
    async with running_worker(settings) as client:
        handle, order = await _start(client, settings, db_url, ("mobile-s",))
        for _ in range(100):
            if (await handle.query("order_status", result_type=OrderStatus)).step.startswith("await_oss"):
                break
            await asyncio.sleep(0.05)
        with session_scope(db_url) as session:
            session.add(CancelProductOrder(id="c-" + order.order_id, order_id=order.order_id, reason="customer changed their mind", requested_at=now()))
        await handle.signal(SIGNAL_CANCEL_ORDER, CancelOrder(cancel_id="c-" + order.order_id, reason="customer changed their mind"))
        status = await handle.result()
    assert status.state == OrderState.CANCELLED
    row, items, steps = _order_row(db_url, order.order_id)
    assert row.state == "cancelled" and row.cancellation_reason == "customer changed their mind"
    assert _pool_status(db_url, items[0].msisdn) == "free"
    sim_order = (await oss_http.get(f"/tmf-api/serviceOrdering/v4/serviceOrder/{items[0].service_order_id}")).json()
    assert sim_order["state"] == "cancelled"
    with session_scope(db_url) as session:
        assert session.get(CancelProductOrder, "c-" + order.order_id).state == "done"
