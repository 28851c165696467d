"""A gateway refund whose answer was lost, sent again after the gateway's idempotency window (24 h at Stripe) by a
repeated POST or the hourly poll (services.refunds.follow_up): it is looked for at the gateway first (the o2c refund id
in its metadata), so it is neither made twice nor marked failed because the first one used the payment up. Stripe
over the real SDK against the fake Stripe, and the sandbox; both database backends."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.payments import StripeGateway
from adapters.payments.sandbox import SandboxGateway
from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from domain.payments import RefundRequest
from persistence.db import session_scope
from persistence.tables import Payment
from services import refunds
from services.query import run_tx
from tests.api.conftest import FINANCE, TASK_QUEUE, api_settings, client_for, make_account
from tests.api.test_refund_dispute_webhooks import (  # noqa: F401 - fixtures
    REFUND_PATH, gateway, paid_bill, refund_body,
)
from tests.api.test_stripe_webhooks import stripe_settings
from tests.support.refunds import bill, insert_bill, insert_payment, refund_row


@pytest.fixture
async def lossy_http(db_url, temporal_env, fake_stripe) -> AsyncIterator[tuple[httpx.AsyncClient, StripeGateway]]:
    """The app with a Stripe gateway that does not retry, so a dropped answer reaches o2c as lost."""
    settings = stripe_settings(db_url, fake_stripe)
    app = create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))
    stripe = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=0)
    app.state.payment_gateway = ((settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s), stripe)
    async with client_for(app) as http:
        yield http, stripe


async def lost_refund(http, fake_stripe, account: dict, payment_id: str, value: str, key: str) -> dict:
    fake_stripe.drop_next_response()  # Stripe makes the refund; its answer never arrives
    response = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": key}, json=refund_body(account, payment_id, value))
    assert response.status_code == 201, response.text
    made = response.json()
    assert (made["status"], made.get("gatewayRefundId"), len(fake_stripe.refunds)) == ("pending", None, 1)
    [stripe_refund] = fake_stripe.refunds.values()
    assert stripe_refund["metadata"]["o2c_refund_id"] == made["id"]
    fake_stripe.expire_idempotency_keys()  # a day later
    return made


async def test_a_repeated_post_after_the_window_finds_the_refund_stripe_made(lossy_http, fake_stripe, gateway, db_url) -> None:
    http, _stripe = lossy_http
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    key = f"rf-{uuid.uuid4().hex}"
    made = await lost_refund(http, fake_stripe, account, payment_id, "23.79", key)

    again = await http.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": key}, json=refund_body(account, payment_id, "23.79"))
    assert again.status_code == 200, again.text
    [stripe_refund] = fake_stripe.refunds.values()
    assert (again.json()["id"], again.json()["status"], again.json()["gatewayRefundId"]) == (made["id"], "succeeded", stripe_refund["id"])
    assert len(fake_stripe.requests_to("POST", "/v1/refunds")) == 1  # looked up, not sent again
    [listed] = fake_stripe.requests_to("GET", "/v1/refunds")
    assert listed.form["payment_intent"] == pi
    row = refund_row(db_url, made["id"])
    assert (row.status, row.reversed) == ("succeeded", True)  # not failed: the money stays given back
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("sent", 0)


async def test_the_poll_after_the_window_does_not_refund_twice(lossy_http, fake_stripe, gateway, db_url) -> None:
    http, stripe = lossy_http
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    made = await lost_refund(http, fake_stripe, account, payment_id, "10.00", f"rf-{uuid.uuid4().hex}")

    followed = await refunds.follow_up(db_url, stripe, made["id"])  # what the hourly poll does
    assert followed.answered and (followed.refund.status, followed.refund.gateway_refund_id) == ("succeeded", next(iter(fake_stripe.refunds)))
    assert (len(fake_stripe.refunds), fake_stripe.intents[pi]["amount_refunded"]) == (1, 1000)
    assert (bill(db_url, invoice_id).state, bill(db_url, invoice_id).paid_cents) == ("partiallyPaid", 1379)


async def test_a_resend_the_gateway_refuses_stays_pending(lossy_http, fake_stripe, gateway, db_url, unused_tcp_port, temporal_env) -> None:
    """Only the first send may turn a refusal into `failed`: a refusal of a re-send may be about money already gone."""
    http, stripe = lossy_http
    account, invoice_id, payment_id, pi = await paid_bill(http, db_url, gateway, fake_stripe)
    down = stripe_settings(db_url, fake_stripe, stripe_api_base=f"http://127.0.0.1:{unused_tcp_port}")
    async with client_for(create_app(down, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as unreachable:
        made = (await unreachable.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"rf-{uuid.uuid4().hex}"},
                                       json=refund_body(account, payment_id, "23.79"))).json()
    assert (made["status"], fake_stripe.refunds) == ("pending", {})
    await gateway.refund(RefundRequest(refund_id="made-in-the-dashboard", gateway_payment_id=pi, amount_minor=2379))  # all gone

    followed = await refunds.follow_up(db_url, stripe, made["id"])
    assert (followed.answered, followed.refund.status, followed.refund.reversed) == (False, "pending", True)
    assert bill(db_url, invoice_id).paid_cents == 0  # nothing put back on the bill


async def test_the_sandbox_finds_a_refund_made_before_its_window_passed(db_url, temporal_env) -> None:
    settings = api_settings(db_url)
    async with client_for(create_app(settings, workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))) as http:
        account = await make_account(http)
    insert_bill(db_url, account, 2379)
    payment_id = insert_payment(db_url, account, 2379, method="card", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    order = refunds.RefundOrder(key=f"rf-{uuid.uuid4().hex}", payment_id=payment_id, billing_account_id=account["id"], amount_cents=1000,
                                currency="EUR", reason="goodwill", recorded_by="finance")
    row, created, _notice = await run_tx(db_url, refunds.record_refund, order)
    assert (created, row.status, row.gateway_refund_id) == (True, "pending", None)
    with session_scope(db_url) as session:
        pi = session.get(Payment, payment_id).gateway_payment_id
    sandbox = SandboxGateway()
    first = await sandbox.refund(RefundRequest(refund_id=row.id, gateway_payment_id=pi, amount_minor=1000, payment_method_kind="card",
                                               reason="goodwill"))  # made; the answer lost
    sandbox.forget_idempotency_keys()

    followed = await refunds.follow_up(db_url, sandbox, row.id)
    assert (followed.refund.status, followed.refund.gateway_refund_id, sandbox.refunds_created) == ("succeeded", first.gateway_refund_id, 1)
    assert await sandbox.find_refund(pi, "another-refund") is None
