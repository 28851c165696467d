"""The whole system as separate processes, driven over HTTP: an order to activation, and the demo story."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import httpx
from temporalio.client import Client

from o2c_cli.demo import run_demo

ORDER = "/tmf-api/productOrderingManagement/v4/productOrder"


def _customer_and_account(api: httpx.Client) -> tuple[str, str]:
    customer = api.post("/tmf-api/customerManagement/v4/customer", json={"name": "E2E Kunde"}).json()
    account = api.post("/tmf-api/accountManagement/v4/billingAccount", json={
        "name": "E2E", "relatedParty": [{"id": customer["id"], "role": "customer"}], "defaultPaymentMethod": {"id": "4242424242424242"},
    }).json()
    return customer["id"], account["id"]


async def test_order_posted_over_http_completes_and_is_found_by_customer_id(stack):
    api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": "dev-crm-key"}, timeout=30)
    customer_id, account_id = _customer_and_account(api)
    body = {"relatedParty": [{"id": customer_id, "role": "customer"}], "billingAccount": {"id": account_id},
            "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-l"}}]}
    key = str(uuid.uuid4())
    created = api.post(ORDER, json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    repeat = api.post(ORDER, json=body, headers={"Idempotency-Key": key})
    assert repeat.status_code == 200 and repeat.json()["id"] == created.json()["id"]
    order_id = created.json()["id"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        order = api.get(f"{ORDER}/{order_id}").json()
        if order["state"] in ("completed", "failed"):
            break
        time.sleep(0.3)
    assert order["state"] == "completed", order
    product_ref = order["productOrderItem"][0]["product"]
    product = api.get(f"/tmf-api/productInventory/v4/product/{product_ref['id']}").json()
    assert product["status"] == "active"

    # Support staff find every workflow of the customer by CustomerId (the Web UI runs the same query).
    client = await Client.connect(stack.temporal_address)
    found: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(found) < 2:
        found = {w.id async for w in client.list_workflows(f'CustomerId="{customer_id}"')}
        time.sleep(0.5)
    assert found == {f"order-{order_id}", f"billing-account-{account_id}"}


def test_demo_story_runs_end_to_end_twice(stack):
    lines: list[str] = []
    assert run_demo(stack.api_url, stack.oss_url, stack.admin_key, out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    for step in ("1. order", "2. usage", "3. invoice", "4. card payment", "5. ", "barred in the OSS", "6. bank transfer", "7. line"):
        assert step in text, text
    # Running it twice works: a second customer goes through the same story.
    second: list[str] = []
    assert run_demo(stack.api_url, stack.oss_url, stack.admin_key, out=second.append) == 0, "\n".join(second)


def test_spending_limit_crossed_by_usage_notifies_and_bars_through_the_oss(stack):
    """Usage posted to the API crosses a hard spending cap: ingestion writes the crossing to the outbox,
    the worker's relay signals the account's workflow, which sends the notices and bars the line."""
    api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": stack.admin_key}, timeout=30)
    customer = api.post("/tmf-api/customerManagement/v4/customer", json={"name": "Limit Kunde"}).json()
    account = api.post("/tmf-api/accountManagement/v4/billingAccount", json={
        "name": "Limit", "relatedParty": [{"id": customer["id"], "role": "customer"}], "defaultPaymentMethod": {"id": "4242424242424242"},
        "spendingLimit": {"amount": {"unit": "EUR", "value": "1.00"}, "hardCap": True},
    }).json()
    body = {"relatedParty": [{"id": customer["id"], "role": "customer"}], "billingAccount": {"id": account["id"]},
            "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-s"}}]}
    order_id = api.post(ORDER, json=body).json()["id"]
    deadline = time.monotonic() + 60
    while (order := api.get(f"{ORDER}/{order_id}").json())["state"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert order["state"] == "completed", order
    product = api.get(f"/tmf-api/productInventory/v4/product/{order['productOrderItem'][0]['product']['id']}").json()
    msisdn = product["productCharacteristic"][0]["value"]

    # 30 minutes to the USA cost far more than 1 EUR (no allowance covers international calls).
    when = datetime.now(timezone.utc).isoformat()
    usage = {"id": f"e2e-{uuid.uuid4()}", "usageType": "voice", "usageDate": when, "usageCharacteristic": [
        {"name": "msisdn", "value": f"+{msisdn}"}, {"name": "destination", "value": "+12125550123"}, {"name": "duration", "value": 1800}]}
    accepted = api.post("/tmf-api/usageManagement/v4/usage", json=usage)
    assert accepted.status_code == 201, accepted.text

    deadline = time.monotonic() + 60
    barring = None
    while time.monotonic() < deadline:
        events = api.get(f"/tmf-api/accountManagement/v4/billingAccount/{account['id']}/events", params={"kind": "spending.threshold"}).json()
        barring = httpx.get(f"{stack.oss_url}/sim/services/{msisdn}").json()["barring"]
        if len(events) == 2 and barring == "outgoing":
            break
        time.sleep(0.5)
    assert sorted(e["data"]["percent"] for e in events) == [80, 100], events
    assert barring == "outgoing"
