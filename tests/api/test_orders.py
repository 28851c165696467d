"""TMF622 product orders: acceptance, workflow start, idempotency, listing and cancellation."""
from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey

from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from persistence.db import session_scope
from persistence.tables import OrderStep, ProductOrder
from sqlmodel import select
from tests.api.conftest import (
    CANCEL_PATH,
    CRM,
    ORDER_PATH,
    SUPPORT,
    TASK_QUEUE,
    api_settings,
    client_for,
    make_account,
    make_customer,
    order_body,
    signals_received,
)


def fields(response) -> dict[str, str]:
    return {e["field"]: e["code"] for e in response.json().get("errors", [])}


async def new_account(client) -> tuple[str, str]:
    account = await make_account(client)
    return account["relatedParty"][0]["id"], account["id"]


async def test_order_is_stored_and_its_workflow_started(client, temporal_client):
    customer_id, account_id = await new_account(client)
    response = await client.post(ORDER_PATH, headers=CRM, json={**order_body(customer_id, account_id, "mobile-s", "mobile-l"), "externalId": "crm-42"})
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["@type"] == "ProductOrder"
    assert order["state"] == "acknowledged"
    assert order["externalId"] == "crm-42"
    assert order["href"] == f"{ORDER_PATH}/{order['id']}"
    assert order["orderDate"].endswith("Z")
    assert order["billingAccount"]["id"] == account_id
    assert order["relatedParty"][0]["id"] == customer_id
    assert [(i["id"], i["action"], i["productOffering"]["id"], i["productOffering"]["name"]) for i in order["productOrderItem"]] == [
        ("1", "add", "mobile-s", "Mobile S"),
        ("2", "add", "mobile-l", "Mobile L"),
    ]
    assert [s["step"] for s in order["@o2cSteps"]] == ["received"]

    description = await temporal_client.get_workflow_handle(f"order-{order['id']}").describe()
    assert description.workflow_type == "OrderWorkflow"
    assert description.task_queue == TASK_QUEUE
    assert description.status == WorkflowExecutionStatus.RUNNING
    attributes = description.typed_search_attributes
    assert attributes.get(SearchAttributeKey.for_keyword("CustomerId")) == customer_id
    assert attributes.get(SearchAttributeKey.for_keyword("OrderId")) == order["id"]

    fetched = await client.get(order["href"], headers=SUPPORT)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == order["id"]


async def test_idempotency_key_returns_the_first_order_or_refuses_another_body(client, temporal_client):
    customer_id, account_id = await new_account(client)
    key = {"Idempotency-Key": f"idem-{uuid.uuid4()}"}
    body = order_body(customer_id, account_id, "mobile-s")
    first = await client.post(ORDER_PATH, headers={**CRM, **key}, json=body)
    assert first.status_code == 201

    # Same body in another key order and spacing: still the same request.
    reordered = dict(reversed(list(body.items())))
    again = await client.post(ORDER_PATH, headers={**CRM, **key}, json=reordered)
    assert again.status_code == 200
    assert again.json() == first.json()

    other = await client.post(ORDER_PATH, headers={**CRM, **key}, json=order_body(customer_id, account_id, "mobile-l"))
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"

    listed = await client.get(ORDER_PATH, headers=CRM, params={"customerId": customer_id})
    assert [o["id"] for o in listed.json()] == [first.json()["id"]]
    # One order, one workflow run.
    runs = [w async for w in temporal_client.list_workflows(f"WorkflowId = 'order-{first.json()['id']}'")]
    assert len(runs) == 1


async def test_order_validation_lists_every_problem(client):
    customer_id, account_id = await new_account(client)
    other_customer = await make_customer(client)
    body = {
        "relatedParty": [{"id": other_customer["id"], "role": "customer"}],
        "billingAccount": {"id": account_id},
        "productOrderItem": [
            {"id": "1", "action": "add", "productOffering": {"id": "mobile-xxl"}},
            {"id": "2", "action": "add", "productOffering": {"id": "mobile-legacy"}},
            {"id": "2", "action": "delete", "productOffering": {"id": "mobile-s"}},
            {"id": "4", "action": "add"},
        ],
    }
    response = await client.post(ORDER_PATH, headers=CRM, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_order"
    assert fields(response) == {
        "billingAccount.id": "billing_account_mismatch",
        "productOrderItem[0].productOffering.id": "unknown_offering",
        "productOrderItem[1].productOffering.id": "offering_retired",
        "productOrderItem[2].id": "duplicate",
        "productOrderItem[2].action": "unsupported_action",
        "productOrderItem[3].productOffering.id": "required",
    }

    unknown = await client.post(ORDER_PATH, headers=CRM, json=order_body("nobody", "no-account", "mobile-s"))
    assert fields(unknown) == {"relatedParty[0].id": "unknown_customer", "billingAccount.id": "unknown_billing_account"}

    shape = await client.post(ORDER_PATH, headers=CRM, json={"relatedParty": [], "productOrderItem": [{"action": "add"}]})
    assert shape.status_code == 422
    assert fields(shape) == {"relatedParty": "too_short", "billingAccount": "required", "productOrderItem[0].id": "required"}

    empty = await client.post(ORDER_PATH, headers=CRM, json={**order_body(customer_id, account_id), "productOrderItem": []})
    assert fields(empty) == {"productOrderItem": "required"}

    # Nothing was stored for the refused orders.
    assert (await client.get(ORDER_PATH, headers=CRM, params={"customerId": customer_id})).json() == []


async def test_order_list_filters_and_paging(client, db_url):
    customer_id, account_id = await new_account(client)
    ids = []
    for _ in range(3):
        response = await client.post(ORDER_PATH, headers=CRM, json=order_body(customer_id, account_id))
        ids.append(response.json()["id"])
    with session_scope(db_url) as session:
        session.get(ProductOrder, ids[0]).state = "completed"

    everything = await client.get(ORDER_PATH, headers=SUPPORT, params={"relatedParty.id": customer_id})
    assert everything.headers["X-Total-Count"] == "3"
    assert {o["id"] for o in everything.json()} == set(ids)

    completed = await client.get(ORDER_PATH, headers=SUPPORT, params={"relatedParty.id": customer_id, "state": "completed"})
    assert [o["id"] for o in completed.json()] == [ids[0]]
    acknowledged = await client.get(ORDER_PATH, headers=SUPPORT, params={"customerId": customer_id, "state": "acknowledged"})
    assert {o["id"] for o in acknowledged.json()} == set(ids[1:])

    page = await client.get(ORDER_PATH, headers=SUPPORT, params={"customerId": customer_id, "limit": 2, "offset": 2})
    assert len(page.json()) == 1
    assert page.headers["X-Total-Count"] == "3"
    assert page.headers["X-Result-Count"] == "1"


async def test_failed_order_shows_its_reason_as_a_note(client, db_url):
    customer_id, account_id = await new_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer_id, account_id))).json()
    with session_scope(db_url) as session:
        row = session.get(ProductOrder, order["id"])
        row.state, row.state_reason = "failed", "OSS rejected the activation: no coverage"
    body = (await client.get(f"{ORDER_PATH}/{order['id']}", headers=SUPPORT)).json()
    assert body["state"] == "failed"
    assert body["stateReason"] == "OSS rejected the activation: no coverage"
    assert body["note"][0]["text"] == "OSS rejected the activation: no coverage"


async def test_cancel_signals_the_workflow_and_refuses_finished_orders(client, db_url, temporal_client):
    customer_id, account_id = await new_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer_id, account_id))).json()

    response = await client.post(CANCEL_PATH, headers=CRM, json={"productOrder": {"id": order["id"]}, "cancellationReason": "changed my mind"})
    assert response.status_code == 201, response.text
    cancel = response.json()
    assert cancel["@type"] == "CancelProductOrder"
    assert cancel["state"] == "acknowledged"
    assert cancel["productOrder"]["id"] == order["id"]
    signals = await signals_received(temporal_client, f"order-{order['id']}")
    assert signals == [("cancel_order", [{"cancel_id": cancel["id"], "reason": "changed my mind"}])]

    # Asking again while the first request is open is a no-op that returns the open request.
    again = await client.post(CANCEL_PATH, headers=CRM, json={"productOrder": {"id": order["id"]}})
    assert again.status_code == 200
    assert again.json()["id"] == cancel["id"]
    assert len(await signals_received(temporal_client, f"order-{order['id']}")) == 1

    assert (await client.get(f"{CANCEL_PATH}/{cancel['id']}", headers=SUPPORT)).json()["cancellationReason"] == "changed my mind"
    listed = await client.get(CANCEL_PATH, headers=SUPPORT, params={"productOrder.id": order["id"]})
    assert [c["id"] for c in listed.json()] == [cancel["id"]]

    done = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer_id, account_id))).json()
    with session_scope(db_url) as session:
        session.get(ProductOrder, done["id"]).state = "completed"
    refused = await client.post(CANCEL_PATH, headers=CRM, json={"productOrder": {"id": done["id"]}})
    assert refused.status_code == 409
    assert refused.json()["code"] == "order_not_cancellable"

    unknown = await client.post(CANCEL_PATH, headers=CRM, json={"productOrder": {"id": str(uuid.uuid4())}})
    assert unknown.status_code == 422
    assert fields(unknown) == {"productOrder.id": "unknown_order"}


async def test_temporal_down_keeps_the_order_and_a_retry_starts_it(db_url, temporal_env, temporal_client):
    down = create_app(api_settings(db_url, temporal_address="127.0.0.1:1"))
    up = create_app(api_settings(db_url), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    key = {"Idempotency-Key": f"idem-{uuid.uuid4()}"}
    async with client_for(down) as down_http, client_for(up) as up_http:
        account = await make_account(up_http)
        body = order_body(account["relatedParty"][0]["id"], account["id"])

        refused = await down_http.post(ORDER_PATH, headers={**CRM, **key}, json=body)
        assert refused.status_code == 503
        assert refused.json()["code"] == "temporal_unavailable"
        assert refused.headers["Retry-After"]
        with session_scope(db_url) as session:
            stored = session.exec(select(ProductOrder).where(ProductOrder.idempotency_key == key["Idempotency-Key"])).one()
            steps = session.exec(select(OrderStep).where(OrderStep.order_id == stored.id)).all()
        assert stored.state == "acknowledged"
        assert ("start_workflow", "failed") in {(s.step, s.status) for s in steps}

        retried = await up_http.post(ORDER_PATH, headers={**CRM, **key}, json=body)
        assert retried.status_code == 200
        assert retried.json()["id"] == stored.id
    description = await temporal_client.get_workflow_handle(f"order-{stored.id}").describe()
    assert description.status == WorkflowExecutionStatus.RUNNING


async def test_cancel_of_an_order_whose_workflow_never_started(db_url, temporal_env):
    down = create_app(api_settings(db_url, temporal_address="127.0.0.1:1"))
    up = create_app(api_settings(db_url), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    async with client_for(down) as down_http, client_for(up) as up_http:
        account = await make_account(up_http)
        await down_http.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))
        order = (await up_http.get(ORDER_PATH, headers=CRM, params={"customerId": account["relatedParty"][0]["id"]})).json()[0]

        # Nobody works on the order, so the API cancels it itself.
        cancel = await up_http.post(CANCEL_PATH, headers=CRM, json={"productOrder": {"id": order["id"]}, "cancellationReason": "too slow"})
        assert cancel.status_code == 201
        assert cancel.json()["state"] == "done"
        after = (await up_http.get(f"{ORDER_PATH}/{order['id']}", headers=CRM)).json()
        assert after["state"] == "cancelled"
        assert after["cancellationReason"] == "too slow"
        assert after["cancellationDate"] is not None
