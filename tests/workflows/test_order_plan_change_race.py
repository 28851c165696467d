"""Two TMF622 modify orders for one product that race (time-skipping server, real activities, real database): both
pass validation before either records its change; under the product's lock only the first change is recorded, the
other order ends failed with the reason, and neither hangs in progress (before, the second downgrade's span hit
uq_product_plan_span_product_effective and change_plan retried for ever after the point of no return)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from adapters.temporal.client import WorkflowGateway
from domain.orders import OrderState
from persistence.db import session_scope
from persistence.tables import OrderStep, Product, ProductOrder, ProductOrderItem, ProductPlanSpan
from tests.support.billing import eventually, open_account
from tests.support.records import create_modify_order, now
from worker import WORKFLOWS, build_activities
from workflows.messages import OrderInput, OrderItemInput


def _finished(db_url: str, order_ids: list[str]) -> bool:
    with session_scope(db_url) as session:
        return all(session.get(ProductOrder, o).state in (OrderState.COMPLETED, OrderState.FAILED) for o in order_ids)


def _racing_activities(settings, racers: int) -> list:
    """The worker's activities, but `start_order` returns only once every racing order has been validated: both
    orders pass the validation's pending-change check before either records its change (the race, made certain)."""
    activities = build_activities(settings)
    real = next(a for a in activities if getattr(a, "__name__", "") == "start_order")
    barrier = threading.Barrier(racers, timeout=60)

    @activity.defn(name="start_order")
    def start_order(order_id: str) -> list[dict]:
        errors = real(order_id)
        barrier.wait()
        return errors

    return [start_order if a is real else a for a in activities]


@pytest.mark.parametrize(("plan", "to"), [
    ("mobile-l", ["mobile-s", "mobile-s"]),  # two downgrades: both would take effect at the cycle end
    ("mobile-s", ["mobile-l", "mobile-l"]),  # two upgrades: both at once, the second over the first unseen
])
async def test_of_two_racing_plan_changes_one_completes_and_the_other_fails_with_the_reason(ts_env, make_settings, db_url, oss_http, plan, to):
    settings = make_settings()
    account = await open_account(db_url, oss_http, [plan], activated_at=now() - timedelta(days=40))
    product_id = account.products[0].product_id
    order_ids = [create_modify_order(db_url, account.customer_id, account.account_id, product_id, offering) for offering in to]
    with ThreadPoolExecutor(max_workers=32) as executor:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=WORKFLOWS, activities=_racing_activities(settings, len(order_ids)),
                          activity_executor=executor, max_concurrent_activities=32):
            gateway = WorkflowGateway(ts_env.client, settings.task_queue)
            handles = [await gateway.start_order(OrderInput(order_id=order_id, customer_id=account.customer_id, billing_account_id=account.account_id,
                                                            items=[OrderItemInput(item_id="1", offering_id=offering, action="modify")]))
                       for order_id, offering in zip(order_ids, to, strict=True)]
            # Neither hangs: change_plan's retries after the point of no return would keep an order in progress for ever.
            # Polled in real time: waiting on result() would let the server skip time past the held activities' timeouts.
            await eventually(lambda: _finished(db_url, order_ids), timeout_s=60)
            results = [await h.result() for h in handles]

    by_state = {status.state: status for status in results}
    assert sorted(s.state for s in results) == sorted([OrderState.COMPLETED, OrderState.FAILED]), results
    winner, failed = by_state[OrderState.COMPLETED].order_id, by_state[OrderState.FAILED]
    loser = failed.order_id
    # Refused at its validation, before anything was recorded: nothing to undo.
    assert f"product {product_id} is being changed by productOrder {winner}" in (failed.reason or ""), failed
    won = to[order_ids.index(winner)]
    with session_scope(db_url) as session:
        spans = session.exec(select(ProductPlanSpan).where(ProductPlanSpan.product_id == product_id)).all()
        orders = {o: session.get(ProductOrder, o) for o in order_ids}
        item = session.get(ProductOrderItem, (loser, "1"))
        steps = [(s.step, s.status) for s in session.exec(select(OrderStep).where(OrderStep.order_id == loser).order_by(OrderStep.id))]
        product = session.get(Product, product_id)
    assert [(s.order_id, s.previous_offering_id, s.offering_id) for s in spans] == [(winner, plan, won)]
    assert orders[winner].state == OrderState.COMPLETED
    assert orders[loser].state == OrderState.FAILED and f"is being changed by productOrder {winner}" in orders[loser].state_reason
    assert item.state == OrderState.FAILED
    assert not any(step.startswith("change_plan") for step, _ in steps) and steps[-1][0] == "finish"
    # An upgrade applies at once, a downgrade waits for the cycle end.
    assert product.offering_id == (won if spans[0].applied else plan)


async def test_a_change_recorded_after_the_validation_refuses_the_other_item_without_retries(make_settings, db_url, oss_http):
    """The last guard, under the product's lock when the change is recorded: of two validated items for one product
    carried out at the same time, one is recorded and the other fails non-retryable with the reason (before, the second
    downgrade's span broke uq_product_plan_span_product_effective, an error Temporal retried for ever)."""
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-l"], activated_at=now() - timedelta(days=40))
    product_id = account.products[0].product_id
    order_ids = [create_modify_order(db_url, account.customer_id, account.account_id, product_id, "mobile-s") for _ in range(2)]
    change_plan = next(a for a in build_activities(settings) if getattr(a, "__name__", "") == "change_plan")
    barrier = threading.Barrier(2, timeout=30)

    def carry_out(order_id: str) -> ApplicationError | None:
        barrier.wait()
        try:
            change_plan(order_id, "1")
        except ApplicationError as refused:
            return refused
        return None

    outcomes = await asyncio.gather(*(asyncio.to_thread(carry_out, order_id) for order_id in order_ids))
    [refused] = [o for o in outcomes if o is not None]
    assert refused.non_retryable and refused.type == "PlanChangeRefused"
    assert refused.message == f"item 1: product {product_id} has a plan change waiting for the cycle end"
    loser = order_ids[outcomes.index(refused)]
    with session_scope(db_url) as session:
        spans = session.exec(select(ProductPlanSpan).where(ProductPlanSpan.product_id == product_id)).all()
        item = session.get(ProductOrderItem, (loser, "1"))
    assert [(s.order_id, s.offering_id, s.applied) for s in spans] == [(order_ids[1 - order_ids.index(loser)], "mobile-s", False)]
    assert item.state != "completed"
