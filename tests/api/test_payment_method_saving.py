"""Saving a billing account's payment method at the gateway from the account API (issue 6): over real
HTTP against the fake Stripe server with the real SDK, and with the embedded SandboxGateway; then the
charge activity uses what was saved. Runs on both database backends."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
from sqlmodel import select

from activities.billing import BillingActivities
from adapters.payments.sandbox import SandboxGateway
from adapters.payments.stripe_gateway import StripeGateway
from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from persistence.db import session_scope
from persistence.tables import AuditLog, BillingAccount, BusinessEvent, Invoice
from services import payment_methods
from tests.api.conftest import ACCOUNT_PATH, CRM, FINANCE, SUPPORT, TASK_QUEUE, api_settings, client_for, make_account, make_customer, utc
from tests.fakes.stripe_server import FakeStripeServer

GOOD_IBAN = "DE89370400440532013000"
ONLINE = {"type": "online", "ipAddress": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)", "accountHolder": "Erika Mustermann"}


@pytest.fixture
def fake(fake_stripe: FakeStripeServer) -> FakeStripeServer:
    return fake_stripe


@pytest.fixture(scope="module")
async def http(db_url, temporal_env, stripe_server) -> AsyncIterator[httpx.AsyncClient]:
    settings = api_settings(db_url, stripe_api_key=stripe_server.api_key, stripe_api_base=stripe_server.url)
    async with client_for(create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as client:
        yield client


@pytest.fixture(scope="module")
async def sandbox_http(db_url, temporal_env) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(api_settings(db_url), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as client:
        yield client


def insert_invoice(db_url: str, account: dict, gross_cents: int = 2379, month: int = 2) -> str:
    invoice_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Invoice(
            id=invoice_id, number=f"T-2026-{uuid.uuid4().hex[:8]}", billing_account_id=account["id"],
            customer_id=account["relatedParty"][0]["id"], state="sent",
            period_start=utc(2026, month - 1, 1), period_end=utc(2026, month, 1),
            local_period_start=date(2026, month - 1, 1), local_period_end=date(2026, month, 1),
            issued_at=utc(2026, 3, 1, 6), due_at=utc(2026, 3, 15, 6),
            net_cents=gross_cents - 380, vat_cents=380, gross_cents=gross_cents, lines=[], vat_breakdown=[],
        ))
    return invoice_id


async def charge(db_url: str, gateway, invoice_id: str, attempt: int = 1):
    activities = BillingActivities(settings=api_settings(db_url), catalog=None, profiles={}, gateway=gateway, oss=None, notifier=None)
    return await activities.charge_invoice(invoice_id, attempt)


async def payment_method_of(client: httpx.AsyncClient, account_id: str, headers=CRM) -> dict:
    response = await client.get(f"{ACCOUNT_PATH}/{account_id}/paymentMethod", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def posts(fake: FakeStripeServer, path: str) -> list:
    return fake.requests_to("POST", path)


# --- Stripe, over HTTP -------------------------------------------------------------------------


async def test_a_card_given_at_creation_is_attached_to_the_accounts_stripe_customer_and_charged_with_it(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": "4242424242424242"})
    assert account["defaultPaymentMethod"]["id"] == "4242424242424242"  # TMF666 echoes what the client sent
    method = await payment_method_of(http, account["id"])
    [customer] = fake.customers.values()
    assert customer["metadata"]["billing_account_id"] == account["id"]
    saved = fake.payment_methods[method["gatewayPaymentMethodId"]]
    assert saved["customer"] == customer["id"] == method["gatewayCustomerId"]
    assert (method["status"], method["kind"], method["last4"], method["gateway"]) == ("active", "card", "4242", "stripe")
    [attach] = posts(fake, "/v1/payment_methods/pm_card_visa/attach")
    assert attach.form == {"customer": customer["id"]}
    assert attach.idempotency_key == f"o2c-attach-{customer['id']}-pm_card_visa"

    outcome = await charge(db_url, StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0), insert_invoice(db_url, account))
    assert outcome.status == "succeeded"
    [create] = posts(fake, "/v1/payment_intents")
    assert (create.form["customer"], create.form["payment_method"]) == (customer["id"], saved["id"])


async def test_patching_the_same_card_twice_makes_one_customer_and_one_attach(http, fake) -> None:
    account = await make_account(http)
    for _ in range(2):
        response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_card_mastercard"}})
        assert response.status_code == 200, response.text
    assert len(posts(fake, "/v1/customers")) == 1
    assert len(posts(fake, "/v1/payment_methods/pm_card_mastercard/attach")) == 1
    assert len(fake.customers) == 1 and len(fake.payment_methods) == 1
    assert (await payment_method_of(http, account["id"]))["brand"] == "mastercard"


async def test_a_sepa_mandate_accepted_online_is_set_up_with_its_evidence_and_no_iban_is_kept(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM,
                                json={"defaultPaymentMethod": {"id": f"sepa:{GOOD_IBAN}"}, "mandateAcceptance": ONLINE})
    assert response.status_code == 200, response.text
    [setup] = posts(fake, "/v1/setup_intents")
    assert setup.form["mandate_data[customer_acceptance][type]"] == "online"
    assert setup.form["mandate_data[customer_acceptance][online][ip_address]"] == "203.0.113.7"
    assert setup.form["payment_method_data[billing_details][name]"] == "Erika Mustermann"
    method = await payment_method_of(http, account["id"])
    [mandate] = fake.mandates.values()
    assert method["mandate"] == {"id": mandate["id"], "acceptance": "online", "status": "active"}
    assert method["kind"] == "sepa_debit" and method["last4"] == "3000"
    assert response.json()["defaultPaymentMethod"]["id"] == f"sepa:{method['gatewayPaymentMethodId']}"
    assert len(fake.customers) == 1  # the customer of the card is reused
    with session_scope(db_url) as session:
        assert GOOD_IBAN not in (session.get(BillingAccount, account["id"]).payment_method or "")
        audit = session.exec(select(AuditLog).where(AuditLog.resource_id == account["id"], AuditLog.method == "PATCH")).one()
        assert audit.actor_role == "crm"
        assert audit.before["paymentMethod"]["kind"] == "card" and audit.after["paymentMethod"]["kind"] == "sepa_debit"

    outcome = await charge(db_url, StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0), insert_invoice(db_url, account))
    assert outcome.status == "processing"
    [create] = posts(fake, "/v1/payment_intents")
    assert create.form["payment_method"] == method["gatewayPaymentMethodId"] and "mandate_data[customer_acceptance][type]" not in create.form


async def test_a_refused_card_is_answered_at_once_and_nothing_is_created(http, fake, db_url) -> None:
    customer = await make_customer(http)
    body = {"name": "Konto", "relatedParty": [{"id": customer["id"], "role": "customer"}], "defaultPaymentMethod": {"id": "4000000000009987"}}
    response = await http.post(ACCOUNT_PATH, headers=CRM, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "payment_method_refused"
    assert response.json()["errors"][0] == {"field": "defaultPaymentMethod.id", "code": "lost_card", "message": response.json()["errors"][0]["message"]}
    listed = await http.get(ACCOUNT_PATH, headers=CRM, params={"relatedParty.id": customer["id"]})
    assert listed.json() == []

    account = await make_account(http, customer["id"], defaultPaymentMethod={"id": "pm_card_visa"})
    before = await payment_method_of(http, account["id"])
    refused = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_card_chargeDeclinedInsufficientFunds"}})
    assert (refused.status_code, refused.json()["code"], refused.json()["errors"][0]["code"]) == (422, "payment_method_refused", "insufficient_funds")
    assert await payment_method_of(http, account["id"]) == before


async def test_a_gateway_that_cannot_be_reached_is_a_503_and_a_retry_saves_the_method(http, fake) -> None:
    account = await make_account(http)
    fake.fail_next(3, status=500)  # the first try and the SDK's two retries
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_card_visa"}})
    assert (response.status_code, response.json()["code"]) == (503, "gateway_unavailable")
    assert (await payment_method_of(http, account["id"]))["status"] == "none"
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_card_visa"}})
    assert response.status_code == 200
    assert (await payment_method_of(http, account["id"]))["status"] == "active"
    assert len(fake.customers) == 1


async def test_bad_input_is_refused_with_codes_before_any_gateway_call(http, fake) -> None:
    account = await make_account(http)
    cases = [
        ({"defaultPaymentMethod": {"id": "4111111111111111"}}, "invalid_payment_method"),
        ({"defaultPaymentMethod": {"id": "sepa:DE00123"}}, "invalid_payment_method"),
        ({"defaultPaymentMethod": {"id": f"sepa:{GOOD_IBAN}"}, "mandateAcceptance": {"type": "online", "ipAddress": "203.0.113.7"}},
         "incomplete_mandate_acceptance"),
        ({"defaultPaymentMethod": {"id": "pm_card_visa"}, "mandateAcceptance": {"type": "offline"}}, "mandate_not_applicable"),
        ({"mandateAcceptance": {"type": "offline"}}, "mandate_not_applicable"),
    ]
    for body, code in cases:
        response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json=body)
        assert response.status_code == 422, body
        assert code in {e["code"] for e in response.json()["errors"]}, (body, response.json())
    # A method the gateway does not know.
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_nothing_like_it"}})
    assert (response.status_code, response.json()["code"]) == (422, "invalid_payment_method")
    assert posts(fake, "/v1/setup_intents") == []


async def test_roles(http, fake) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=SUPPORT, json={"defaultPaymentMethod": {"id": "pm_card_amex"}})
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert (await http.get(f"{ACCOUNT_PATH}/{account['id']}/paymentMethod", headers=FINANCE)).status_code == 403
    assert (await http.get(f"{ACCOUNT_PATH}/{account['id']}/paymentMethod")).status_code == 401
    assert (await payment_method_of(http, account["id"], headers=SUPPORT))["gatewayPaymentMethodId"].startswith("pm_")
    assert posts(fake, "/v1/payment_methods/pm_card_amex/attach") == []


async def test_a_revoked_mandate_makes_charges_hard_declines_until_a_new_method_is_saved(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": f"sepa:{GOOD_IBAN}"})
    method = await payment_method_of(http, account["id"])
    assert method["mandate"]["acceptance"] == "offline"
    with session_scope(db_url) as session:
        assert payment_methods.record_mandate_status(session, method["mandate"]["id"], "inactive") is not None
        assert payment_methods.record_mandate_status(session, method["mandate"]["id"], "inactive") is None  # once
    assert (await payment_method_of(http, account["id"]))["mandate"]["status"] == "revoked"
    gateway = StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    assert (outcome.status, outcome.decline_code, outcome.decline_class) == ("declined", "mandate_revoked", "hard")
    assert posts(fake, "/v1/payment_intents") == []  # the gateway is not asked
    with session_scope(db_url) as session:
        kinds = [e.kind for e in session.exec(select(BusinessEvent).where(BusinessEvent.billing_account_id == account["id"]))]
    assert "payment_method.revoked" in kinds

    # The same IBAN with other mandate data within the gateway's idempotency window: StripeGateway's key
    # (customer + IBAN) was used with other parameters, answered 409 and nothing changes.
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": f"sepa:{GOOD_IBAN}"},
                                                                                     "mandateAcceptance": ONLINE})
    assert (response.status_code, response.json()["code"]) == (409, "payment_method_conflict")
    assert (await payment_method_of(http, account["id"]))["status"] == "revoked"
    # A new method clears the flag.
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "pm_card_visa"}})
    assert response.status_code == 200
    assert (await payment_method_of(http, account["id"]))["status"] == "active"
    assert (await charge(db_url, gateway, insert_invoice(db_url, account, month=3))).status == "succeeded"


async def test_removing_the_payment_method(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": None})
    assert response.status_code == 200 and response.json()["defaultPaymentMethod"] is None
    assert (await payment_method_of(http, account["id"]))["status"] == "none"
    outcome = await charge(db_url, StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0), insert_invoice(db_url, account))
    assert outcome.status == "no_payment_method"


# --- the embedded sandbox --------------------------------------------------------------------------


async def test_sandbox_saves_cards_and_mandates_and_charges_them(sandbox_http, db_url) -> None:
    account = await make_account(sandbox_http, defaultPaymentMethod={"id": f"sepa:{GOOD_IBAN}"})
    method = await payment_method_of(sandbox_http, account["id"])
    assert (method["gateway"], method["gatewayPaymentMethodId"]) == ("sandbox", f"pm_sbx_sepa_{GOOD_IBAN}")
    assert method["mandate"]["id"].startswith("sbx_mandate_")
    gateway = SandboxGateway(sepa_settle_delay_s=60)
    outcome = await charge(db_url, gateway, insert_invoice(db_url, account))
    assert outcome.status == "processing"

    refused = await sandbox_http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "4000000000000002"}})
    assert (refused.status_code, refused.json()["code"], refused.json()["errors"][0]["code"]) == (422, "payment_method_refused", "generic_decline")
    unknown_iban = await sandbox_http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM,
                                            json={"defaultPaymentMethod": {"id": "sepa:GB82WEST12345698765432"}})
    assert (unknown_iban.status_code, unknown_iban.json()["code"]) == (422, "invalid_payment_method")

    card = await sandbox_http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "4000000000000341"}})
    assert card.status_code == 200
    assert (await payment_method_of(sandbox_http, account["id"]))["gatewayPaymentMethodId"] == "pm_sbx_card_chargeCustomerFail"
    declined = await charge(db_url, gateway, insert_invoice(db_url, account, month=3))
    assert (declined.status, declined.decline_code) == ("declined", "generic_decline")  # charged with the saved card


async def test_a_sepa_method_saved_before_is_taken_as_it_is(http, fake) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
    response = await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json={"defaultPaymentMethod": {"id": "sepa:pm_1SavedElsewhere"}})
    assert response.status_code == 200 and response.json()["defaultPaymentMethod"]["id"] == "sepa:pm_1SavedElsewhere"
    method = await payment_method_of(http, account["id"])
    assert (method["id"], method["status"]) == ("sepa:pm_1SavedElsewhere", "notSaved")
    assert posts(fake, "/v1/setup_intents") == []
