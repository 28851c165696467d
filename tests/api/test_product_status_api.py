"""PATCH /product/{id} (staff suspend / restore): who may, what is refused with which code, and that an accepted
request starts the product's ServiceStateWorkflow (no worker runs here: tests/workflows/test_service_state.py
covers the change itself)."""
from __future__ import annotations

import pytest
from sqlmodel import select

from api.routers import products as products_router
from persistence.db import session_scope
from persistence.tables import AuditLog, ManualSuspension, Product
from tests.api.conftest import ADMIN, CRM, FINANCE, OSS, PRODUCT_PATH, SUPPORT, insert_product, make_account, new_msisdn, utc
from workflows.service_state import SERVICE_STATE_WORKFLOW, service_state_workflow_id


async def _product(client, db_url, *, status: str = "active", reason: str | None = None) -> str:
    account = await make_account(client)
    product_id = insert_product(db_url, account, new_msisdn(), start=utc(2026, 11, 1))
    with session_scope(db_url) as session:
        row = session.get(Product, product_id)
        row.status, row.status_reason = status, reason
        session.add(row)
    return product_id


def _body(status="suspended", reason="fraud suspected"):
    return {"status": status, "statusReason": reason}


@pytest.mark.parametrize("headers", [CRM, FINANCE, OSS], ids=["crm", "finance", "oss"])
async def test_only_support_and_admin_may_suspend(client, db_url, headers):
    product_id = await _product(client, db_url)
    response = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body(), headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_a_request_without_a_key_is_401(client, db_url):
    product_id = await _product(client, db_url)
    assert (await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body())).status_code == 401


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"status": "terminated", "statusReason": "x"}, "status", "invalid_status"),
    ({"status": "paused", "statusReason": "x"}, "status", "invalid_status"),
    ({"status": "suspended"}, "statusReason", "required"),
    ({"status": "suspended", "statusReason": "   "}, "statusReason", "required"),
    ({"statusReason": "why"}, "status", "required"),
])
async def test_bad_input_is_422_with_a_field_code(client, db_url, body, field, code):
    product_id = await _product(client, db_url)
    response = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=body, headers=SUPPORT)
    assert response.status_code == 422, response.text
    assert {(e["field"], e["code"]) for e in response.json()["errors"]} == {(field, code)}


async def test_a_terminated_product_cannot_be_suspended(client, db_url):
    product_id = await _product(client, db_url, status="terminated")
    response = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body(), headers=SUPPORT)
    assert response.status_code == 422
    assert response.json()["code"] == "product_not_live"


async def test_an_unknown_product_is_404(client):
    response = await client.patch(f"{PRODUCT_PATH}/no-such-product", json=_body(), headers=SUPPORT)
    assert response.status_code == 404


async def test_restoring_a_line_only_dunning_bars_is_409(client, db_url):
    product_id = await _product(client, db_url, status="suspended", reason="barred for arrears (full)")
    response = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body("active", "customer says paid"), headers=SUPPORT)
    assert response.status_code == 409
    assert response.json()["code"] == "not_manually_suspended"


async def test_restoring_an_active_line_and_suspending_a_suspended_one_change_nothing(client, db_url):
    active = await _product(client, db_url)
    response = await client.patch(f"{PRODUCT_PATH}/{active}", json=_body("active", "nothing to do"), headers=SUPPORT)
    assert response.status_code == 200 and response.json()["status"] == "active"
    held = await _product(client, db_url, status="suspended", reason="suspended by staff: fraud")
    with session_scope(db_url) as session:
        session.add(ManualSuspension(product_id=held, request_id="r1", reason="fraud", actor="staff:anna", at=utc(2026, 11, 2)))
    response = await client.patch(f"{PRODUCT_PATH}/{held}", json=_body(), headers=ADMIN)
    assert response.status_code == 200 and response.json()["statusReason"] == "suspended by staff: fraud"


async def test_an_accepted_request_starts_the_products_workflow_and_answers_202_while_it_runs(client, db_url, temporal_client, monkeypatch):
    monkeypatch.setattr(products_router, "SERVICE_STATE_WAIT_S", 0.3)
    product_id = await _product(client, db_url)
    response = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body(), headers={**SUPPORT, "X-Request-ID": "req-suspend-1"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "active"  # no worker: nothing changed yet
    handle = temporal_client.get_workflow_handle(service_state_workflow_id(product_id))
    try:
        description = await handle.describe()
        assert description.workflow_type == SERVICE_STATE_WORKFLOW
        request = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes.input.payloads[0].data
        assert b'"request_id":"req-suspend-1"' in request and b'"target":"suspended"' in request and b'"reason":"fraud suspected"' in request
        busy = await client.patch(f"{PRODUCT_PATH}/{product_id}", json=_body(reason="asked twice"), headers=SUPPORT)
        assert busy.status_code == 409 and busy.json()["code"] == "service_state_change_in_progress"
    finally:
        await handle.terminate(reason="test finished")
    with session_scope(db_url) as session:
        [entry] = session.exec(select(AuditLog).where(AuditLog.request_id == "req-suspend-1")).all()
    assert (entry.reason, entry.resource_type, entry.resource_id, entry.status, entry.actor_role) == ("fraud suspected", "product", product_id, 202, "support")
