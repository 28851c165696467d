"""TMF629 customers and TMF666 billing accounts."""
from __future__ import annotations

import uuid
from datetime import datetime

from tests.api.conftest import ACCOUNT_PATH, CRM, CUSTOMER_PATH, SUPPORT, make_account, make_customer


def fields(response) -> dict[str, str]:
    return {e["field"]: e["code"] for e in response.json().get("errors", [])}


async def test_create_and_read_customer(client):
    name = f"Erika {uuid.uuid4().hex[:6]}"
    response = await client.post(
        CUSTOMER_PATH,
        headers=CRM,
        json={
            "name": name,
            "@type": "Customer",
            "vatId": "DE811907980",
            "contactMedium": [
                {"mediumType": "email", "characteristic": {"emailAddress": "erika@example.org"}},
                {"mediumType": "postalAddress", "characteristic": {"street1": "Hauptstraße 5", "city": "Berlin", "postCode": "10115", "country": "DE"}},
            ],
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    uuid.UUID(created["id"])
    assert created["href"] == f"{CUSTOMER_PATH}/{created['id']}"
    assert response.headers["Location"] == created["href"]
    assert created["@type"] == "Customer"
    assert created["vatId"] == "DE811907980"
    media = {m["mediumType"]: m["characteristic"] for m in created["contactMedium"]}
    assert media["email"] == {"emailAddress": "erika@example.org"}
    assert media["postalAddress"] == {"street1": "Hauptstraße 5", "city": "Berlin", "postCode": "10115", "country": "DE"}

    fetched = await client.get(created["href"], headers=SUPPORT)
    assert fetched.json() == created

    listed = await client.get(CUSTOMER_PATH, headers=SUPPORT, params={"name": name})
    assert [c["id"] for c in listed.json()] == [created["id"]]
    assert listed.headers["X-Total-Count"] == "1"


async def test_customer_validation_names_each_field(client):
    response = await client.post(
        CUSTOMER_PATH,
        headers=CRM,
        json={"name": "  ", "contactMedium": [{"mediumType": "fax", "characteristic": {}}, {"mediumType": "email", "characteristic": {"emailAddress": "nope"}}]},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request" and body["status"] == "422"
    errors = fields(response)
    assert errors["name"] == "string_too_short"
    assert errors["contactMedium[0].mediumType"] == "literal_error"
    assert errors["contactMedium[1].characteristic.emailAddress"] == "string_pattern_mismatch"

    missing = await client.post(CUSTOMER_PATH, headers=CRM, json={})
    assert fields(missing) == {"name": "required"}

    malformed = await client.post(CUSTOMER_PATH, headers={**CRM, "Content-Type": "application/json"}, content=b"{not json")
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "malformed_json"


async def test_unknown_customer_is_404(client):
    response = await client.get(f"{CUSTOMER_PATH}/{uuid.uuid4()}", headers=CRM)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_billing_account_defaults_and_listing(client):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"], defaultPaymentMethod={"id": "4242424242424242"})
    assert account["@type"] == "BillingAccount"
    assert account["billCycleDay"] == 1
    assert account["timeZone"] == "Europe/Berlin"
    assert account["billingProfile"] == "standard"
    assert account["billingCycleSpecification"]["cycleAnchor"] is None  # monthly cycles are anchored on the BCD
    assert account["defaultPaymentMethod"]["id"] == "4242424242424242"
    assert account["relatedParty"][0]["id"] == customer["id"]
    # The bill e-mail comes from the customer.
    assert account["contact"][0]["contactMedium"][0]["characteristic"]["emailAddress"] == "erika@example.org"

    second = await make_account(client, customer["id"], billCycleDay=15, timeZone="America/New_York")
    listed = await client.get(ACCOUNT_PATH, headers=SUPPORT, params={"relatedParty.id": customer["id"]})
    assert listed.status_code == 200
    assert {a["id"] for a in listed.json()} == {account["id"], second["id"]}
    assert listed.headers["X-Total-Count"] == "2"
    assert (await client.get(f"{ACCOUNT_PATH}/{second['id']}", headers=CRM)).json()["billCycleDay"] == 15


async def test_e_invoicing_and_itemised_bill_options(client):
    account = await make_account(client)
    assert (account["leitwegId"], account["itemisedBill"], account["itemisedBillMaskLast3"], account["invoiceHold"]) == (None, False, False, False)

    public = await make_account(client, leitwegId="991-33333TEST-33", itemisedBill=True, itemisedBillMaskLast3=True)
    assert (public["leitwegId"], public["itemisedBill"], public["itemisedBillMaskLast3"]) == ("991-33333TEST-33", True, True)

    patched = await client.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"leitwegId": "04011000-1234512345-06", "itemisedBill": True})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["leitwegId"], patched.json()["itemisedBill"], patched.json()["itemisedBillMaskLast3"]) == ("04011000-1234512345-06", True, False)
    cleared = await client.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"leitwegId": None, "itemisedBillMaskLast3": True})
    assert (cleared.json()["leitwegId"], cleared.json()["itemisedBill"], cleared.json()["itemisedBillMaskLast3"]) == (None, True, True)
    events = (await client.get(f"{ACCOUNT_PATH}/{account['id']}/events", headers=SUPPORT, params={"kind": "document_options_changed"})).json()
    assert len(events) == 2

    bad = await client.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"leitwegId": "not a leitweg id"})
    assert bad.status_code == 422 and "leitwegId" in fields(bad)
    typo = await client.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"leitwegId": "04011000-1234512345-07"})
    assert typo.status_code == 422 and fields(typo) == {"leitwegId": "invalid_leitweg_id"}
    null_flag = await client.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"itemisedBill": None})
    assert null_flag.status_code == 422 and fields(null_flag) == {"itemisedBill": "null"}


async def test_demo_profile_anchors_the_cycle_at_creation(client):
    account = await make_account(client, billingProfile="demo", defaultPaymentMethod={"id": "sepa:DE89370400440532013000"})
    anchor = datetime.fromisoformat(account["billingCycleSpecification"]["cycleAnchor"])
    assert anchor.tzinfo is not None
    assert account["billingCycleSpecification"]["frequency"] == "fixed"
    assert abs((anchor - datetime.fromisoformat(account["createdAt"])).total_seconds()) < 1


async def test_billing_account_validation(client):
    customer = await make_customer(client)
    response = await client.post(
        ACCOUNT_PATH,
        headers=CRM,
        json={
            "name": "x",
            "relatedParty": [{"id": customer["id"], "role": "customer"}],
            "billCycleDay": 32,
            "timeZone": "Mars/Olympus",
            "defaultPaymentMethod": {"id": "4111111111111111"},  # a real card number: never accepted
        },
    )
    assert response.status_code == 422
    assert fields(response) == {
        "billCycleDay": "less_than_equal",
        "timeZone": "unknown_timezone",
        "defaultPaymentMethod": "invalid_payment_method",
    }

    unknown = await client.post(
        ACCOUNT_PATH, headers=CRM, json={"name": "x", "relatedParty": [{"id": "nobody", "role": "customer"}], "billingProfile": "gold"}
    )
    assert unknown.status_code == 422
    assert fields(unknown) == {"relatedParty[0].id": "unknown_customer", "billingProfile": "unknown_billing_profile"}

    no_customer_role = await client.post(ACCOUNT_PATH, headers=CRM, json={"name": "x", "relatedParty": [{"id": customer["id"], "role": "payer"}]})
    assert fields(no_customer_role) == {"relatedParty": "required"}


async def test_contact_medium_must_be_complete(client):
    response = await client.post(
        CUSTOMER_PATH,
        headers=CRM,
        json={"name": "Max", "contactMedium": [{"mediumType": "postalAddress", "characteristic": {"street1": "Hauptstraße 5", "city": "Berlin"}}]},
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "contactMedium[0]"
    assert error["code"] == "incomplete_contact_medium"
    assert "postCode" in error["message"] and "country" in error["message"]


async def test_account_events_tell_the_story(client):
    from tests.api.conftest import ORDER_PATH, order_body

    account = await make_account(client)
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))).json()
    response = await client.get(f"{ACCOUNT_PATH}/{account['id']}/events", headers=SUPPORT)
    assert response.status_code == 200
    events = response.json()
    assert [e["kind"] for e in events] == ["billing_account_created", "order_received"]
    assert events[1]["data"] == {"orderId": order["id"]}
    assert events[0]["at"] <= events[1]["at"]
    only_orders = await client.get(f"{ACCOUNT_PATH}/{account['id']}/events", headers=SUPPORT, params={"kind": "order_received"})
    assert len(only_orders.json()) == 1
    assert (await client.get(f"{ACCOUNT_PATH}/{uuid.uuid4()}/events", headers=SUPPORT)).status_code == 404
