"""Console routes over HTTP (no browser): the stored invoice XML, the sign-in rate limit, and the suspend /
restore actions going through the API as the staff member (no worker runs: the API answers 202 and the
product's ServiceStateWorkflow is left pending; tests/workflows/test_service_state.py covers the change)."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from sqlmodel import select

from api.console import login_limit
from api.routers import products as products_router
from persistence.db import session_scope
from persistence.tables import AuditLog, ConsoleLoginFailure, Invoice
from tests.api.conftest import app, client, client_for, insert_product, make_account, make_customer, new_msisdn  # noqa: F401 - fixtures
from tests.api.test_access_control import console_login, login_token, make_staff
from workflows.service_state import service_state_workflow_id

XML = b'<?xml version="1.0" encoding="UTF-8"?><rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"/>'


def _invoice(db_url: str, account: dict, *, xml: bytes | None) -> str:
    invoice_id = str(uuid.uuid4())
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with session_scope(db_url) as session:
        session.add(Invoice(id=invoice_id, number=f"T-{invoice_id[:12]}", kind="on_demand", billing_account_id=account["id"],
                            customer_id=account["relatedParty"][0]["id"], period_start=now, period_end=now, local_period_start=date(2026, 11, 1),
                            local_period_end=date(2026, 11, 1), issued_at=now, due_at=now, net_cents=100, vat_cents=19, gross_cents=119,
                            pdf=b"%PDF-1.7 not a Factur-X file", xml=xml))
    return invoice_id


async def test_invoice_xml_is_the_stored_xml_and_only_for_the_customers_own_bill(app, client, db_url):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    with_xml, without_xml = _invoice(db_url, account, xml=XML), _invoice(db_url, account, xml=None)
    other = await make_account(client)
    foreign = _invoice(db_url, other, xml=XML)
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        await console_login(http, user.username)
        response = await http.get(f"/console/customer/{customer['id']}/bill/{with_xml}/invoice.xml")
        assert response.status_code == 200
        assert response.content == XML  # the stored document (the PDF here carries none: re-extracting would find nothing)
        assert response.headers["content-type"].startswith("application/xml")
        assert response.headers["content-disposition"] == f'inline; filename="T-{with_xml[:12]}.xml"'
        assert (await http.get(f"/console/customer/{customer['id']}/bill/{without_xml}/invoice.xml")).status_code == 404
        assert (await http.get(f"/console/customer/{customer['id']}/bill/{foreign}/invoice.xml")).status_code == 404
    async with client_for(app) as anonymous:
        assert (await anonymous.get(f"/console/customer/{customer['id']}/bill/{with_xml}/invoice.xml")).status_code in (303, 307)


async def test_five_failed_sign_ins_lock_that_user_from_that_address_for_15_minutes(app, db_url):
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        for _ in range(login_limit.MAX_FAILURES):
            assert (await console_login(http, user.username, "wrong password")).status_code == 401
        # The right password is not even checked now.
        locked = await console_login(http, user.username)
        assert locked.status_code == 429
        assert locked.headers["x-error-code"] == "too_many_login_attempts"
        assert 0 < int(locked.headers["retry-after"]) <= 15 * 60
        assert 'data-error-code="too_many_login_attempts"' in locked.text
        # Another user from the same address is not affected.
        other = make_staff(db_url, "support")
        assert (await console_login(http, other.username)).status_code == 303
    # Once the failures leave the window, the right password works again and clears the count.
    with session_scope(db_url) as session:
        for row in session.exec(select(ConsoleLoginFailure).where(ConsoleLoginFailure.username == user.username)):
            row.at -= timedelta(minutes=16)
            session.add(row)
    async with client_for(app) as http:
        assert (await console_login(http, user.username)).status_code == 303
    with session_scope(db_url) as session:
        assert session.exec(select(ConsoleLoginFailure).where(ConsoleLoginFailure.username == user.username)).all() == []


def test_the_limit_counts_only_the_window_and_says_when_it_ends(db_url):
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    name = f"probe-{uuid.uuid4().hex[:6]}"
    with session_scope(db_url) as session:
        login_limit.record_failure(session, name, "10.0.0.1", now - timedelta(minutes=20))  # outside the window
        for minutes in (10, 8, 6, 4):
            login_limit.record_failure(session, name, "10.0.0.1", now - timedelta(minutes=minutes))
    with session_scope(db_url) as session:
        assert login_limit.retry_after(session, name, "10.0.0.1", now) is None  # four in the window
        login_limit.record_failure(session, name.upper(), "10.0.0.1", now)  # usernames are case-insensitive
    with session_scope(db_url) as session:
        assert login_limit.retry_after(session, name, "10.0.0.1", now) == 5 * 60  # the oldest (10 min ago) leaves in 5 min
        assert login_limit.retry_after(session, name, "10.0.0.2", now) is None


async def test_console_suspend_goes_through_the_product_api_as_the_staff_member(app, client, db_url, temporal_client, monkeypatch):
    monkeypatch.setattr(products_router, "SERVICE_STATE_WAIT_S", 0.3)
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    product_id = insert_product(db_url, account, new_msisdn(), start=datetime(2026, 11, 1, tzinfo=timezone.utc))
    support, finance = make_staff(db_url, "support"), make_staff(db_url, "finance")
    action = f"/console/customer/{customer['id']}/product/{product_id}/suspend"
    async with client_for(app) as http:
        await console_login(http, finance.username)
        csrf = login_token((await http.get(f"/console/customer/{customer['id']}")).text)
        refused = await http.post(action, data={"csrf_token": csrf, "reason": "fraud"})
        assert refused.status_code == 403 and "your role may not" in refused.text
    async with client_for(app) as http:
        await console_login(http, support.username)
        page = await http.get(f"/console/customer/{customer['id']}")
        assert f'action="{action}"' in page.text
        csrf = login_token(page.text)
        no_reason = await http.post(action, data={"csrf_token": csrf, "reason": " "})
        assert no_reason.status_code == 303
        assert "please give a reason" in (await http.get(f"/console/customer/{customer['id']}")).text
        done = await http.post(action, data={"csrf_token": csrf, "reason": "police report 4711"})
        assert done.status_code == 303 and done.headers["location"].endswith("#products")
        shown = await http.get(f"/console/customer/{customer['id']}")
        assert "Suspend service: the OSS has not confirmed yet" in shown.text
    handle = temporal_client.get_workflow_handle(service_state_workflow_id(product_id))
    try:
        started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes.input.payloads[0].data
        assert f'"actor_id":"{support.username}"'.encode() in started and b'"reason":"police report 4711"' in started
    finally:
        await handle.terminate(reason="test finished")
    with session_scope(db_url) as session:
        entries = session.exec(select(AuditLog).where(AuditLog.request_id == done.headers["x-request-id"])).all()
    by_action = {e.action: e for e in entries}
    assert by_action["console.suspend_service"].actor_id == support.username and by_action["console.suspend_service"].resource_id == product_id
    api_entry = by_action["PATCH /tmf-api/productInventory/v4/product/{product_id}"]
    assert (api_entry.actor_kind, api_entry.actor_id, api_entry.status, api_entry.resource_id) == ("staff", support.username, 202, product_id)
