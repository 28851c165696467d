"""SandboxGateway: Stripe test-mode semantics in memory, with an injected clock."""
from __future__ import annotations

import pytest

from adapters.payments import (
    GatewayError,
    IdempotencyConflict,
    PaymentGateway,
    PaymentNotFound,
    SandboxGateway,
    StripeGateway,
    build_gateway,
)


@pytest.fixture
def sandbox(clock) -> SandboxGateway:
    return SandboxGateway(sepa_settle_delay_s=5.0, clock=clock)


def test_is_a_payment_gateway(sandbox: SandboxGateway) -> None:
    assert isinstance(sandbox, PaymentGateway)


@pytest.mark.parametrize("pm", ["pm_card_visa", "4242424242424242", "pm_card_mastercard"])
async def test_success(sandbox, make_request, pm: str) -> None:
    req = make_request(pm, amount_minor=2379, currency="EUR")
    out = await sandbox.charge(req)
    assert out.status == "succeeded"
    assert out.gateway_payment_id and out.gateway_payment_id.startswith("sbx_pi_")
    assert (out.amount_minor, out.currency) == (2379, "EUR")
    assert out.decline_code is None and out.decline_class is None
    assert await sandbox.retrieve(out.gateway_payment_id) == out


@pytest.mark.parametrize(
    "pm, code, cls",
    [
        ("4000000000000002", "generic_decline", "soft"),
        ("pm_card_chargeDeclined", "generic_decline", "soft"),
        ("4000000000009995", "insufficient_funds", "soft"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds", "soft"),
        ("4000000000009987", "lost_card", "hard"),
        ("pm_card_chargeDeclinedLostCard", "lost_card", "hard"),
        ("4000000000000341", "generic_decline", "soft"),
        ("4000000000000069", "expired_card", "hard"),
    ],
)
async def test_declines_are_classified(sandbox, make_request, pm: str, code: str, cls: str) -> None:
    out = await sandbox.charge(make_request(pm))
    assert out.status == "declined"
    assert (out.decline_code, out.decline_class) == (code, cls)
    assert out.message
    # the failed attempt has an id and reads the same later
    assert out.gateway_payment_id is not None
    assert await sandbox.retrieve(out.gateway_payment_id) == out


async def test_3ds_card_requires_action(sandbox, make_request) -> None:
    out = await sandbox.charge(make_request("4000002500003155"))
    assert out.status == "requires_action"
    assert out.decline_code == "authentication_required"
    assert out.decline_class is None  # only declines carry a class
    assert not out.is_final


@pytest.mark.parametrize("pm", ["pm_unknown_123", "4111111111111111", "sepa:DE02120300000000202051"])
async def test_unknown_methods_are_declined_hard(sandbox, make_request, pm: str) -> None:
    out = await sandbox.charge(make_request(pm))
    assert out.status == "declined"
    assert (out.decline_code, out.decline_class) == ("invalid_payment_method", "hard")
    assert out.gateway_payment_id is None


async def test_same_request_replays_without_a_second_charge(sandbox, make_request) -> None:
    req = make_request("pm_card_visa")
    first = await sandbox.charge(req)
    second = await sandbox.charge(req.model_copy())
    assert second == first
    assert sandbox.charges_created == 1


async def test_next_attempt_is_a_new_charge(sandbox, make_request) -> None:
    req = make_request("pm_card_chargeDeclinedInsufficientFunds")
    first = await sandbox.charge(req)
    retry = await sandbox.charge(req.model_copy(update={"attempt": 2, "payment_method": "pm_card_visa"}))
    assert retry.status == "succeeded"
    assert retry.gateway_payment_id != first.gateway_payment_id
    assert sandbox.charges_created == 2


async def test_same_key_other_amount_is_a_conflict(sandbox, make_request) -> None:
    req = make_request("pm_card_visa")
    await sandbox.charge(req)
    with pytest.raises(IdempotencyConflict) as info:
        await sandbox.charge(req.model_copy(update={"amount_minor": req.amount_minor + 1}))
    assert not info.value.retryable
    assert sandbox.charges_created == 1


async def test_ids_are_deterministic_across_processes(make_request, clock) -> None:
    req = make_request("pm_card_visa")
    a = await SandboxGateway(clock=clock).charge(req)
    b = await SandboxGateway(clock=clock).charge(req)  # e.g. activity retried on another worker
    assert a.gateway_payment_id == b.gateway_payment_id


@pytest.mark.parametrize(
    "pm", ["sepa:DE89370400440532013000", "DE89 3704 0044 0532 0130 00", "DE89370400440532013000"]
)
async def test_sepa_settles_after_the_delay(sandbox, make_request, clock, pm: str) -> None:
    out = await sandbox.charge(make_request(pm))
    assert out.status == "processing"
    pid = out.gateway_payment_id
    clock.advance(4.9)
    assert (await sandbox.retrieve(pid)).status == "processing"
    clock.advance(0.1)
    settled = await sandbox.retrieve(pid)
    assert settled.status == "succeeded"
    assert (settled.gateway_payment_id, settled.amount_minor) == (pid, out.amount_minor)


async def test_sepa_bounce_is_a_hard_decline(sandbox, make_request, clock) -> None:
    out = await sandbox.charge(make_request("sepa:DE62370400440532013001"))
    assert out.status == "processing"
    clock.advance(5)
    bounced = await sandbox.retrieve(out.gateway_payment_id)
    assert bounced.status == "declined"
    assert (bounced.decline_code, bounced.decline_class) == ("debit_not_authorized", "hard")


async def test_sepa_replay_returns_the_first_answer_like_stripe(sandbox, make_request, clock) -> None:
    req = make_request("sepa:DE89370400440532013000")
    await sandbox.charge(req)
    clock.advance(10)
    assert (await sandbox.charge(req)).status == "processing"  # replayed
    assert (await sandbox.retrieve((await sandbox.charge(req)).gateway_payment_id)).status == "succeeded"


async def test_retrieve_unknown_id(sandbox) -> None:
    with pytest.raises(PaymentNotFound) as info:
        await sandbox.retrieve("sbx_pi_nope")
    assert isinstance(info.value, GatewayError)


def test_factory_picks_sandbox_without_a_key() -> None:
    for key in (None, "", "   "):
        assert isinstance(build_gateway(key), SandboxGateway)


async def test_factory_passes_the_sepa_delay(make_request) -> None:
    gw = build_gateway(None, sepa_settle_delay_s=0.0)
    out = await gw.charge(make_request("sepa:DE89370400440532013000"))
    assert (await gw.retrieve(out.gateway_payment_id)).status == "succeeded"


def test_factory_picks_stripe_with_a_key() -> None:
    gw = build_gateway("sk_test_123", "http://127.0.0.1:1")
    assert isinstance(gw, StripeGateway)
    assert isinstance(gw, PaymentGateway)
