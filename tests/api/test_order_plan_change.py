"""TMF622 modify items (plan changes) and promotions: what the API refuses, with a machine-readable code
per field, and what it stores for the order workflow."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import select

from persistence.db import session_scope
from persistence.tables import Product, ProductOrderItem
from tests.api.conftest import CRM, ORDER_PATH, insert_product, make_account, new_msisdn


def fields(response) -> dict[str, str]:
    return {e["field"]: e["code"] for e in response.json().get("errors", [])}


def modify(customer_id: str, account_id: str, product_id: str | None, offering: str = "mobile-l", promotions: tuple[str, ...] = ()) -> dict:
    item = {"id": "1", "action": "modify", "productOffering": {"id": offering}}
    if product_id is not None:
        item["product"] = {"id": product_id}
    if promotions:
        item["itemPrice"] = [{"priceType": "recurring", "priceAlteration": [{"productOfferingPrice": {"id": p}} for p in promotions]}]
    return {"relatedParty": [{"id": customer_id, "role": "customer"}], "billingAccount": {"id": account_id}, "productOrderItem": [item]}


async def line(client, db_url, offering: str = "mobile-s") -> tuple[str, str, str]:
    account = await make_account(client)
    product_id = insert_product(db_url, account, new_msisdn(), offering_id=offering, start=datetime(2026, 1, 1, tzinfo=UTC))
    return account["relatedParty"][0]["id"], account["id"], product_id


async def test_a_modify_item_names_an_active_product_of_the_customer_and_another_plan(client, db_url):
    customer_id, account_id, product_id = await line(client, db_url)
    other_customer, _, others_product = await line(client, db_url)
    _, _, ended = await line(client, db_url)
    with session_scope(db_url) as session:
        row = session.get(Product, ended)
        row.customer_id, row.status = customer_id, "terminated"
        session.add(row)

    cases = {
        "missing": (modify(customer_id, account_id, None), {"productOrderItem[0].product.id": "required"}),
        "unknown": (modify(customer_id, account_id, "no-such-product"), {"productOrderItem[0].product.id": "unknown_product"}),
        "another customer's": (modify(customer_id, account_id, others_product), {"productOrderItem[0].product.id": "product_of_another_customer"}),
        "terminated": (modify(customer_id, account_id, ended), {"productOrderItem[0].product.id": "product_terminated"}),
        "same plan": (modify(customer_id, account_id, product_id, "mobile-s"), {"productOrderItem[0].productOffering.id": "same_plan"}),
        "retired plan": (modify(customer_id, account_id, product_id, "mobile-legacy"), {"productOrderItem[0].productOffering.id": "offering_retired"}),
        "unknown promotion": (modify(customer_id, account_id, product_id, promotions=("free-forever",)),
                              {"productOrderItem[0].itemPrice.priceAlteration[0].productOfferingPrice.id": "unknown_promotion"}),
    }
    for name, (body, expected) in cases.items():
        response = await client.post(ORDER_PATH, headers=CRM, json=body)
        assert response.status_code == 422, (name, response.text)
        assert response.json()["code"] == "invalid_order" and fields(response) == expected, name


async def test_a_valid_modify_is_accepted_with_its_product_and_promotion(client, db_url):
    customer_id, account_id, product_id = await line(client, db_url)
    response = await client.post(ORDER_PATH, headers=CRM, json=modify(customer_id, account_id, product_id, promotions=("half-price-3",)))
    assert response.status_code == 201, response.text
    body = response.json()
    assert [(i["action"], i["productOffering"]["id"]) for i in body["productOrderItem"]] == [("modify", "mobile-l")]
    with session_scope(db_url) as session:
        (item,) = session.exec(select(ProductOrderItem).where(ProductOrderItem.order_id == body["id"])).all()
    assert (item.action, item.offering_id, item.product_id) == ("modify", "mobile-l", product_id)
