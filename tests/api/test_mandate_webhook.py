"""A SEPA mandate the debtor's bank cancels (Stripe `mandate.updated`): the webhook re-reads the mandate and
flags the account's saved method, so the next debit is a hard decline that dunning does not retry."""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.payments.sandbox import SandboxGateway
from adapters.payments.stripe_gateway import StripeGateway
from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from domain.payments import MandateAcceptance
from tests.api.conftest import TASK_QUEUE, client_for, make_account
from tests.api.test_payment_method_saving import GOOD_IBAN, charge, insert_invoice, payment_method_of, posts
from tests.api.test_stripe_webhooks import deliver, stripe_settings
from tests.fakes.stripe_server import FakeStripeServer


@pytest.fixture
def fake(fake_stripe: FakeStripeServer) -> FakeStripeServer:
    return fake_stripe


@pytest.fixture(scope="module")
async def http(db_url, temporal_env, stripe_server) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stripe_settings(db_url, stripe_server), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    async with client_for(app) as client:
        yield client


async def test_a_cancelled_mandate_turns_debits_into_hard_declines(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": f"sepa:{GOOD_IBAN}"})
    mandate_id = (await payment_method_of(http, account["id"]))["mandate"]["id"]
    assert fake.mandates[mandate_id]["status"] == "active"

    fake.revoke_mandate(mandate_id)
    [event] = fake.events_for(mandate_id, "mandate.updated")
    first = await deliver(http, fake, event)
    assert (first.status_code, first.json()["result"]) == (200, "applied")
    assert (await deliver(http, fake, event)).json()["result"] == "duplicate"
    assert (await payment_method_of(http, account["id"]))["mandate"]["status"] == "revoked"

    outcome = await charge(db_url, StripeGateway(fake.api_key, api_base=fake.url, max_network_retries=0), insert_invoice(db_url, account))
    assert (outcome.status, outcome.decline_code, outcome.decline_class) == ("declined", "mandate_revoked", "hard")
    assert posts(fake, "/v1/payment_intents") == []


async def test_the_event_body_is_not_trusted_the_mandate_is_read_back(http, fake, db_url) -> None:
    account = await make_account(http, defaultPaymentMethod={"id": f"sepa:{GOOD_IBAN}"})
    mandate_id = (await payment_method_of(http, account["id"]))["mandate"]["id"]
    fake.revoke_mandate(mandate_id)
    [event] = fake.events_for(mandate_id, "mandate.updated")
    fake.mandates[mandate_id]["status"] = "active"  # re-activated before the (late) event arrives
    response = await deliver(http, fake, event)
    assert response.json()["result"] == "unchanged"
    assert (await payment_method_of(http, account["id"]))["mandate"]["status"] == "active"


async def test_an_unknown_mandate_is_acknowledged_as_unmatched(http, fake) -> None:
    fake.mandates["mandate_foreign"] = {"id": "mandate_foreign", "object": "mandate", "status": "inactive"}
    fake.revoke_mandate("mandate_foreign")
    [event] = fake.events_for("mandate_foreign", "mandate.updated")
    assert (await deliver(http, fake, event)).json()["result"] == "unchanged"
    del fake.mandates["mandate_foreign"]
    event = dict(event, id=event["id"] + "_again")
    assert (await deliver(http, fake, event)).json()["result"] == "unmatched"


async def test_the_sandbox_reports_a_revoked_mandate() -> None:
    sandbox = SandboxGateway()
    customer = await sandbox.ensure_customer("acct-1")
    saved = await sandbox.setup_sepa_debit(customer, GOOD_IBAN, account_holder="Erika Mustermann", email=None,
                                           acceptance=MandateAcceptance(type="offline"))
    assert await sandbox.retrieve_mandate_status(saved.mandate_id) == "active"
    sandbox.revoke_mandate(saved.mandate_id)
    assert await sandbox.retrieve_mandate_status(saved.mandate_id) == "inactive"
