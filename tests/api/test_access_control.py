"""Access control: the role matrix over every route, API keys (hashed, rotated, revoked), staff accounts
and console sessions (login, logout, expiry, CSRF), and ids of one customer never reaching another's data."""
from __future__ import annotations

import hashlib
import io
import re
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlmodel import select

from api.app import create_app
from api.auth import AccessSettings
from persistence.db import session_scope
from persistence.tables import ApiKey, AuditLog, Invoice, ProductOrder, StaffSession, StaffUser
from services import staff
from services.audit import Actor
from tests.api.conftest import (
    ADMIN,
    CRM,
    CUSTOMER_PATH,
    FINANCE,
    ORDER_PATH,
    OSS,
    PAYMENT_PATH,
    SUPPORT,
    api_settings,
    client_for,
    make_account,
    make_customer,
    order_body,
)

KEYS = {"admin": ADMIN, "crm": CRM, "support": SUPPORT, "finance": FINANCE, "oss": OSS}
ROLES = tuple(KEYS)
TEST_ACTOR = Actor(kind="system", id="tests", role="admin", name="tests")

T = "/tmf-api"
ACC = f"{T}/accountManagement/v4"
BILL = f"{T}/customerBillManagement/v4"
HUB_APIS = (f"{T}/productOrderingManagement/v4", f"{T}/productInventory/v4", BILL, f"{T}/paymentManagement/v4", ACC)

# Who may change what, written out from the issue's role description, independently of api.auth.
# (method, route path) -> the roles that may. Every write route of the app must be listed here.
WRITERS: dict[tuple[str, str], set[str]] = {
    ("POST", f"{T}/customerManagement/v4/customer"): {"admin", "crm"},
    ("POST", f"{ACC}/billingAccount"): {"admin", "crm"},
    ("PATCH", f"{ACC}/billingAccount/{{account_id}}"): {"admin", "crm"},
    ("POST", f"{ACC}/billingAccount/{{account_id}}/roamingDataCap/continue"): {"admin", "crm"},
    ("PUT", f"{ACC}/billingAccount/{{account_id}}/invoiceHold"): {"admin", "finance"},
    ("POST", f"{ACC}/billingAccount/{{account_id}}/dunning/pause"): {"admin", "support"},
    ("POST", f"{ACC}/billingAccount/{{account_id}}/dunning/resume"): {"admin", "support"},
    ("POST", f"{ACC}/billingAccount/{{account_id}}/dunning/waiveFee"): {"admin", "finance"},
    ("POST", f"{ACC}/billingAccount/{{account_id}}/dunning/retryPayment"): {"admin", "finance"},
    ("POST", f"{T}/productOrderingManagement/v4/productOrder"): {"admin", "crm"},
    ("POST", f"{T}/productOrderingManagement/v4/cancelProductOrder"): {"admin", "crm", "support"},
    ("PATCH", f"{T}/productInventory/v4/product/{{product_id}}"): {"admin", "support"},  # suspend / restore a service
    ("POST", f"{T}/serviceOrdering/v4/listener/serviceOrderStateChangeEvent"): {"admin", "oss"},
    ("POST", f"{T}/usageManagement/v4/usage"): {"admin", "crm"},
    ("POST", f"{T}/usageManagement/v4/rejectedUsage/recycle"): {"admin", "support"},
    ("PATCH", f"{BILL}/customerBill/{{bill_id}}"): {"admin", "finance"},
    ("POST", f"{BILL}/customerBill/{{bill_id}}/creditNote"): {"admin", "finance"},
    ("POST", f"{BILL}/customerBillOnDemand"): {"admin", "finance"},
    ("POST", f"{T}/paymentManagement/v4/payment"): {"admin", "finance"},
    ("POST", f"{T}/paymentManagement/v4/refund"): {"admin", "finance"},
    ("POST", "/admin/v1/apiKey"): {"admin"},
    ("POST", "/admin/v1/apiKey/{key_id}/rotate"): {"admin"},
    ("POST", "/admin/v1/apiKey/{key_id}/revoke"): {"admin"},
    **{("POST", f"{api}/hub"): {"admin", "crm"} for api in HUB_APIS},
    **{("DELETE", f"{api}/hub/{{listener_id}}"): {"admin", "crm"} for api in HUB_APIS},
    **{("POST", f"{api}/hub/{{listener_id}}/failedDelivery/replay"): {"admin", "crm"} for api in HUB_APIS},
    **{("POST", f"{api}/hub/{{listener_id}}/failedDelivery/{{delivery_id}}/replay"): {"admin", "crm"} for api in HUB_APIS},
}
# Not behind an API key: Stripe signs its webhooks; the console has its own sign-in (tested below).
NOT_KEYED = re.compile(r"^(/webhooks/stripe|/console)")

# Who may read what: every GET route must be listed (the public ones in PUBLIC).
PUBLIC = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
READERS: dict[str, set[str]] = {
    f"{T}/customerManagement/v4/customer": {"admin", "support", "crm"},
    f"{T}/customerManagement/v4/customer/{{customer_id}}": {"admin", "support", "crm"},
    f"{T}/customerManagement/v4/customer/{{customer_id}}/audit": {"admin", "support", "finance"},
    f"{ACC}/billingAccount": {"admin", "support", "crm"},
    f"{ACC}/billingAccount/{{account_id}}": {"admin", "support", "crm"},
    f"{ACC}/billingAccount/{{account_id}}/events": {"admin", "support", "crm"},
    f"{ACC}/billingAccount/{{account_id}}/invoiceHold": {"admin", "support", "crm", "finance"},
    f"{ACC}/billingAccount/{{account_id}}/dunning": {"admin", "support", "finance"},
    f"{ACC}/billingAccount/{{account_id}}/paymentMethod": {"admin", "support", "crm"},
    f"{T}/productCatalogManagement/v4/productOffering": {"admin", "support", "crm"},
    f"{T}/productCatalogManagement/v4/productOffering/{{offering_id}}": {"admin", "support", "crm"},
    f"{T}/productOrderingManagement/v4/productOrder": {"admin", "support", "crm"},
    f"{T}/productOrderingManagement/v4/productOrder/{{order_id}}": {"admin", "support", "crm"},
    f"{T}/productOrderingManagement/v4/cancelProductOrder": {"admin", "support", "crm"},
    f"{T}/productOrderingManagement/v4/cancelProductOrder/{{cancel_id}}": {"admin", "support", "crm"},
    f"{T}/productInventory/v4/product": {"admin", "support", "crm"},
    f"{T}/productInventory/v4/product/{{product_id}}": {"admin", "support", "crm"},
    f"{T}/usageManagement/v4/usage": {"admin", "support", "crm"},
    f"{T}/usageManagement/v4/usage/{{record_id}}": {"admin", "support", "crm"},
    f"{T}/usageManagement/v4/rejectedUsage": {"admin", "support"},
    f"{T}/usageManagement/v4/rejectedUsage/{{rejected_id}}": {"admin", "support"},
    f"{BILL}/customerBill": {"admin", "support", "finance"},
    f"{BILL}/customerBill/{{bill_id}}": {"admin", "support", "finance"},
    f"{BILL}/customerBill/{{bill_id}}/document.pdf": {"admin", "support", "finance"},
    f"{BILL}/customerBill/{{bill_id}}/document.xml": {"admin", "support", "finance"},
    f"{BILL}/customerBillOnDemand": {"admin", "support", "finance"},
    f"{BILL}/customerBillOnDemand/{{request_id}}": {"admin", "support", "finance"},
    f"{T}/paymentManagement/v4/payment": {"admin", "support", "finance"},
    f"{T}/paymentManagement/v4/payment/{{payment_id}}": {"admin", "support", "finance"},
    f"{T}/paymentManagement/v4/refund": {"admin", "support", "finance"},
    f"{T}/paymentManagement/v4/refund/{{refund_id}}": {"admin", "support", "finance"},
    "/admin/v1/apiKey": {"admin"},
    "/admin/v1/apiKey/{key_id}": {"admin"},
    **{f"{api}/hub": {"admin", "crm", "support"} for api in HUB_APIS},
    **{f"{api}/hub/{{listener_id}}": {"admin", "crm", "support"} for api in HUB_APIS},
    **{f"{api}/hub/{{listener_id}}/failedDelivery": {"admin", "crm", "support"} for api in HUB_APIS},
}


def _routes(app, methods: set[str]) -> list[tuple[str, str]]:
    from api.console.routes import all_routes

    found = []
    for route in all_routes(app):
        path = getattr(route, "path", "")
        for method in sorted((getattr(route, "methods", None) or set()) & methods):
            found.append((method, path))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_write_route_is_in_the_matrix(app):
    keyed = [(m, p) for m, p in _routes(app, {"POST", "PUT", "PATCH", "DELETE"}) if not NOT_KEYED.match(p)]
    unknown = sorted(set(keyed) - set(WRITERS))
    assert not unknown, f"write routes nobody classified (add them to WRITERS with the roles that may): {unknown}"
    gone = sorted(set(WRITERS) - set(keyed))
    assert not gone, f"WRITERS lists routes the app does not have: {gone}"


def test_every_read_route_is_in_the_matrix(app):
    reads = [p for _m, p in _routes(app, {"GET"}) if not NOT_KEYED.match(p) and p not in PUBLIC]
    unknown = sorted(set(reads) - set(READERS))
    assert not unknown, f"read routes nobody classified (add them to READERS): {unknown}"


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_is_refused_every_write_it_may_not_make(client, role):
    for (method, path), writers in sorted(WRITERS.items()):
        response = await client.request(method, _concrete(path), headers=KEYS[role], json={})
        if role in writers:
            # Allowed through the gate; the empty body or the unknown id is refused further in.
            assert response.status_code not in (401, 403), (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.status_code, response.text)
            assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_is_refused_every_read_it_may_not_see(client, role):
    for path, readers in sorted(READERS.items()):
        response = await client.get(_concrete(path), headers=KEYS[role])
        if role in readers:
            assert response.status_code not in (401, 403), (role, path, response.text)
        else:
            assert response.status_code == 403, (role, path, response.status_code, response.text)


async def test_no_key_is_401_on_every_keyed_route(client, app):
    for method, path in _routes(app, {"GET", "POST", "PUT", "PATCH", "DELETE"}):
        if NOT_KEYED.match(path) or path in PUBLIC:
            continue
        response = await client.request(method, _concrete(path), json={})
        assert response.status_code == 401, (method, path, response.status_code)


# --- API keys --------------------------------------------------------------------------------------


async def _new_key(client, role: str = "crm", name: str | None = None, **extra) -> dict:
    response = await client.post("/admin/v1/apiKey", headers=ADMIN, json={"name": name or f"test {uuid.uuid4().hex[:6]}", "role": role, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_created_key_is_shown_once_and_stored_only_as_its_hash(client, db_url):
    created = await _new_key(client, "crm", reason="onboarding the CRM")
    key = created["key"]
    assert key.startswith("o2c_") and len(key) > 40
    assert (await client.get(CUSTOMER_PATH, headers=_h(key))).status_code == 200
    assert (await client.get(PAYMENT_PATH, headers=_h(key))).status_code == 403  # the role is crm
    shown = (await client.get(f"/admin/v1/apiKey/{created['id']}", headers=ADMIN)).json()
    assert "key" not in shown and shown["role"] == "crm" and shown["prefix"] == key[:10]
    listed = await client.get("/admin/v1/apiKey", headers=ADMIN, params={"limit": 1000})
    assert all("key" not in row for row in listed.json())
    with session_scope(db_url) as session:
        row = session.get(ApiKey, created["id"])
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in " ".join(str(v) for v in row.model_dump().values())
        entry = session.exec(select(AuditLog).where(AuditLog.resource_id == created["id"], AuditLog.action == "apiKey.create")).one()
        assert entry.reason == "onboarding the CRM" and entry.actor_role == "admin" and "key_hash" not in (entry.after or {})
        # The route wrote its own entry in its transaction: the middleware adds no second one.
        assert session.exec(select(AuditLog).where(AuditLog.request_id == entry.request_id)).all() == [entry]


async def test_configured_development_keys_are_seeded_hashed(db_url, app):
    with session_scope(db_url) as session:
        for key, role in (("dev-admin-key", "admin"), ("dev-crm-key", "crm"), ("dev-oss-key", "oss")):
            row = session.exec(select(ApiKey).where(ApiKey.key_hash == hashlib.sha256(key.encode()).hexdigest())).one()
            assert row.role == role and row.source == "config"


async def test_rotation_keeps_the_old_key_for_the_grace_period(client, db_url):
    created = await _new_key(client, "support")
    old_key = created["key"]
    response = await client.post(f"/admin/v1/apiKey/{created['id']}/rotate", headers=ADMIN, json={"gracePeriodSeconds": 3600, "reason": "yearly"})
    assert response.status_code == 201, response.text
    rotated = response.json()
    new_key = rotated["key"]
    assert new_key != old_key and rotated["role"] == "support" and rotated["name"] == created["name"]
    assert rotated["replaces"]["replacedBy"] == rotated["id"]
    ends = datetime.fromisoformat(rotated["replaces"]["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < ends - datetime.now(timezone.utc) <= timedelta(hours=1)
    for key in (old_key, new_key):  # both work during the grace period
        assert (await client.get(CUSTOMER_PATH, headers=_h(key))).status_code == 200
    again = await client.post(f"/admin/v1/apiKey/{created['id']}/rotate", headers=ADMIN, json={})
    assert again.status_code == 409 and again.json()["code"] == "key_already_rotated"
    with session_scope(db_url) as session:
        entry = session.exec(select(AuditLog).where(AuditLog.resource_id == created["id"], AuditLog.action == "apiKey.rotate")).one()
        assert entry.before["expires_at"] is None and entry.after["newKeyId"] == rotated["id"] and entry.reason == "yearly"


async def test_rotation_without_grace_ends_the_old_key_now(client):
    created = await _new_key(client, "crm")
    rotated = (await client.post(f"/admin/v1/apiKey/{created['id']}/rotate", headers=ADMIN, json={"gracePeriodSeconds": 0})).json()
    assert (await client.get(CUSTOMER_PATH, headers=_h(created["key"]))).status_code == 401
    assert (await client.get(CUSTOMER_PATH, headers=_h(rotated["key"]))).status_code == 200


async def test_default_grace_period_comes_from_the_settings(db_url, temporal_env, monkeypatch):
    monkeypatch.setenv("O2C_API_KEY_ROTATION_GRACE_S", "120")
    app = create_app(api_settings(db_url))
    async with client_for(app) as http:
        created = await _new_key(http, "crm")
        rotated = (await http.post(f"/admin/v1/apiKey/{created['id']}/rotate", headers=ADMIN)).json()
    ends = datetime.fromisoformat(rotated["replaces"]["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(seconds=100) < ends - datetime.now(timezone.utc) <= timedelta(seconds=120)


async def test_revoked_key_is_refused_at_once_here_and_in_another_process(client, db_url, temporal_env):
    created = await _new_key(client, "finance")
    key = created["key"]
    other = create_app(api_settings(db_url))  # another API process on the same database
    async with client_for(other) as http:
        assert (await http.get(PAYMENT_PATH, headers=_h(key))).status_code == 200
        revoked = await client.post(f"/admin/v1/apiKey/{created['id']}/revoke", headers=ADMIN, json={"reason": "laptop lost"})
        assert revoked.status_code == 200 and revoked.json()["revokedAt"]
        assert (await client.get(PAYMENT_PATH, headers=_h(key))).status_code == 401
        other.state.o2c.keys.forget()  # the other process trusts a lookup for O2C_API_KEY_CACHE_S; skip the wait
        assert (await http.get(PAYMENT_PATH, headers=_h(key))).status_code == 401
    assert (await client.post(f"/admin/v1/apiKey/{created['id']}/revoke", headers=ADMIN)).status_code == 200  # again: no change
    rotate = await client.post(f"/admin/v1/apiKey/{created['id']}/rotate", headers=ADMIN, json={})
    assert rotate.status_code == 409 and rotate.json()["code"] == "key_not_active"
    with session_scope(db_url) as session:
        assert len(session.exec(select(AuditLog).where(AuditLog.resource_id == created["id"], AuditLog.action == "apiKey.revoke")).all()) == 1


async def test_expired_key_is_refused(client, db_url, app):
    soon = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    created = await _new_key(client, "crm", expiresAt=soon)
    assert (await client.get(CUSTOMER_PATH, headers=_h(created["key"]))).status_code == 200
    with session_scope(db_url) as session:
        row = session.get(ApiKey, created["id"])
        row.expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
        session.add(row)
    app.state.o2c.keys.forget()
    assert (await client.get(CUSTOMER_PATH, headers=_h(created["key"]))).status_code == 401
    past = await client.post("/admin/v1/apiKey", headers=ADMIN, json={"name": "x", "role": "crm", "expiresAt": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422
    bad_role = await client.post("/admin/v1/apiKey", headers=ADMIN, json={"name": "x", "role": "root"})
    assert bad_role.status_code == 422


# --- staff accounts and the console session ---------------------------------------------------------


def make_staff(db_url: str, role: str = "support", password: str = "correct horse battery", username: str | None = None) -> StaffUser:
    name = username or f"staff-{uuid.uuid4().hex[:8]}"
    with session_scope(db_url) as session:
        return staff.create_staff(session, TEST_ACTOR, username=name, display_name=f"Sam {name}", role=role, password=password)


def login_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def console_login(http, username: str, password: str = "correct horse battery", *, next_url: str = "/console"):
    page = await http.get("/console/login")
    assert page.status_code == 200
    return await http.post("/console/login", data={"username": username, "password": password, "csrf_token": login_token(page.text), "next": next_url})


def test_staff_passwords_are_scrypt_hashes(db_url):
    user = make_staff(db_url, password="a long enough secret")
    assert user.password_hash.startswith("scrypt$") and "a long enough secret" not in user.password_hash
    assert staff.verify_password("a long enough secret", user.password_hash)
    assert not staff.verify_password("a long enough secreT", user.password_hash)
    with session_scope(db_url) as session:
        with pytest.raises(Exception) as too_short:
            staff.create_staff(session, TEST_ACTOR, username="shorty", display_name="S", role="support", password="short")
        assert "password" in str(too_short.value)


def test_cli_adds_a_staff_user(db_url, monkeypatch, capsys):
    from o2c_cli.main import main

    username = f"cli-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr("sys.stdin", io.StringIO("a password from stdin\n"))
    main(["staff", "--database-url", db_url, "add", username, "--role", "finance", "--name", "Fiona Finance", "--password-stdin"])
    assert f"staff user {username} (finance) created" in capsys.readouterr().out
    with session_scope(db_url) as session:
        user = staff.get_staff(session, username)
        assert user.role == "finance" and user.display_name == "Fiona Finance" and user.active
        assert staff.authenticate(session, username, "a password from stdin") is not None
        assert session.exec(select(AuditLog).where(AuditLog.action == "staffUser.create", AuditLog.resource_id == user.id)).one().actor_kind == "cli"
    with pytest.raises(SystemExit):  # the same name again
        monkeypatch.setattr("sys.stdin", io.StringIO("a password from stdin\n"))
        main(["staff", "--database-url", db_url, "add", username, "--role", "finance", "--password-stdin"])


async def test_login_sets_a_safe_session_cookie_and_logout_ends_it(app, db_url):
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        first = await http.get("/console/search")
        assert first.status_code == 303 and first.headers["location"].startswith("/console/login")
        response = await console_login(http, user.username, next_url="/console/search?q=x")
        assert response.status_code == 303 and response.headers["location"] == "/console/search?q=x"
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("o2c_console="))
        attributes = cookie.lower()
        assert "httponly" in attributes and "samesite=lax" in attributes and "path=/console" in attributes and "secure" not in attributes
        page = await http.get("/console/search")
        assert page.status_code == 200 and f"Sam {user.username}" in page.text
        # The session is for the console only: it is no API credential.
        assert (await http.get(CUSTOMER_PATH)).status_code == 401
        csrf = login_token(page.text)
        refused = await http.post("/console/logout", data={})
        assert refused.status_code == 403
        assert (await http.get("/console/search")).status_code == 200  # still signed in
        out = await http.post("/console/logout", data={"csrf_token": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        assert (await http.get("/console/search")).status_code == 303
    with session_scope(db_url) as session:
        actions = [e.action for e in session.exec(select(AuditLog).where(AuditLog.actor_id == user.username).order_by(AuditLog.id))]
        assert actions[0] == "console.login" and actions[-1] == "console.logout"


async def test_secure_cookie_when_configured(db_url, temporal_env, monkeypatch):
    monkeypatch.setenv("O2C_CONSOLE_COOKIE_SECURE", "true")
    app = create_app(api_settings(db_url))
    user = make_staff(db_url, "finance")
    # Secure cookies travel over HTTPS only: the client talks https to the app.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://o2c.test") as http:
        page = await http.get("/console/login")
        response = await http.post("/console/login", data={"username": user.username, "password": "correct horse battery",
                                                           "csrf_token": login_token(page.text)})
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("o2c_console="))
    assert "secure" in cookie.lower()


async def test_wrong_password_unknown_user_and_machine_roles_cannot_sign_in(app, db_url):
    user = make_staff(db_url, "support")
    crm_person = make_staff(db_url, "crm")
    async with client_for(app) as http:
        wrong = await console_login(http, user.username, "not the password")
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        assert not any(c.startswith("o2c_console=") for c in wrong.headers.get_list("set-cookie"))
        unknown = await console_login(http, "nobody-" + uuid.uuid4().hex[:6])
        assert unknown.status_code == 401 and "Wrong username or password" in unknown.text
        machine = await console_login(http, crm_person.username)
        assert machine.status_code == 403 and "no access to the staff console" in machine.text
    with session_scope(db_url) as session:
        failed = session.exec(select(AuditLog).where(AuditLog.action == "console.login_failed", AuditLog.resource_id == user.username)).one()
        assert failed.status == 401 and failed.actor_kind == "anonymous"


async def test_login_needs_its_csrf_token_and_the_same_origin(app, db_url):
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        page = await http.get("/console/login")
        token = login_token(page.text)
        form = {"username": user.username, "password": "correct horse battery"}
        assert (await http.post("/console/login", data=form)).status_code == 403
        assert (await http.post("/console/login", data={**form, "csrf_token": "forged"})).status_code == 403
        cross = await http.post("/console/login", data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        ok = await http.post("/console/login", data={**form, "csrf_token": token}, headers={"Origin": "http://o2c.test"})
        assert ok.status_code == 303


async def test_console_form_posts_need_the_session_csrf_token(app, db_url, client):
    user = make_staff(db_url, "support")
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(customer["id"], account["id"]))).json()
    action = f"/console/customer/{customer['id']}/order/{order['id']}/cancel"
    async with client_for(app) as http:
        await console_login(http, user.username)
        page = await http.get(f"/console/customer/{customer['id']}")
        assert page.status_code == 200
        csrf = login_token(page.text)
        for form in ({"reason": "customer asked"}, {"reason": "customer asked", "csrf_token": "x" + csrf}):
            refused = await http.post(action, data=form)
            assert refused.status_code == 403 and "Form expired" in refused.text
        cross = await http.post(action, data={"reason": "customer asked", "csrf_token": csrf}, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
    with session_scope(db_url) as session:
        assert session.get(ProductOrder, order["id"]).state == "acknowledged"  # nothing was cancelled


async def test_expired_and_disabled_sessions_sign_out(app, db_url):
    user = make_staff(db_url, "support")
    async with client_for(app) as http:
        await console_login(http, user.username)
        assert (await http.get("/console/search")).status_code == 200
        with session_scope(db_url) as session:
            for row in session.exec(select(StaffSession).where(StaffSession.staff_user_id == user.id)):
                row.expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
                session.add(row)
        expired = await http.get("/console/search")
        assert expired.status_code == 303 and expired.headers["location"].startswith("/console/login")

        await console_login(http, user.username)
        assert (await http.get("/console/search")).status_code == 200
        with session_scope(db_url) as session:
            staff.set_active(session, TEST_ACTOR, user.username, False, "left the company")
        assert (await http.get("/console/search")).status_code == 303
        assert (await console_login(http, user.username)).status_code == 401


async def test_session_lifetime_comes_from_the_settings(db_url, temporal_env, monkeypatch):
    monkeypatch.setenv("O2C_CONSOLE_SESSION_TTL_S", "600")
    app = create_app(api_settings(db_url))
    user = make_staff(db_url, "admin")
    async with client_for(app) as http:
        response = await console_login(http, user.username)
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("o2c_console="))
    assert "max-age=600" in cookie.lower()
    with session_scope(db_url) as session:
        row = session.exec(select(StaffSession).where(StaffSession.staff_user_id == user.id)).one()
        assert timedelta(seconds=590) < row.expires_at - row.created_at <= timedelta(seconds=600)


def test_access_settings_defaults():
    settings = AccessSettings()
    assert settings.console_cookie_secure is False and settings.api_key_rotation_grace_s == 86400


# --- one customer's ids never reach another customer's data -------------------------------------


def _draft_invoice(db_url: str, account: dict) -> str:
    invoice_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    with session_scope(db_url) as session:
        session.add(Invoice(id=invoice_id, number=None, kind="cycle", billing_account_id=account["id"], customer_id=account["relatedParty"][0]["id"],
                            state="onHold", period_start=now, period_end=now + timedelta(days=30), local_period_start=now.date(),
                            local_period_end=(now + timedelta(days=30)).date(), issued_at=now, due_at=now + timedelta(days=14),
                            net_cents=1000, vat_cents=190, gross_cents=1190))
    return invoice_id


async def test_ids_of_another_customer_are_refused(client, app, db_url):
    alice, bob = await make_customer(client, "Alice"), await make_customer(client, "Bob")
    alice_account, bob_account = await make_account(client, alice["id"]), await make_account(client, bob["id"])
    bob_order = (await client.post(ORDER_PATH, headers=CRM, json=order_body(bob["id"], bob_account["id"]))).json()
    bob_bill = _draft_invoice(db_url, bob_account)

    # API: an order for Alice on Bob's account, a payment on Alice's account for Bob's bill.
    mixed = await client.post(ORDER_PATH, headers=CRM, json=order_body(alice["id"], bob_account["id"]))
    assert mixed.status_code == 422 and any(e["code"] == "billing_account_mismatch" for e in mixed.json()["errors"])
    payment = await client.post(PAYMENT_PATH, headers=FINANCE, json={
        "correlatorId": f"x-{uuid.uuid4()}", "account": {"id": alice_account["id"]}, "totalAmount": {"unit": "EUR", "value": "11.90"},
        "paymentMethod": {"@type": "bankTransfer"}, "paymentItem": [{"item": {"id": bob_bill}}]})
    assert payment.status_code == 422 and any(e["code"] == "bill_account_mismatch" for e in payment.json()["errors"])

    # Console: Bob's order, account and bill addressed under Alice's page are not found, and nothing happens.
    user = make_staff(db_url, "admin")
    async with client_for(app) as http:
        await console_login(http, user.username)
        page = await http.get(f"/console/customer/{alice['id']}")
        csrf = login_token(page.text)
        base = f"/console/customer/{alice['id']}"
        cancel = await http.post(f"{base}/order/{bob_order['id']}/cancel", data={"reason": "wrong customer", "csrf_token": csrf})
        assert cancel.status_code == 404
        pay = await http.post(f"{base}/account/{bob_account['id']}/payment", data={"amount": "5", "reason": "x", "csrf_token": csrf})
        assert pay.status_code == 404
        credit = await http.post(f"{base}/bill/{bob_bill}/credit-note", data={"reason": "x", "csrf_token": csrf})
        assert credit.status_code == 404
        assert (await http.get(f"{base}/bill/{bob_bill}/document.pdf")).status_code == 404
        assert bob["name"] not in (await http.get(base)).text
    with session_scope(db_url) as session:
        assert session.get(ProductOrder, bob_order["id"]).state == "acknowledged"

    # Audit: Alice's entries say nothing about Bob's resources.
    entries = (await client.get(f"{CUSTOMER_PATH}/{alice['id']}/audit", headers=SUPPORT, params={"limit": 1000})).json()
    assert entries and all(e["customerId"] == alice["id"] for e in entries)
    assert not any(e["resource"] and e["resource"]["id"] in (bob["id"], bob_account["id"], bob_order["id"]) for e in entries)
