"""TMF641 service order state change callbacks routed to order workflows."""
from __future__ import annotations

import uuid

from tests.api.conftest import CRM, ORDER_PATH, OSS, OSS_PATH, make_account, order_body, signals_received


def event(external_id: str, state: str = "completed", service_order_id: str | None = None) -> dict:
    return {
        "eventId": str(uuid.uuid4()),
        "eventTime": "2026-03-01T10:00:00Z",
        "eventType": "ServiceOrderStateChangeEvent",
        "event": {"serviceOrder": {"id": service_order_id or f"so-{uuid.uuid4().hex[:8]}", "externalId": external_id, "state": state}},
    }


async def test_activation_callback_reaches_the_order_workflow(client, temporal_client):
    account = await make_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))).json()
    callback = event(f"{order['id']}:1", service_order_id="so-1")

    response = await client.post(OSS_PATH, headers=OSS, json=callback)
    assert response.status_code == 204, response.text
    # The OSS delivers at least once; a repeat is accepted and the workflow ignores it.
    assert (await client.post(OSS_PATH, headers=OSS, json=callback)).status_code == 204

    signals = await signals_received(temporal_client, f"order-{order['id']}")
    expected = {"service_order_id": "so-1", "external_id": f"{order['id']}:1", "state": "completed"}
    assert signals == [("oss_update", [expected]), ("oss_update", [expected])]


async def test_other_service_orders_are_ignored_and_unknown_orders_are_404(client):
    assert (await client.post(OSS_PATH, headers=OSS, json=event("bar:some-product"))).status_code == 204
    assert (await client.post(OSS_PATH, headers=OSS, json=event("no-colon-at-all"))).status_code == 204

    unknown = await client.post(OSS_PATH, headers=OSS, json=event(f"{uuid.uuid4()}:1"))
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"

    account = await make_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))).json()
    unknown_item = await client.post(OSS_PATH, headers=OSS, json=event(f"{order['id']}:99"))
    assert unknown_item.status_code == 404


async def test_malformed_callbacks_are_422(client):
    bad = event("x:y")
    bad["eventType"] = "ServiceOrderCreateEvent"
    del bad["event"]["serviceOrder"]["state"]
    response = await client.post(OSS_PATH, headers=OSS, json=bad)
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"eventType", "event.serviceOrder.state"}
