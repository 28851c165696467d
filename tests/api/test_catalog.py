"""TMF620 product offerings, read from the catalog file."""
from __future__ import annotations

from tests.api.conftest import CRM, OFFERING_PATH


async def test_offerings_embed_prices_as_strings(client):
    response = await client.get(OFFERING_PATH, headers=CRM)
    assert response.status_code == 200
    offerings = {o["id"]: o for o in response.json()}
    assert set(offerings) == {"mobile-s", "mobile-l", "mobile-legacy"}
    assert response.headers["X-Total-Count"] == "3"

    small = offerings["mobile-s"]
    assert small["@type"] == "ProductOffering"
    assert small["href"] == f"{OFFERING_PATH}/mobile-s"
    assert small["version"] == "1" and small["lifecycleStatus"] == "Active"
    prices = {p["name"]: p for p in small["productOfferingPrice"]}
    assert prices["Monthly fee"]["priceType"] == "recurring"
    assert prices["Monthly fee"]["price"]["dutyFreeAmount"] == {"unit": "EUR", "value": "9.99"}
    assert prices["Activation fee"]["price"]["dutyFreeAmount"] == {"unit": "EUR", "value": "0.00"}
    assert prices["Voice beyond allowance"]["price"]["dutyFreeAmount"]["value"] == "0.09"
    assert prices["Included voice"]["unitOfMeasure"] == {"amount": 100, "units": "minute"}
    assert prices["Included data"]["unitOfMeasure"] == {"amount": 5000, "units": "MB"}

    # Sub-cent rates are shown exactly, not rounded to a cent.
    large = (await client.get(f"{OFFERING_PATH}/mobile-l", headers=CRM)).json()
    data_rate = next(p for p in large["productOfferingPrice"] if p["name"] == "Data beyond allowance")
    assert data_rate["price"]["dutyFreeAmount"]["value"] == "0.005"

    assert offerings["mobile-legacy"]["lifecycleStatus"] == "Retired"
    assert offerings["mobile-legacy"]["isSellable"] is False


async def test_offering_filter_paging_and_404(client):
    active = await client.get(OFFERING_PATH, headers=CRM, params={"lifecycleStatus": "Active"})
    assert {o["id"] for o in active.json()} == {"mobile-s", "mobile-l"}
    page = await client.get(OFFERING_PATH, headers=CRM, params={"limit": 1, "offset": 1})
    assert len(page.json()) == 1 and page.headers["X-Total-Count"] == "3"
    bad_page = await client.get(OFFERING_PATH, headers=CRM, params={"limit": 0})
    assert bad_page.status_code == 422
    assert bad_page.json()["errors"][0]["field"] == "limit"
    missing = await client.get(f"{OFFERING_PATH}/mobile-xxl", headers=CRM)
    assert missing.status_code == 404
