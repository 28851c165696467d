"""One payment gateway per app (api.deps.payment_gateway), used by saved payment methods, refunds and Stripe webhooks;
and the keyed digest (HMAC, settings.pii_hash_key) of what a client asked to save, with old plain digests re-hashed.
Both database backends."""
from __future__ import annotations

import hashlib
import json
import uuid

from adapters.payments.sandbox import SandboxGateway
from adapters.payments.stripe_gateway import StripeGateway
from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from api.schemas import MandateAcceptanceIn
from domain.payments import parse_payment_method
from persistence.db import session_scope
from persistence.tables import SavedPaymentMethod
from services import payment_methods
from tests.api.conftest import ACCOUNT_PATH, CRM, FINANCE, TASK_QUEUE, api_settings, client_for, make_account
from tests.api.test_payment_method_saving import GOOD_IBAN, ONLINE, fake, posts  # noqa: F401 - fixture `fake`
from tests.api.test_stripe_webhooks import charge, deliver, event_of, insert_invoice, payment_row, stripe_settings
from tests.fakes.stripe_server import DEFAULT_WEBHOOK_SECRET, FakeStripeServer
from tests.support.refunds import insert_bill, insert_payment

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"


class SpySandbox(SandboxGateway):
    def __init__(self) -> None:
        super().__init__(sepa_settle_delay_s=0)
        self.calls: list[str] = []

    async def ensure_customer(self, billing_account_id: str, **kwargs) -> str:
        self.calls.append("ensure_customer")
        return await super().ensure_customer(billing_account_id, **kwargs)


def gateway_key(settings) -> tuple:
    return (settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s)


async def test_payment_methods_and_refunds_use_the_apps_one_gateway(db_url, temporal_env) -> None:
    settings = api_settings(db_url, stripe_webhook_secret=DEFAULT_WEBHOOK_SECRET)
    app = create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    spy = SpySandbox()
    app.state.payment_gateway = (gateway_key(settings), spy)
    async with client_for(app) as http:
        account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
        assert spy.calls == ["ensure_customer"]
        insert_bill(db_url, account, 2379)
        payment_id = insert_payment(db_url, account, 2379, method="card", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
        refund = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                                 json={"account": {"id": account["id"]}, "payment": {"id": payment_id},
                                       "totalAmount": {"unit": "EUR", "value": "5.00"}, "reason": "goodwill"})
        assert (refund.status_code, refund.json()["status"]) == (201, "succeeded")
        assert spy.refunds_created == 1
        # Without Stripe, webhooks stay unconfigured (the sandbox knows none of Stripe's objects).
        event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "charge.dispute.created", "created": 1,
                 "data": {"object": {"id": "dp_x", "object": "dispute", "payment_intent": "pi_x"}}}
        body, headers = FakeStripeServer().webhook_request(event)
        hook = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()["code"]) == (503, "stripe_not_configured")
    assert app.state.payment_gateway[1] is spy
    assert not any(hasattr(app.state, name) for name in ("refund_gateway", "payment_method_gateway", "stripe_webhook_gateway"))


async def test_stripe_webhooks_use_the_apps_one_gateway(db_url, temporal_env, fake) -> None:
    settings = stripe_settings(db_url, fake)
    app = create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    reads: list[str] = []

    class SpyStripe(StripeGateway):
        async def retrieve_dispute(self, gateway_dispute_id: str):
            reads.append(gateway_dispute_id)
            return await super().retrieve_dispute(gateway_dispute_id)

    app.state.payment_gateway = (gateway_key(settings), SpyStripe(fake.api_key, api_base=fake.url, max_network_retries=0))
    async with client_for(app) as http:
        account = await make_account(http, defaultPaymentMethod={"id": "pm_card_visa"})
        assert len(posts(fake, "/v1/customers")) == 1
        outcome = await charge(db_url, StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0), insert_invoice(db_url, account))
        pi = payment_row(db_url, outcome.payment_id).gateway_payment_id
        dispute = fake.open_dispute(pi)
        response = await deliver(http, fake, event_of(fake, dispute["id"], "charge.dispute.created"))
        assert response.status_code == 200, response.text
    assert reads == [dispute["id"]]


def plain_digest(raw: str, acceptance, holder: str) -> str:
    """The digest o2c stored before the key: a plain SHA-256 (found by trying the account numbers of a bank code)."""
    ref = parse_payment_method(raw)
    data = {"kind": ref.kind, "pm": ref.payment_method_id, "iban": ref.iban, "acceptance": acceptance.model_dump(), "holder": holder}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


async def test_the_iban_digest_is_keyed_and_an_old_plain_digest_is_rehashed(db_url, temporal_env, fake) -> None:
    settings = api_settings(db_url, stripe_api_key=fake.api_key, stripe_api_base=fake.url, pii_hash_key="a-production-secret")
    raw, acceptance = f"sepa:{GOOD_IBAN}", MandateAcceptanceIn(**ONLINE).domain()
    async with client_for(create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as http:
        account = await make_account(http)
        patch = {"defaultPaymentMethod": {"id": raw}, "mandateAcceptance": ONLINE}
        assert (await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json=patch)).status_code == 200
        with session_scope(db_url) as session:
            stored = session.get(SavedPaymentMethod, account["id"]).source_digest
        ref, holder = parse_payment_method(raw), ONLINE["accountHolder"]
        assert stored == payment_methods.source_digest(ref, acceptance, holder, key="a-production-secret")
        assert stored != payment_methods.source_digest(ref, acceptance, holder, key="another-key")
        assert stored != plain_digest(raw, acceptance, holder)

        # A row from before the key holds the plain digest: the same request saves again (idempotent at Stripe) and re-hashes it.
        with session_scope(db_url) as session:
            row = session.get(SavedPaymentMethod, account["id"])
            row.source_digest = plain_digest(raw, acceptance, holder)
            session.add(row)
        assert (await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json=patch)).status_code == 200
        with session_scope(db_url) as session:
            assert session.get(SavedPaymentMethod, account["id"]).source_digest == stored
        setups = len(posts(fake, "/v1/setup_intents"))
        assert (await http.patch(f"{ACCOUNT_PATH}/{account['id']}", headers=CRM, json=patch)).status_code == 200
        assert len(posts(fake, "/v1/setup_intents")) == setups  # now it matches: no gateway call
