"""PaymentGateway.find_refund: the refund made for an o2c refund id, looked for before a refund whose answer was lost
is sent again (Stripe: GET /v1/refunds?payment_intent=..., every page, matched on metadata[o2c_refund_id]); the sandbox
the same way."""
from __future__ import annotations

import uuid

from adapters.payments import SandboxGateway
from domain.payments import RefundRequest


def request(pi: str, amount: int, refund_id: str | None = None) -> RefundRequest:
    return RefundRequest(refund_id=refund_id or f"rf-{uuid.uuid4().hex[:10]}", gateway_payment_id=pi, amount_minor=amount,
                         payment_method_kind="card")


async def test_stripe_finds_a_refund_of_the_payment_by_its_o2c_id(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=5000))
    other = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=5000))
    wanted = await stripe_gateway.refund(request(charged.gateway_payment_id, 100))
    for _ in range(3):  # newer refunds of the same payment: the wanted one is on the last page
        await stripe_gateway.refund(request(charged.gateway_payment_id, 100))
    elsewhere = await stripe_gateway.refund(request(other.gateway_payment_id, 100))  # another payment's

    found = await stripe_gateway.find_refund(charged.gateway_payment_id, wanted.refund_id)
    assert found == wanted
    listed = fake_stripe.requests_to("GET", "/v1/refunds")
    assert [r.form["payment_intent"] for r in listed] == [charged.gateway_payment_id]
    assert fake_stripe.refunds[wanted.gateway_refund_id]["metadata"]["o2c_refund_id"] == wanted.refund_id
    assert await stripe_gateway.find_refund(charged.gateway_payment_id, elsewhere.refund_id) is None  # not this payment's
    assert await stripe_gateway.find_refund(charged.gateway_payment_id, "never-made") is None


async def test_stripe_pages_through_the_list(stripe_gateway, fake_stripe, make_request, monkeypatch) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=5000))
    wanted = await stripe_gateway.refund(request(charged.gateway_payment_id, 100))
    for _ in range(2):
        await stripe_gateway.refund(request(charged.gateway_payment_id, 100))
    list_ = stripe_gateway._client.v1.refunds.list
    monkeypatch.setattr(stripe_gateway._client.v1.refunds, "list", lambda params: list_({**params, "limit": 1}))
    assert await stripe_gateway.find_refund(charged.gateway_payment_id, wanted.refund_id) == wanted
    assert len(fake_stripe.requests_to("GET", "/v1/refunds")) == 3


async def test_the_sandbox_finds_its_refunds_the_same_way() -> None:
    sandbox = SandboxGateway(sepa_settle_delay_s=0)
    made = await sandbox.refund(request("sbx_pi_1", 100))
    assert await sandbox.find_refund("sbx_pi_1", made.refund_id) == made
    assert await sandbox.find_refund("sbx_pi_2", made.refund_id) is None
    assert await sandbox.find_refund("sbx_pi_1", "never-made") is None
