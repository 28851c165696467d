"""The staff console in a real browser: sign in with the keyboard, search by name, order id and MSISDN,
read the customer page (with its Temporal links), cancel an order with a reason and find the audit entry;
a screenshot of the customer page is kept under tests/console/artifacts (or $O2C_TEST_ARTIFACTS)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlmodel import select

from persistence.db import session_scope
from persistence.tables import AuditLog, ProductOrder
from tests.api.conftest import ACCOUNT_PATH, CRM, CUSTOMER_PATH, ORDER_PATH, USAGE_PATH, insert_product, new_msisdn, order_body
from tests.api.test_usage import record
from tests.api.test_access_control import make_staff

PASSWORD = "correct horse battery"


async def _customer_with_order(base: str, db_url: str) -> tuple[dict, dict, dict, str]:
    async with httpx.AsyncClient(base_url=base, headers=CRM, timeout=30) as api:
        name = f"Browser Kundin {uuid.uuid4().hex[:6]}"
        customer = (await api.post(CUSTOMER_PATH, json={"name": name, "contactMedium": [
            {"mediumType": "email", "characteristic": {"emailAddress": "kundin@example.org"}}]})).json()
        account = (await api.post(ACCOUNT_PATH, json={"name": "Hauptkonto", "relatedParty": [{"id": customer["id"], "role": "customer"}],
                                                      "spendingLimit": {"amount": {"unit": "EUR", "value": "50.00"}, "hardCap": False}})).json()
        order = await api.post(ORDER_PATH, json=order_body(customer["id"], account["id"]))
        assert order.status_code == 201, order.text
    msisdn = new_msisdn()
    now = datetime.now(timezone.utc)
    insert_product(db_url, account, msisdn, start=now - timedelta(days=3))
    async with httpx.AsyncClient(base_url=base, headers=CRM, timeout=30) as api:  # some usage, on three days
        records = [record(msisdn, "voice", (now - timedelta(days=days, minutes=5)).isoformat(), duration=60 * (days + 1) * 70)
                   for days in (0, 1, 2)]
        records.append(record(msisdn, "data", (now - timedelta(days=1)).isoformat(), volume=800_000_000))
        rated = await api.post(USAGE_PATH, json=records)
        assert rated.status_code == 200 and rated.json()["accepted"] == 4, rated.text
    return customer, account, order.json(), msisdn


async def _visible(temporal_client, customer_id: str) -> None:
    """Wait (bounded) until Temporal's visibility lists the customer's order workflow, so the timeline can show it."""
    for _ in range(100):
        found = [w async for w in temporal_client.list_workflows(f'CustomerId="{customer_id}"')]
        if found:
            return
        import asyncio

        await asyncio.sleep(0.1)
    pytest.fail("the order workflow never showed up in Temporal visibility")


async def test_sign_in_search_customer_page_and_cancel_an_order(page, live_server, db_url, temporal_client, artifacts):
    customer, account, order, msisdn = await _customer_with_order(live_server, db_url)
    user = make_staff(db_url, "support", PASSWORD)
    await _visible(temporal_client, customer["id"])

    # Sign in with the keyboard only: the username field has focus, Tab to the password, Enter submits.
    await page.goto(f"{live_server}/console")
    assert "/console/login" in page.url
    assert await page.title() == "Sign in · o2c staff console"
    await page.keyboard.type(user.username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{live_server}/console/search")
    assert await page.get_by_role("heading", name="Find a customer").is_visible()

    # Search by part of the name, by the order id and by the MSISDN.
    await page.get_by_label("Name, customer number, MSISDN, invoice number or order id").fill(customer["name"].split()[-1])
    await page.get_by_role("button", name="Search", exact=True).last.click()
    await page.get_by_role("link", name=customer["name"]).wait_for()
    for query, why in ((order["id"], "order"), ("+" + msisdn, "MSISDN")):
        await page.goto(f"{live_server}/console/search?q={query.replace('+', '%2B')}")
        row = page.get_by_role("row").filter(has_text=customer["name"])
        assert why in await row.inner_text()

    # The customer page: account, spending limit, the order with its steps, Temporal links, timeline.
    await page.get_by_role("link", name=customer["name"]).click()
    await page.wait_for_url(f"{live_server}/console/customer/{customer['id']}")
    assert await page.get_by_role("heading", level=1).inner_text() == customer["name"]
    text = await page.locator("main").inner_text()
    assert "Hauptkonto" in text and "50.00 EUR" in text and msisdn in text
    order_heading = page.get_by_role("heading", name=f"Order {order['id']}")
    assert "acknowledged" in await order_heading.inner_text()
    link = page.get_by_role("link", name="Open in Temporal").first
    assert await link.get_attribute("href") == f"http://127.0.0.1:8233/namespaces/default/workflows/order-{order['id']}"
    timeline = await page.locator("#timeline").inner_text()
    assert "OrderWorkflow started" in timeline and "Order " in timeline
    assert await page.locator("svg.chart").count() == 2  # usage per day and the balance (inline SVG)
    usage_chart = page.get_by_role("img", name="Usage cost per day this cycle, account Hauptkonto")
    assert await usage_chart.locator("rect").count() >= 3
    assert "100.0 min" in text and "800.0 MB" in text  # allowances used: all voice minutes, some data
    await page.screenshot(path=str(artifacts / "console-customer-page.png"), full_page=True)

    # Cancel the order with a reason, as a staff member: through the API, audited.
    form = page.locator(f"form[action$='/order/{order['id']}/cancel']")
    await form.get_by_label("Reason").fill("customer called: ordered by mistake")
    await form.get_by_role("button", name="Cancel order").click()
    await page.wait_for_url(f"{live_server}/console/customer/{customer['id']}#orders")
    notice = await page.locator("#flash").inner_text()
    assert notice.startswith("Cancel order: cancellation")
    audit = await page.locator("#audit-table").inner_text()
    assert "console.cancel_order" in audit and "customer called: ordered by mistake" in audit and user.display_name in audit
    await page.screenshot(path=str(artifacts / "console-after-cancel.png"), full_page=True)

    with session_scope(db_url) as session:
        entries = session.exec(select(AuditLog).where(AuditLog.customer_id == customer["id"], AuditLog.actor_id == user.username)).all()
        api_entry = next(e for e in entries if e.path == "/tmf-api/productOrderingManagement/v4/cancelProductOrder")
        assert api_entry.status == 201 and api_entry.reason == "customer called: ordered by mistake" and api_entry.actor_role == "support"
        console_entry = next(e for e in entries if e.action == "console.cancel_order")
        assert console_entry.before["state"] == "acknowledged" and console_entry.after["apiStatus"] == 201
        assert session.get(ProductOrder, order["id"]) is not None

    # Sign out: the console asks for a sign-in again.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{live_server}/console/login")
    await page.goto(f"{live_server}/console/customer/{customer['id']}")
    assert "/console/login" in page.url


async def test_suspend_and_restore_a_service_end_to_end(page, service_stack, db_url, artifacts):
    """Support suspends a line from the customer page and restores it: the OSS simulator's line is barred fully
    and then unbarred by the worker, the product's status follows, and both are in the audit log."""
    from tests.support.billing import activate_in_oss

    base, oss_url = service_stack
    async with httpx.AsyncClient(base_url=base, headers=CRM, timeout=30) as api:
        name = f"Sperr Kundin {uuid.uuid4().hex[:6]}"
        customer = (await api.post(CUSTOMER_PATH, json={"name": name})).json()
        account = (await api.post(ACCOUNT_PATH, json={"name": "Hauptkonto", "relatedParty": [{"id": customer["id"], "role": "customer"}]})).json()
    msisdn = new_msisdn()
    product_id = insert_product(db_url, account, msisdn, start=datetime.now(timezone.utc) - timedelta(days=3))
    async with httpx.AsyncClient(base_url=oss_url, timeout=30) as oss:
        await activate_in_oss(oss, msisdn, "mobile-s", customer["id"])
        user = make_staff(db_url, "support", PASSWORD)
        await page.goto(f"{base}/console/login")
        await page.get_by_label("Username").fill(user.username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{base}/console/search")
        await page.goto(f"{base}/console/customer/{customer['id']}")

        row = page.locator(f"#service-actions tr[data-product='{product_id}']")
        await row.get_by_label("Reason").fill("customer reported the SIM stolen")
        await row.get_by_role("button", name="Suspend service").click()
        await page.wait_for_url(f"{base}/console/customer/{customer['id']}#products")
        assert (await page.locator("#flash").inner_text()).startswith(f"Suspend service: {msisdn} is now suspended")
        assert "suspended by staff: customer reported the SIM stolen" in await page.locator("#products").inner_text()
        assert (await oss.get(f"/sim/services/{msisdn}")).json()["barring"] == "full"
        await page.screenshot(path=str(artifacts / "console-after-suspend.png"), full_page=True)

        row = page.locator(f"#service-actions tr[data-product='{product_id}']")
        await row.get_by_label("Reason").fill("SIM found again")
        await row.get_by_role("button", name="Restore service").click()
        await page.wait_for_url(f"{base}/console/customer/{customer['id']}#products")
        assert (await page.locator("#flash").inner_text()).startswith(f"Restore service: {msisdn} is now active")
        assert (await oss.get(f"/sim/services/{msisdn}")).json()["barring"] == "none"
        audit = await page.locator("#audit-table").inner_text()
        assert "product.suspend" in audit and "product.restore" in audit and "SIM found again" in audit
