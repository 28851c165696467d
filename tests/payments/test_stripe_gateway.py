"""StripeGateway with the real stripe SDK over real HTTP, against the local fake Stripe."""
from __future__ import annotations

import asyncio

import pytest
import stripe

from adapters.payments import (
    GatewayConfigError,
    GatewayRequestRejected,
    GatewayUnavailable,
    IdempotencyConflict,
    PaymentNotFound,
    StripeGateway,
)

CREATE = ("POST", "/v1/payment_intents")


async def test_success_sends_what_stripe_expects(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("pm_card_visa", amount_minor=2379, currency="EUR", attempt=1)
    out = await stripe_gateway.charge(req)

    assert out.status == "succeeded"
    assert out.gateway_payment_id in fake_stripe.intents
    assert (out.amount_minor, out.currency) == (2379, "EUR")
    assert out.decline_code is None

    [sent] = fake_stripe.requests_to(*CREATE)
    assert sent.headers["idempotency-key"] == f"o2c-charge-{req.invoice_id}-1"
    assert sent.headers["authorization"] == f"Bearer {fake_stripe.api_key}"
    assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert sent.form == {
        "amount": "2379",
        "currency": "eur",
        "confirm": "true",
        "off_session": "true",
        "payment_method": "pm_card_visa",
        "payment_method_types[0]": "card",
        "metadata[invoice_id]": req.invoice_id,
        "metadata[attempt]": "1",
        "metadata[account_id]": "acc-42",
        "metadata[idempotency_key]": req.idempotency_key,
        "description": "Invoice for mobile plan",
    }
    # The outcome names what it was charged for, as Stripe's metadata keeps it.
    assert (out.invoice_id, out.attempt, out.account_id, out.payment_method_kind) == (req.invoice_id, 1, "acc-42", "card")
    assert out.idempotency_key == req.idempotency_key
    assert out.next_step == "done"


async def test_test_card_number_is_sent_as_its_alias_never_as_a_pan(stripe_gateway, fake_stripe, make_request):
    out = await stripe_gateway.charge(make_request("4242 4242 4242 4242"))
    assert out.status == "succeeded"
    [sent] = fake_stripe.requests_to(*CREATE)
    assert sent.form["payment_method"] == "pm_card_visa"
    assert not any("4242424242424242" in v.replace(" ", "") for v in sent.form.values())


async def test_raw_card_number_is_declined_without_calling_stripe(stripe_gateway, fake_stripe, make_request):
    out = await stripe_gateway.charge(make_request("4111111111111111"))
    assert (out.status, out.decline_code, out.decline_class) == ("declined", "invalid_payment_method", "hard")
    assert fake_stripe.requests == []


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
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "hard"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error", "soft"),
    ],
)
async def test_card_declines_are_outcomes_not_errors(
    stripe_gateway, fake_stripe, make_request, pm: str, code: str, cls: str
) -> None:
    req = make_request(pm)
    out = await stripe_gateway.charge(req)
    assert out.status == "declined"
    assert (out.decline_code, out.decline_class) == (code, cls)
    assert out.message
    assert (out.amount_minor, out.currency) == (req.amount_minor, req.currency)
    # Stripe still created the intent; its id lets us retrieve the failed attempt later.
    assert fake_stripe.intents[out.gateway_payment_id]["status"] == "requires_payment_method"
    later = await stripe_gateway.retrieve(out.gateway_payment_id)
    assert (later.status, later.decline_code, later.decline_class) == ("declined", code, cls)


async def test_same_request_twice_creates_one_intent(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("pm_card_visa")
    first = await stripe_gateway.charge(req)
    second = await stripe_gateway.charge(req)

    assert second == first
    assert len(fake_stripe.intents) == 1
    sent = fake_stripe.requests_to(*CREATE)
    assert [r.idempotency_key for r in sent] == [req.idempotency_key] * 2


async def test_replayed_decline_is_the_same_decline(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("pm_card_chargeDeclinedLostCard")
    first = await stripe_gateway.charge(req)
    assert await stripe_gateway.charge(req) == first
    assert len(fake_stripe.intents) == 1


async def test_same_key_other_amount_is_surfaced(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("pm_card_visa")
    await stripe_gateway.charge(req)
    with pytest.raises(IdempotencyConflict) as info:
        await stripe_gateway.charge(req.model_copy(update={"amount_minor": 9999}))
    assert not info.value.retryable
    assert "same parameters" in str(info.value)
    assert [r.status for r in fake_stripe.requests_to(*CREATE)] == [200, 400]
    assert len(fake_stripe.intents) == 1


async def test_sepa_processing_then_settled(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("sepa:DE89370400440532013000", payer_email="payer@example.com")
    out = await stripe_gateway.charge(req)
    assert out.status == "processing"
    assert not out.is_final

    [sent] = fake_stripe.requests_to(*CREATE)
    assert sent.form["payment_method_types[0]"] == "sepa_debit"
    assert sent.form["payment_method_data[type]"] == "sepa_debit"
    assert sent.form["payment_method_data[sepa_debit][iban]"] == "DE89370400440532013000"
    assert sent.form["payment_method_data[billing_details][name]"] == "acc-42"
    assert sent.form["payment_method_data[billing_details][email]"] == "payer@example.com"
    assert sent.form["mandate_data[customer_acceptance][type]"] == "offline"
    assert "payment_method" not in sent.form

    assert (await stripe_gateway.retrieve(out.gateway_payment_id)).status == "processing"
    fake_stripe.settle(out.gateway_payment_id)
    settled = await stripe_gateway.retrieve(out.gateway_payment_id)
    assert (settled.status, settled.amount_minor, settled.currency) == ("succeeded", req.amount_minor, "EUR")


async def test_sepa_bounce_is_a_hard_decline(stripe_gateway, fake_stripe, make_request) -> None:
    out = await stripe_gateway.charge(make_request("sepa:DE62370400440532013001"))
    assert out.status == "processing"
    fake_stripe.settle(out.gateway_payment_id)
    bounced = await stripe_gateway.retrieve(out.gateway_payment_id)
    assert (bounced.status, bounced.decline_code, bounced.decline_class) == (
        "declined",
        "debit_not_authorized",
        "hard",
    )


async def test_unknown_saved_method_is_a_hard_decline_without_an_intent(stripe_gateway, fake_stripe, make_request) -> None:
    # A saved pm_ is charged with its customer, so the gateway reads the method first; one
    # Stripe does not know is an invalid method, and no PaymentIntent is attempted.
    out = await stripe_gateway.charge(make_request("sepa:pm_1SavedSepa"))
    assert [(r.method, r.path) for r in fake_stripe.requests] == [("GET", "/v1/payment_methods/pm_1SavedSepa")]
    assert (out.status, out.decline_code, out.decline_class) == ("declined", "invalid_payment_method", "hard")
    assert fake_stripe.intents == {}


async def test_3ds_card_off_session_requires_action(stripe_gateway, fake_stripe, make_request) -> None:
    out = await stripe_gateway.charge(make_request("4000002500003155"))
    assert out.status == "requires_action"
    assert out.decline_code == "authentication_required"
    assert out.decline_class is None
    assert out.gateway_payment_id in fake_stripe.intents


async def test_unknown_payment_method_is_a_hard_decline(stripe_gateway, fake_stripe, make_request) -> None:
    out = await stripe_gateway.charge(make_request("pm_does_not_exist"))
    assert (out.status, out.decline_code, out.decline_class) == ("declined", "invalid_payment_method", "hard")
    assert out.gateway_payment_id is None
    assert "No such PaymentMethod" in out.message


async def test_customer_is_passed_when_known(stripe_gateway, fake_stripe, make_request) -> None:
    client = stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    customer = await asyncio.to_thread(client.v1.customers.create, {"email": "a@example.com"})
    out = await stripe_gateway.charge(make_request("pm_card_visa", gateway_customer_id=customer.id))
    assert out.status == "succeeded"
    assert fake_stripe.intents[out.gateway_payment_id]["customer"] == customer.id

    with pytest.raises(GatewayRequestRejected) as info:
        await stripe_gateway.charge(make_request("pm_card_visa", gateway_customer_id="cus_missing"))
    assert not info.value.retryable
    assert "customer" in str(info.value)


async def test_bad_api_key_is_a_config_error(fake_stripe, make_request) -> None:
    gw = StripeGateway("sk_test_wrong_key", api_base=fake_stripe.url, max_network_retries=0)
    with pytest.raises(GatewayConfigError) as info:
        await gw.charge(make_request("pm_card_visa"))
    assert not info.value.retryable
    assert "Invalid API Key" in str(info.value)
    assert fake_stripe.intents == {}
    with pytest.raises(GatewayConfigError):
        await gw.retrieve("pi_anything")


def test_empty_api_key_is_refused_up_front() -> None:
    with pytest.raises(GatewayConfigError):
        StripeGateway("")


async def test_unreachable_server_leaves_the_charge_unknown(closed_port_url, make_request) -> None:
    gw = StripeGateway("sk_test_x", api_base=closed_port_url, max_network_retries=0)
    req = make_request("pm_card_visa")
    out = await gw.charge(req)
    # A charge whose answer never came is not an error to retry blindly: it is reconciled.
    assert (out.status, out.gateway_payment_id, out.next_step) == ("unknown", None, "reconcile")
    assert req.idempotency_key in out.message
    assert not out.is_final
    # Reads change nothing, so they fail plainly and may simply be retried.
    with pytest.raises(GatewayUnavailable) as info:
        await gw.retrieve("pi_1")
    assert info.value.retryable
    with pytest.raises(GatewayUnavailable):
        await gw.find_by_idempotency(req.idempotency_key)


async def test_server_error_is_unknown_then_same_request_charges_once(stripe_gateway, fake_stripe, make_request) -> None:
    req = make_request("pm_card_visa")
    fake_stripe.fail_next(1, status=500)
    assert (await stripe_gateway.charge(req)).status == "unknown"
    # Nothing ran (the fake failed before executing), so reading the gateway finds nothing and
    # the same attempt (same key) may be sent again: exactly one intent exists.
    fake_stripe.index_search()
    assert await stripe_gateway.find_by_idempotency(req.idempotency_key) is None
    out = await stripe_gateway.charge(req)
    assert out.status == "succeeded"
    assert len(fake_stripe.intents) == 1


async def test_rate_limit_did_not_run_and_is_retryable(stripe_gateway, fake_stripe, make_request) -> None:
    fake_stripe.fail_next(1, status=429)
    with pytest.raises(GatewayUnavailable) as info:
        await stripe_gateway.charge(make_request("pm_card_visa"))
    assert info.value.retryable
    assert fake_stripe.intents == {}


async def test_sdk_network_retry_reuses_the_idempotency_key(fake_stripe, make_request, monkeypatch) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)  # SDK backoff floor, 0.5 s
    gw = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=1)
    req = make_request("pm_card_visa")
    fake_stripe.fail_next(1, status=503)
    out = await gw.charge(req)
    assert out.status == "succeeded"
    sent = fake_stripe.requests_to(*CREATE)
    assert [r.status for r in sent] == [503, 200]
    assert {r.idempotency_key for r in sent} == {req.idempotency_key}


async def test_retrieve_unknown_intent(stripe_gateway) -> None:
    with pytest.raises(PaymentNotFound):
        await stripe_gateway.retrieve("pi_missing")


async def test_concurrent_charges_do_not_block_each_other(stripe_gateway, fake_stripe, make_request) -> None:
    reqs = [make_request("pm_card_visa") for _ in range(5)]
    outs = await asyncio.gather(*(stripe_gateway.charge(r) for r in reqs))
    assert {o.status for o in outs} == {"succeeded"}
    assert len({o.gateway_payment_id for o in outs}) == 5


def test_one_gateway_works_from_several_event_loops(stripe_gateway, fake_stripe, make_request) -> None:
    # e.g. built once at startup, used by a worker loop and by tests' own loops
    a = asyncio.run(stripe_gateway.charge(make_request("pm_card_visa")))
    b = asyncio.run(stripe_gateway.charge(make_request("pm_card_visa")))
    assert a.status == b.status == "succeeded"


# --- the fake itself: wire-format rules the gateway relies on ----------------------------------


async def test_fake_requires_a_bearer_key(fake_stripe) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=fake_stripe.url) as http:
        missing = await http.post("/v1/payment_intents", data={"amount": "100", "currency": "eur"})
        wrong = await http.get("/v1/payment_intents/pi_1", headers={"Authorization": "Bearer sk_test_nope"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "sk_test_nope" not in wrong.text  # keys are masked in errors, like Stripe


async def test_fake_refuses_a_method_of_another_type(fake_stripe) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=fake_stripe.url, headers={"Authorization": f"Bearer {fake_stripe.api_key}"}
    ) as http:
        resp = await http.post(
            "/v1/payment_intents",
            data={
                "amount": "100",
                "currency": "eur",
                "payment_method": "pm_card_visa",
                "payment_method_types[0]": "sepa_debit",
                "confirm": "true",
            },
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "payment_method"
    assert fake_stripe.intents == {}
