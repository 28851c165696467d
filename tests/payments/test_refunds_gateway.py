"""Refunds and disputes at the gateway: StripeGateway with the real SDK over HTTP against the fake Stripe,
and the SandboxGateway with the same semantics."""
from __future__ import annotations

import uuid

import pytest

from adapters.payments import GatewayRequestRejected, IdempotencyConflict, PaymentNotFound, SandboxGateway
from domain.payments import RefundRequest

REFUNDS = ("POST", "/v1/refunds")


def refund_request(pi: str, amount: int, *, refund_id: str | None = None, kind: str | None = "card") -> RefundRequest:
    return RefundRequest(refund_id=refund_id or f"rf-{uuid.uuid4().hex[:10]}", gateway_payment_id=pi, amount_minor=amount,
                         payment_method_kind=kind, reason="customer left within 14 days")


async def test_a_card_refund_is_sent_once_per_key_and_replayed(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=2379))
    req = refund_request(charged.gateway_payment_id, 1000)

    first = await stripe_gateway.refund(req)
    again = await stripe_gateway.refund(req)  # a client retry / a lost answer: same key

    assert (first.status, first.amount_minor, first.currency, first.gateway_payment_id, first.refund_id) == (
        "succeeded", 1000, "EUR", charged.gateway_payment_id, req.refund_id)
    assert again == first
    assert list(fake_stripe.refunds) == [first.gateway_refund_id]  # the fake's own record: one refund
    sent = fake_stripe.requests_to(*REFUNDS)
    assert [r.idempotency_key for r in sent] == [f"o2c-refund-{req.refund_id}"] * 2
    assert sent[0].form == {
        "payment_intent": charged.gateway_payment_id,
        "amount": "1000",
        "reason": "requested_by_customer",
        "metadata[o2c_refund_id]": req.refund_id,
        "metadata[refund_id]": req.refund_id,
        "metadata[idempotency_key]": req.idempotency_key,
        "metadata[o2c_reason]": "customer left within 14 days",
    }
    assert fake_stripe.intents[charged.gateway_payment_id]["amount_refunded"] == 1000
    assert await stripe_gateway.retrieve_refund(first.gateway_refund_id) == first


async def test_the_same_key_for_another_amount_is_an_idempotency_conflict(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa"))
    await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 500, refund_id="rf-same"))
    with pytest.raises(IdempotencyConflict):
        await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 600, refund_id="rf-same"))
    assert len(fake_stripe.refunds) == 1


async def test_more_than_is_left_is_refused_by_the_gateway(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=2379))
    await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 2000))
    with pytest.raises(GatewayRequestRejected, match="greater than unrefunded"):
        await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 380))
    assert [r.status for r in fake_stripe.requests_to(*REFUNDS)] == [200, 400]
    with pytest.raises(PaymentNotFound):
        await stripe_gateway.retrieve_refund("re_nope")


async def test_a_sepa_refund_is_pending_until_the_bank_answers(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("sepa:DE89370400440532013000"))
    fake_stripe.settle(charged.gateway_payment_id)
    ok = await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 1000, kind="sepa_debit"))
    bad = await stripe_gateway.refund(refund_request(charged.gateway_payment_id, 500, kind="sepa_debit"))
    assert (ok.status, bad.status) == ("pending", "pending")

    fake_stripe.settle_refund(ok.gateway_refund_id)
    fake_stripe.settle_refund(bad.gateway_refund_id, succeed=False)
    assert (await stripe_gateway.retrieve_refund(ok.gateway_refund_id)).status == "succeeded"
    failed = await stripe_gateway.retrieve_refund(bad.gateway_refund_id)
    assert (failed.status, failed.failure_reason) == ("failed", "lost_or_stolen_card")
    assert [e["type"] for e in fake_stripe.events_for(bad.gateway_refund_id)] == ["refund.created", "refund.failed", "refund.updated"]


async def test_a_dispute_is_read_from_stripe(stripe_gateway, fake_stripe, make_request) -> None:
    charged = await stripe_gateway.charge(make_request("pm_card_visa", amount_minor=2379))
    opened = fake_stripe.open_dispute(charged.gateway_payment_id)
    dispute = await stripe_gateway.retrieve_dispute(opened["id"])
    assert (dispute.gateway_payment_id, dispute.amount_minor, dispute.currency, dispute.status, dispute.reason) == (
        charged.gateway_payment_id, 2379, "EUR", "needs_response", "fraudulent")
    fake_stripe.close_dispute(opened["id"], won=False)
    assert (await stripe_gateway.retrieve_dispute(opened["id"])).status == "lost"
    with pytest.raises(PaymentNotFound):
        await stripe_gateway.retrieve_dispute("dp_nope")


# --- the sandbox -------------------------------------------------------------------------------------


async def test_sandbox_refunds_like_stripe_test_mode(clock) -> None:
    sandbox = SandboxGateway(sepa_settle_delay_s=5, clock=clock)
    card = refund_request("sbx_pi_card", 700)
    first = await sandbox.refund(card)
    assert first.status == "succeeded" and await sandbox.refund(card) == first
    with pytest.raises(IdempotencyConflict):
        await sandbox.refund(card.model_copy(update={"amount_minor": 701}))

    sepa = await sandbox.refund(refund_request("sbx_pi_sepa", 700, kind="sepa_debit"))
    failing = await sandbox.refund(refund_request("sbx_pi_sepa", 100, kind="sepa_debit"))
    assert (await sandbox.retrieve_refund(sepa.gateway_refund_id)).status == "pending"
    clock.advance(5)
    assert (await sandbox.retrieve_refund(sepa.gateway_refund_id)).status == "succeeded"
    sandbox.fail_refund(failing.gateway_refund_id)
    assert (await sandbox.retrieve_refund(failing.gateway_refund_id)).status == "failed"
    assert sandbox.refunds_created == 3
    with pytest.raises(PaymentNotFound):
        await sandbox.retrieve_refund("sbx_re_nope")


async def test_sandbox_disputes() -> None:
    sandbox = SandboxGateway()
    opened = sandbox.open_dispute("sbx_pi_x", 2379)
    assert (await sandbox.retrieve_dispute(opened.gateway_dispute_id)).status == "needs_response"
    sandbox.close_dispute(opened.gateway_dispute_id, won=True)
    assert (await sandbox.retrieve_dispute(opened.gateway_dispute_id)).status == "won"
