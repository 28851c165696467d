"""The same behaviour from StripeGateway (real SDK over HTTP, local fake Stripe) and SandboxGateway:
customers, saved cards, SEPA mandates, charges and their outcomes, reconciliation by key."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from adapters.payments import GatewayRequestRejected, PaymentGateway, PaymentMethodRejected, SandboxGateway
from domain.payments import MandateAcceptance

OFFLINE = MandateAcceptance(type="offline")


@dataclass
class Subject:
    name: str
    gateway: PaymentGateway
    finish_debits: Callable[[str], None]  # lets time pass / the bank answer for one processing debit


@pytest.fixture(params=["stripe", "sandbox"])
def subject(request, fake_stripe, stripe_gateway, clock) -> Subject:
    if request.param == "stripe":
        return Subject("stripe", stripe_gateway, lambda pid: fake_stripe.settle(pid))
    sandbox = SandboxGateway(sepa_settle_delay_s=5.0, clock=clock)
    return Subject("sandbox", sandbox, lambda _pid: clock.advance(5.0))


async def test_a_customer_per_billing_account(subject: Subject) -> None:
    gw = subject.gateway
    first = await gw.ensure_customer("ba-1", email="erika@example.org", name="Erika")
    assert await gw.ensure_customer("ba-1", email="erika@example.org", name="Erika") == first
    assert await gw.ensure_customer("ba-2") != first


async def test_saved_card_is_charged_off_session(subject: Subject, make_request) -> None:
    gw = subject.gateway
    customer = await gw.ensure_customer("ba-card")
    saved = await gw.attach_card(customer, "4242424242424242")
    assert (saved.kind, saved.customer_id, saved.last4, saved.brand) == ("card", customer, "4242", "visa")
    assert saved.reference == saved.payment_method_id and saved.reference.startswith("pm_")

    out = await gw.charge(make_request(saved.reference, amount_minor=2379))
    assert (out.status, out.amount_minor, out.currency, out.next_step) == ("succeeded", 2379, "EUR", "done")
    assert await gw.retrieve(out.gateway_payment_id) == out


@pytest.mark.parametrize(
    "card, code, cls, step",
    [
        ("4000000000009995", "insufficient_funds", "soft", "retry_later"),
        ("4000000000009987", "lost_card", "hard", "ask_for_new_method"),
        ("4000000000000002", "generic_decline", "soft", "retry_later"),
    ],
)
async def test_declines_are_classified(subject: Subject, make_request, card: str, code: str, cls: str, step: str) -> None:
    out = await subject.gateway.charge(make_request(card))
    assert (out.status, out.decline_code, out.decline_class, out.next_step) == ("declined", code, cls, step)
    assert out.gateway_payment_id is not None
    assert await subject.gateway.retrieve(out.gateway_payment_id) == out


async def test_declining_cards_cannot_be_saved(subject: Subject) -> None:
    gw = subject.gateway
    customer = await gw.ensure_customer("ba-declined")
    with pytest.raises(PaymentMethodRejected) as lost:
        await gw.attach_card(customer, "4000000000009987")
    assert (lost.value.decline_code, lost.value.decline_class) == ("lost_card", "hard")
    with pytest.raises(PaymentMethodRejected) as funds:
        await gw.attach_card(customer, "4000000000009995")
    assert (funds.value.decline_code, funds.value.decline_class) == ("insufficient_funds", "soft")
    with pytest.raises(GatewayRequestRejected):
        await gw.attach_card(customer, "4111111111111111")  # a real-looking PAN never leaves o2c


async def test_card_that_attaches_but_fails_on_charge(subject: Subject, make_request) -> None:
    gw = subject.gateway
    customer = await gw.ensure_customer("ba-0341")
    saved = await gw.attach_card(customer, "4000000000000341")
    out = await gw.charge(make_request(saved.reference))
    assert (out.status, out.decline_code, out.decline_class) == ("declined", "generic_decline", "soft")


async def test_authentication_required_tells_the_caller_to_notify_the_customer(subject: Subject, make_request) -> None:
    out = await subject.gateway.charge(make_request("4000002760003184"))
    assert (out.status, out.decline_code, out.next_step) == ("requires_action", "authentication_required", "notify_customer")
    assert out.decline_class is None and not out.is_final


@pytest.mark.parametrize("iban, final, code", [("DE89370400440532013000", "succeeded", None),
                                               ("DE62370400440532013001", "declined", "debit_not_authorized")])
async def test_sepa_mandate_then_processing_then_final(subject: Subject, make_request, iban: str, final: str, code: str | None) -> None:
    gw = subject.gateway
    customer = await gw.ensure_customer("ba-sepa")
    saved = await gw.setup_sepa_debit(customer, iban, account_holder="Erika Mustermann", email="erika@example.org", acceptance=OFFLINE)
    assert (saved.kind, saved.customer_id, saved.last4) == ("sepa_debit", customer, iban[-4:])
    assert saved.mandate_id and saved.reference == f"sepa:{saved.payment_method_id}"

    req = make_request(saved.reference)
    out = await gw.charge(req)
    assert (out.status, out.next_step, out.payment_method_kind) == ("processing", "wait", "sepa_debit")
    assert (await gw.retrieve(out.gateway_payment_id)).status == "processing"

    subject.finish_debits(out.gateway_payment_id)
    done = await gw.retrieve(out.gateway_payment_id)
    assert (done.status, done.decline_code) == (final, code)
    if final == "declined":
        assert done.decline_class == "hard" and done.next_step == "ask_for_new_method"
    # Reconciling by key reads the current state, not the first answer.
    assert await gw.find_by_idempotency(req.idempotency_key, gateway_customer_id=customer) == done


async def test_unknown_iban_cannot_be_set_up(subject: Subject) -> None:
    gw = subject.gateway
    customer = await gw.ensure_customer("ba-iban")
    with pytest.raises(GatewayRequestRejected):
        await gw.setup_sepa_debit(customer, "DE02120300000000202051", account_holder="X", email=None, acceptance=OFFLINE)
    with pytest.raises(GatewayRequestRejected):
        await gw.setup_sepa_debit(customer, "DE00 0000 0000", account_holder="X", email=None, acceptance=OFFLINE)


async def test_retried_attempt_is_one_charge_and_next_attempt_another(subject: Subject, make_request) -> None:
    gw = subject.gateway
    req = make_request("pm_card_chargeDeclinedInsufficientFunds")
    first = await gw.charge(req)
    assert await gw.charge(req) == first
    retry = await gw.charge(req.model_copy(update={"attempt": 2, "payment_method": "pm_card_visa"}))
    assert retry.status == "succeeded" and retry.gateway_payment_id != first.gateway_payment_id
    assert await gw.find_by_idempotency(req.idempotency_key) == first


async def test_nothing_found_for_a_key_never_used(subject: Subject) -> None:
    assert await subject.gateway.find_by_idempotency("o2c-charge-never-1") is None
