"""The spending limit on a billing account (o2c extension of TMF666): set at creation, changed or
removed by PATCH, validated, and recorded in the account's events."""
from __future__ import annotations

from tests.api.conftest import ACCOUNT_PATH, CRM, OSS, SUPPORT, make_account


async def test_limit_set_at_creation_changed_and_removed(client):
    account = await make_account(client, spendingLimit={"amount": {"unit": "EUR", "value": 50}, "hardCap": True})
    assert account["spendingLimit"] == {"amount": {"unit": "EUR", "value": "50.00"}, "hardCap": True}

    href = f"{ACCOUNT_PATH}/{account['id']}"
    changed = await client.patch(href, headers=CRM, json={"spendingLimit": {"amount": {"unit": "EUR", "value": "20.50"}}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["spendingLimit"] == {"amount": {"unit": "EUR", "value": "20.50"}, "hardCap": False}

    untouched = await client.patch(href, headers=CRM, json={})  # absent: unchanged
    assert untouched.json()["spendingLimit"]["amount"]["value"] == "20.50"

    removed = await client.patch(href, headers=CRM, json={"spendingLimit": None})
    assert removed.json()["spendingLimit"] is None
    assert (await client.get(href, headers=SUPPORT)).json()["spendingLimit"] is None

    events = (await client.get(f"{href}/events", headers=SUPPORT, params={"kind": "spending_limit_changed"})).json()
    assert [e["message"] for e in events] == [
        "Spending limit changed from 50.00 EUR (hard cap) to 20.50 EUR",
        "Spending limit changed from 20.50 EUR to none",
    ]


async def test_bad_limits_are_422_with_a_reason(client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    for bad in ({"amount": {"unit": "EUR", "value": 0}}, {"amount": {"unit": "EUR", "value": "1.234"}},
                {"amount": {"unit": "USD", "value": 10}}, {"amount": {"unit": "EUR", "value": -5}}):
        response = await client.patch(href, headers=CRM, json={"spendingLimit": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0]["field"].startswith("spendingLimit.amount"), response.text
    assert (await client.get(href, headers=SUPPORT)).json()["spendingLimit"] is None


async def test_only_account_writers_may_change_the_limit(client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    assert (await client.patch(href, headers=OSS, json={"spendingLimit": None})).status_code == 403
    assert (await client.patch(f"{ACCOUNT_PATH}/no-such-account", headers=CRM, json={"spendingLimit": None})).status_code == 404
