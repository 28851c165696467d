"""TMF637 product inventory, and the product reference on the order item that created it."""
from __future__ import annotations

import uuid

from persistence.db import session_scope
from persistence.tables import ProductOrderItem
from services.health import database_status
from tests.api.conftest import CRM, FINANCE, ORDER_PATH, PRODUCT_PATH, SUPPORT, insert_product, make_account, new_msisdn, order_body, utc


async def test_products_list_filters_and_representation(client, db_url):
    account = await make_account(client)
    customer_id = account["relatedParty"][0]["id"]
    msisdn = new_msisdn()
    active = insert_product(db_url, account, msisdn, start=utc(2026, 1, 5))
    ended = insert_product(db_url, account, new_msisdn(), offering_id="mobile-l", start=utc(2025, 6, 1), end=utc(2025, 12, 1))

    product = (await client.get(f"{PRODUCT_PATH}/{active}", headers=SUPPORT)).json()
    assert product["@type"] == "Product"
    assert product["href"] == f"{PRODUCT_PATH}/{active}"
    assert product["status"] == "active"
    assert product["productOffering"]["id"] == "mobile-s"
    assert product["startDate"] == "2026-01-05T00:00:00Z"
    assert product["terminationDate"] is None
    assert product["productCharacteristic"] == [{"name": "msisdn", "valueType": "string", "value": msisdn}]
    assert product["relatedParty"][0]["id"] == customer_id
    assert product["billingAccount"]["id"] == account["id"]
    assert product["productOrderItem"][0]["orderItemId"] == "1"

    by_customer = await client.get(PRODUCT_PATH, headers=CRM, params={"relatedParty.id": customer_id})
    assert {p["id"] for p in by_customer.json()} == {active, ended}
    assert by_customer.headers["X-Total-Count"] == "2"
    terminated = await client.get(PRODUCT_PATH, headers=CRM, params={"customerId": customer_id, "status": "terminated"})
    assert [p["id"] for p in terminated.json()] == [ended]
    by_account = await client.get(PRODUCT_PATH, headers=CRM, params={"billingAccount.id": account["id"], "status": "active"})
    assert [p["id"] for p in by_account.json()] == [active]

    assert (await client.get(f"{PRODUCT_PATH}/{uuid.uuid4()}", headers=CRM)).status_code == 404
    assert (await client.get(PRODUCT_PATH, headers=FINANCE)).status_code == 403


async def test_order_item_links_the_product_once_created(client, db_url):
    account = await make_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))).json()
    assert "product" not in order["productOrderItem"][0]
    product_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        item = session.get(ProductOrderItem, (order["id"], "1"))
        item.product_id, item.state, item.msisdn = product_id, "completed", "4915900000042"
    item = (await client.get(f"{ORDER_PATH}/{order['id']}", headers=CRM)).json()["productOrderItem"][0]
    assert item["state"] == "completed"
    assert item["product"] == {"id": product_id, "href": f"{PRODUCT_PATH}/{product_id}"}


def test_database_down_is_reported_with_a_detail():
    up, detail = database_status("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert up is False
    assert detail and "OperationalError" in detail
