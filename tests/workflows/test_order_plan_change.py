"""A TMF622 modify item through the OrderWorkflow (time-skipping server, real activities, real database):
no number and no OSS service order; an upgrade changes the product's plan at once, with its promotion."""
from __future__ import annotations

from sqlmodel import select

from adapters.temporal.client import WorkflowGateway
from domain.orders import OrderState
from persistence.db import session_scope
from persistence.tables import MsisdnPoolEntry, OrderStep, Product, ProductDiscount, ProductOrderItem, ProductPlanSpan
from tests.support.records import create_billing_account, create_customer, create_modify_order, create_order
from workflows.messages import OrderInput, OrderItemInput


async def test_an_upgrade_order_changes_the_plan_without_a_new_number_or_service_order(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    customer_id = create_customer(db_url)
    account_id = create_billing_account(db_url, customer_id)
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        add_id = create_order(db_url, customer_id, account_id, ["mobile-s"])
        added = await gateway.start_order(OrderInput(order_id=add_id, customer_id=customer_id, billing_account_id=account_id,
                                                     items=[OrderItemInput(item_id="1", offering_id="mobile-s")]))
        assert (await added.result()).state == OrderState.COMPLETED
        with session_scope(db_url) as session:
            product = session.exec(select(Product).where(Product.order_id == add_id)).one()
            numbers_before = len(session.exec(select(MsisdnPoolEntry)).all())
        services_before = (await oss_http.get(f"/sim/services/{product.msisdn}")).json()

        modify_id = create_modify_order(db_url, customer_id, account_id, product.id, "mobile-l", "half-price-3")
        handle = await gateway.start_order(OrderInput(order_id=modify_id, customer_id=customer_id, billing_account_id=account_id,
                                                      items=[OrderItemInput(item_id="1", offering_id="mobile-l", action="modify")]))
        status = await handle.result()
        assert status.state == OrderState.COMPLETED, status

    with session_scope(db_url) as session:
        changed = session.get(Product, product.id)
        spans = session.exec(select(ProductPlanSpan).where(ProductPlanSpan.product_id == product.id)).all()
        discounts = session.exec(select(ProductDiscount).where(ProductDiscount.product_id == product.id)).all()
        steps = [(s.step, s.status) for s in session.exec(select(OrderStep).where(OrderStep.order_id == modify_id).order_by(OrderStep.id))]
        item = session.get(ProductOrderItem, (modify_id, "1"))
        numbers_after = len(session.exec(select(MsisdnPoolEntry)).all())
    assert (changed.offering_id, changed.name, changed.msisdn, changed.status) == ("mobile-l", "Mobile L", product.msisdn, "active")
    assert [(s.previous_offering_id, s.offering_id, s.applied, s.id) for s in spans] == [("mobile-s", "mobile-l", True, f"{modify_id}:1")]
    assert [(d.promotion_id, d.kind, d.value, d.applies_to, d.cycles, d.first_cycle_at) for d in discounts] == [
        ("half-price-3", "percent", "50", "recurring", 3, spans[0].effective_at)]
    assert ("change_plan[1]", "done") in steps and ("finish", "done") in steps
    assert not any(step.startswith(("reserve_msisdn", "oss_service_order", "create_product")) for step, _ in steps)
    assert item.state == "completed" and item.msisdn is None and item.service_order_id is None
    assert numbers_after == numbers_before  # no number reserved
    assert (await oss_http.get(f"/sim/services/{product.msisdn}")).json() == services_before
