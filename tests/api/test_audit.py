"""The audit log: every state-changing request is recorded (who, what, when, why, status, request id),
entries are append-only (ORM guards and a database trigger), record_audit commits or rolls back with the
change, staff read a customer's entries, and console actions are audited with before and after."""
from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import delete, text, update
from sqlmodel import select

from persistence.db import session_scope
from persistence.tables import AppendOnlyError, AuditLog, Customer, Payment, ProductOrder
from services.audit import Actor, record_audit
from services.query import utcnow
from tests.api.conftest import (
    CANCEL_PATH,
    CRM,
    CUSTOMER_PATH,
    FINANCE,
    ORDER_PATH,
    OSS,
    SUPPORT,
    client_for,
    make_account,
    make_customer,
    order_body,
)
from tests.api.test_access_control import console_login, login_token, make_staff

ACTOR = Actor(kind="system", id="tests", role="admin", name="tests")


def entries_for(db_url: str, request_id: str) -> list[AuditLog]:
    with session_scope(db_url) as session:
        return list(session.exec(select(AuditLog).where(AuditLog.request_id == request_id).order_by(AuditLog.id)))


async def test_a_write_is_audited_with_actor_reason_status_and_request_id(client, db_url):
    request_id = f"req-{uuid.uuid4().hex}"
    response = await client.post(CUSTOMER_PATH, headers={**CRM, "X-Reason": quote("signed up in shop Köln"), "X-Request-ID": request_id},
                                 json={"name": "Audit Kundin"})
    assert response.status_code == 201 and response.headers["x-request-id"] == request_id
    customer_id = response.json()["id"]
    [entry] = entries_for(db_url, request_id)
    assert (entry.actor_kind, entry.actor_role, entry.actor_name) == ("config_key", "crm", "configured crm key")
    assert entry.actor_id  # the key's id, never the key
    assert entry.method == "POST" and entry.path == CUSTOMER_PATH and entry.status == 201
    assert entry.action == f"POST {CUSTOMER_PATH}"
    assert (entry.resource_type, entry.resource_id, entry.customer_id) == ("customer", customer_id, customer_id)
    assert entry.reason == "signed up in shop Köln"


async def test_reason_comes_from_the_body_when_no_header_says_it(client, db_url):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer["id"], account["id"]))).json()
    response = await client.post(CANCEL_PATH, headers=SUPPORT, json={"productOrder": {"id": order["id"]}, "cancellationReason": "changed their mind"})
    assert response.status_code == 201, response.text
    [entry] = entries_for(db_url, response.headers["x-request-id"])
    assert entry.reason == "changed their mind" and entry.actor_role == "support"
    assert entry.resource_type == "cancelProductOrder" and entry.customer_id == customer["id"]


async def test_reads_are_not_audited_but_refusals_are(client, db_url):
    read = await client.get(CUSTOMER_PATH, headers=SUPPORT)
    assert read.status_code == 200 and entries_for(db_url, read.headers["x-request-id"]) == []
    forbidden = await client.post(CUSTOMER_PATH, headers=OSS, json={"name": "x"})
    assert forbidden.status_code == 403
    [entry] = entries_for(db_url, forbidden.headers["x-request-id"])
    assert entry.status == 403 and entry.actor_role == "oss"
    anonymous = await client.post(CUSTOMER_PATH, headers={"X-API-Key": "guess"}, json={"name": "x"})
    [entry] = entries_for(db_url, anonymous.headers["x-request-id"])
    assert entry.status == 401 and entry.actor_kind == "anonymous" and entry.actor_role is None


async def test_an_odd_request_id_is_replaced(client):
    response = await client.get(CUSTOMER_PATH, headers={**SUPPORT, "X-Request-ID": "<script>"})
    assert re.fullmatch(r"[0-9a-f-]{36}", response.headers["x-request-id"])


def _some_entry(db_url: str) -> int:
    with session_scope(db_url) as session:
        return record_audit(session, ACTOR, "test.entry", None, None, "for the append-only test").id


def test_entries_cannot_be_changed_or_deleted_through_the_orm(db_url):
    entry_id = _some_entry(db_url)
    with pytest.raises(AppendOnlyError), session_scope(db_url) as session:
        row = session.get(AuditLog, entry_id)
        row.reason = "rewritten"
        session.add(row)
        session.flush()
    with pytest.raises(AppendOnlyError), session_scope(db_url) as session:
        session.delete(session.get(AuditLog, entry_id))
        session.flush()
    with pytest.raises(AppendOnlyError), session_scope(db_url) as session:
        session.exec(update(AuditLog).where(AuditLog.id == entry_id).values(reason="bulk"))
    with pytest.raises(AppendOnlyError), session_scope(db_url) as session:
        session.exec(delete(AuditLog).where(AuditLog.id == entry_id))
    with session_scope(db_url) as session:
        assert session.get(AuditLog, entry_id).reason == "for the append-only test"


def test_the_database_refuses_update_and_delete(db_url):
    """Below the ORM: a trigger (migration 0010) on PostgreSQL and on SQLite."""
    entry_id = _some_entry(db_url)
    for statement in ("UPDATE audit_log SET reason = 'sql' WHERE id = :id", "DELETE FROM audit_log WHERE id = :id"):
        with pytest.raises(Exception) as refused, session_scope(db_url) as session:
            session.connection().execute(text(statement), {"id": entry_id})
        assert "append-only" in str(refused.value)
    if db_url.startswith("postgresql"):
        with pytest.raises(Exception) as refused, session_scope(db_url) as session:
            session.connection().execute(text("TRUNCATE audit_log"))
        assert "append-only" in str(refused.value)
    with session_scope(db_url) as session:
        assert session.get(AuditLog, entry_id) is not None


def test_record_audit_commits_and_rolls_back_with_the_change(db_url):
    kept, lost = str(uuid.uuid4()), str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Customer(id=kept, name="Kept", created_at=utcnow()))
        record_audit(session, ACTOR, "customer.create", "customer", kept, "kept", None, {"name": "Kept"})
    with pytest.raises(RuntimeError), session_scope(db_url) as session:
        session.add(Customer(id=lost, name="Lost", created_at=utcnow()))
        record_audit(session, ACTOR, "customer.create", "customer", lost, "lost", None, {"name": "Lost"})
        raise RuntimeError("the change fails after the entry was added")
    with session_scope(db_url) as session:
        assert session.exec(select(AuditLog).where(AuditLog.resource_id == kept)).one().customer_id == kept
        assert session.exec(select(AuditLog).where(AuditLog.resource_id == lost)).all() == []
        assert session.get(Customer, lost) is None


async def test_staff_read_a_customers_audit_entries(client):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    await client.post(ORDER_PATH, headers={**CRM, "X-Reason": "first line"}, json=order_body(customer["id"], account["id"]))
    other = await make_customer(client)
    path = f"{CUSTOMER_PATH}/{customer['id']}/audit"
    response = await client.get(path, headers=SUPPORT)
    assert response.status_code == 200
    body = response.json()
    assert response.headers["x-total-count"] == "3"
    assert [e["resource"]["type"] for e in body] == ["productOrder", "billingAccount", "customer"]  # newest first
    assert body[0]["reason"] == "first line" and body[0]["actor"]["role"] == "crm"
    assert all(e["customerId"] == customer["id"] for e in body) and other["id"] not in str(body)
    assert (await client.get(path, headers=FINANCE)).status_code == 200
    assert (await client.get(path, headers=CRM)).status_code == 403
    assert (await client.get(f"{CUSTOMER_PATH}/{uuid.uuid4()}/audit", headers=SUPPORT)).status_code == 404


# --- console actions -------------------------------------------------------------------------------


async def test_console_cancel_goes_through_the_api_as_the_staff_member(app, client, db_url):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer["id"], account["id"]))).json()
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        await console_login(http, user.username)
        page = await http.get(f"/console/customer/{customer['id']}")
        csrf = login_token(page.text)
        action = f"/console/customer/{customer['id']}/order/{order['id']}/cancel"

        no_reason = await http.post(action, data={"csrf_token": csrf, "reason": "  "})
        assert no_reason.status_code == 303
        with session_scope(db_url) as session:
            assert session.get(ProductOrder, order["id"]).state == "acknowledged"

        done = await http.post(action, data={"csrf_token": csrf, "reason": "customer called: wrong tariff"})
        assert done.status_code == 303 and done.headers["location"].endswith("#orders")
        shown = await http.get(done.headers["location"].split("#")[0])
        assert "Cancel order: cancellation" in shown.text and "customer called: wrong tariff" in shown.text
    entries = entries_for(db_url, done.headers["x-request-id"])
    by_action = {e.action: e for e in entries}
    api_entry = by_action[f"POST {CANCEL_PATH}"]
    assert (api_entry.actor_kind, api_entry.actor_id, api_entry.actor_role) == ("staff", user.username, "support")
    assert api_entry.reason == "customer called: wrong tariff" and api_entry.status == 201 and api_entry.customer_id == customer["id"]
    console_entry = by_action["console.cancel_order"]
    assert console_entry.actor_id == user.username and console_entry.resource_id == order["id"] and console_entry.customer_id == customer["id"]
    assert console_entry.before["state"] == "acknowledged" and console_entry.after["apiStatus"] == 201
    assert console_entry.reason == "customer called: wrong tariff" and console_entry.status == 303
    listed = (await client.get(f"{CUSTOMER_PATH}/{customer['id']}/audit", headers=SUPPORT)).json()
    assert any(e["action"] == "console.cancel_order" and e["actor"]["id"] == user.username for e in listed)


async def test_console_bank_transfer_by_finance_and_refused_to_support(app, client, db_url):
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    finance, support = make_staff(db_url, "finance"), make_staff(db_url, "support")
    action = f"/console/customer/{customer['id']}/account/{account['id']}/payment"
    async with client_for(app) as http:
        await console_login(http, support.username)
        csrf = login_token((await http.get(f"/console/customer/{customer['id']}")).text)
        refused = await http.post(action, data={"csrf_token": csrf, "amount": "10.00", "reason": "transfer arrived"})
        assert refused.status_code == 403 and "your role may not" in refused.text
    async with client_for(app) as http:
        await console_login(http, finance.username)
        csrf = login_token((await http.get(f"/console/customer/{customer['id']}")).text)
        bad = await http.post(action, data={"csrf_token": csrf, "amount": "ten", "reason": "transfer arrived"})
        assert bad.status_code == 303
        done = await http.post(action, data={"csrf_token": csrf, "amount": "25,50", "reference": "SEPA-4711", "reason": "transfer arrived",
                                             "correlator": f"console-{uuid.uuid4()}"})
        assert done.status_code == 303
        page = await http.get(f"/console/customer/{customer['id']}")
        assert "25.50 EUR recorded" in page.text and "SEPA-4711" in page.text
    with session_scope(db_url) as session:
        [payment] = session.exec(select(Payment).where(Payment.billing_account_id == account["id"])).all()
        assert payment.amount_cents == 2550 and payment.recorded_by == "finance" and payment.method == "bank_transfer"
    [api_entry] = [e for e in entries_for(db_url, done.headers["x-request-id"]) if e.method == "POST" and e.path.startswith("/tmf-api")]
    assert api_entry.actor_id == finance.username and api_entry.resource_id == payment.id and api_entry.customer_id == customer["id"]
