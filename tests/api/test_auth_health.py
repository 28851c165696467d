"""Authentication, the role table, the error shape and /health."""
from __future__ import annotations

import pytest

from api.app import create_app
from api.auth import KeyRing, InvalidKeyConfig
from tests.api.conftest import (
    ACCOUNT_PATH,
    ADMIN,
    BILL_PATH,
    CRM,
    CUSTOMER_PATH,
    FINANCE,
    OFFERING_PATH,
    ORDER_PATH,
    OSS,
    OSS_PATH,
    PAYMENT_PATH,
    PRODUCT_PATH,
    REJECTED_PATH,
    SUPPORT,
    USAGE_PATH,
    api_settings,
    client_for,
)

READS = {
    "customer": CUSTOMER_PATH,
    "billingAccount": ACCOUNT_PATH,
    "productOffering": OFFERING_PATH,
    "productOrder": ORDER_PATH,
    "product": PRODUCT_PATH,
    "usage": USAGE_PATH,
    "rejectedUsage": REJECTED_PATH,
    "customerBill": BILL_PATH,
    "payment": PAYMENT_PATH,
}

# Who may list what: the expected outcome for every role, written out independently of api.auth.
CAN_READ = {
    "admin": set(READS),
    "support": set(READS),
    "crm": {"customer", "billingAccount", "productOffering", "productOrder", "product", "usage"},
    "finance": {"payment", "customerBill"},
    "oss": set(),
}
KEYS = {"admin": ADMIN, "support": SUPPORT, "crm": CRM, "finance": FINANCE, "oss": OSS}


async def test_no_key_and_unknown_key_are_401_with_the_error_shape(client):
    for headers in ({}, {"X-API-Key": "not-a-key"}, {"X-API-Key": ""}):
        response = await client.get(CUSTOMER_PATH, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["@type"] == "Error"
        assert body["code"] == "unauthorized"
        assert body["status"] == "401"
        assert body["reason"] and body["message"]


@pytest.mark.parametrize("role", sorted(CAN_READ))
async def test_read_access_follows_the_role_table(client, role):
    for resource, path in READS.items():
        response = await client.get(path, headers=KEYS[role])
        expected = 200 if resource in CAN_READ[role] else 403
        assert response.status_code == expected, (role, resource, response.text)
        if expected == 403:
            assert response.json()["code"] == "forbidden"


async def test_write_access_is_narrower_than_read(client):
    # support reads everything but writes nothing; finance cannot create customers; oss only calls back.
    assert (await client.post(CUSTOMER_PATH, headers=SUPPORT, json={"name": "x"})).status_code == 403
    assert (await client.post(CUSTOMER_PATH, headers=FINANCE, json={"name": "x"})).status_code == 403
    assert (await client.post(USAGE_PATH, headers=SUPPORT, json={})).status_code == 403
    assert (await client.post(PAYMENT_PATH, headers=CRM, json={})).status_code == 403
    assert (await client.post(PAYMENT_PATH, headers=SUPPORT, json={})).status_code == 403
    assert (await client.post(OSS_PATH, headers=CRM, json={})).status_code == 403
    assert (await client.post(ORDER_PATH, headers=OSS, json={})).status_code == 403
    # Auth is checked before the body: an unauthorised caller learns nothing about validation.
    assert (await client.post(ORDER_PATH, json={"bad": True})).status_code == 401


def test_key_ring_keeps_digests_and_rejects_bad_roles():
    ring = KeyRing("k1:admin, k2:crm")
    assert ring.role_for("k1") == "admin"
    assert ring.role_for("k2") == "crm"
    assert ring.role_for("k3") is None
    assert ring.role_for(None) is None
    assert all(b"k1" not in digest for digest, _ in ring._entries)
    with pytest.raises(InvalidKeyConfig):
        KeyRing("k1:superuser")
    with pytest.raises(InvalidKeyConfig):
        KeyRing("no-role-here")


async def test_docs_and_health_are_public(client):
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "dependencies": {"database": {"status": "up"}, "temporal": {"status": "up"}}}


async def test_unknown_route_uses_the_error_shape(client):
    response = await client.get("/tmf-api/nothing/here", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["@type"] == "Error"
    assert response.json()["code"] == "not_found"


async def test_health_connects_lazily_and_reports_temporal_down(db_url, temporal_env):
    # No gateway injected: the app connects itself, on first use.
    up_app = create_app(api_settings(db_url, temporal_address=temporal_env.client.service_client.config.target_host))
    async with client_for(up_app) as http:
        assert (await http.get("/health")).json()["dependencies"]["temporal"] == {"status": "up"}

    down_app = create_app(api_settings(db_url, temporal_address="127.0.0.1:1"))
    async with client_for(down_app) as http:
        response = await http.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert body["dependencies"]["database"] == {"status": "up"}
        assert body["dependencies"]["temporal"]["status"] == "down"
        assert "detail" in body["dependencies"]["temporal"]
        # Reads that need no Temporal keep working while it is down.
        assert (await http.get(OFFERING_PATH, headers=CRM)).status_code == 200


def test_bad_catalog_fails_at_start(db_url, tmp_path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text("schema_version: 1\nversion: x\nofferings: []\n")
    with pytest.raises(Exception):
        create_app(api_settings(db_url, catalog_path=bad))
