"""StripeGateway against the local fake Stripe, on the wire: customers, saved methods and mandates,
lost responses reconciled by idempotency key, and every PaymentIntent status mapped."""
from __future__ import annotations

import pytest
import stripe
from pydantic import ValidationError

from adapters.payments import IdempotencyConflict, StripeGateway
from adapters.payments.stripe_gateway import _outcome_from_intent
from domain.payments import MandateAcceptance

CREATE_INTENT = ("POST", "/v1/payment_intents")
CREATE_CUSTOMER = ("POST", "/v1/customers")
SETUP = ("POST", "/v1/setup_intents")
OFFLINE = MandateAcceptance(type="offline")


# --- customers -------------------------------------------------------------------------------


async def test_customer_is_created_once_keyed_by_the_billing_account(stripe_gateway, fake_stripe) -> None:
    cid = await stripe_gateway.ensure_customer("ba-42", email="erika@example.org", name="Erika Mustermann")
    [created] = fake_stripe.requests_to(*CREATE_CUSTOMER)
    assert created.idempotency_key == "o2c-customer-ba-42"
    assert created.form == {"metadata[billing_account_id]": "ba-42"}  # stable, so the key never conflicts
    assert fake_stripe.customers[cid]["email"] == "erika@example.org"
    assert fake_stripe.customers[cid]["name"] == "Erika Mustermann"

    # Found again by its metadata; a new e-mail is an update, never a second customer.
    assert await stripe_gateway.ensure_customer("ba-42", email="new@example.org") == cid
    assert len(fake_stripe.requests_to(*CREATE_CUSTOMER)) == 1
    assert fake_stripe.customers[cid]["email"] == "new@example.org"
    assert len(fake_stripe.customers) == 1


async def test_customer_created_twice_while_search_lags_is_still_one(stripe_gateway, fake_stripe) -> None:
    fake_stripe.search_lag = True  # Stripe's search index trails writes by up to a minute
    first = await stripe_gateway.ensure_customer("ba-lag")
    second = await stripe_gateway.ensure_customer("ba-lag")
    assert first == second
    creates = fake_stripe.requests_to(*CREATE_CUSTOMER)
    # The search missed both times, so the create was sent twice, under one key: Stripe replayed it.
    assert [(r.idempotency_key, r.status) for r in creates] == [("o2c-customer-ba-lag", 200)] * 2
    assert len(fake_stripe.customers) == 1


# --- saved methods ---------------------------------------------------------------------------


async def test_card_is_attached_once_and_charged_with_its_customer(stripe_gateway, fake_stripe, make_request) -> None:
    customer = await stripe_gateway.ensure_customer("ba-card")
    saved = await stripe_gateway.attach_card(customer, "pm_card_visa")
    assert await stripe_gateway.attach_card(customer, "pm_card_visa") == saved  # retried: replayed, one method
    assert [pm for pm in fake_stripe.payment_methods.values() if pm["customer"] == customer] == [fake_stripe.payment_methods[saved.payment_method_id]]
    attach = fake_stripe.requests_to("POST", "/v1/payment_methods/pm_card_visa/attach")
    assert {r.idempotency_key for r in attach} == {f"o2c-attach-{customer}-pm_card_visa"}

    out = await stripe_gateway.charge(make_request(saved.reference))  # no customer given: the gateway finds it
    assert out.status == "succeeded"
    [sent] = fake_stripe.requests_to(*CREATE_INTENT)
    assert (sent.form["customer"], sent.form["payment_method"]) == (customer, saved.payment_method_id)
    assert fake_stripe.intents[out.gateway_payment_id]["customer"] == customer


async def test_sepa_setup_intent_carries_the_mandate_acceptance(stripe_gateway, fake_stripe, make_request) -> None:
    customer = await stripe_gateway.ensure_customer("ba-sepa")
    online = MandateAcceptance(type="online", ip_address="203.0.113.7", user_agent="Mozilla/5.0", accepted_at=1767225600)
    saved = await stripe_gateway.setup_sepa_debit(customer, "DE89 3704 0044 0532 0130 00", account_holder="Erika Mustermann",
                                                  email="erika@example.org", acceptance=online)
    [sent] = fake_stripe.requests_to(*SETUP)
    assert sent.form == {
        "customer": customer,
        "confirm": "true",
        "usage": "off_session",
        "payment_method_types[0]": "sepa_debit",
        "payment_method_data[type]": "sepa_debit",
        "payment_method_data[sepa_debit][iban]": "DE89370400440532013000",
        "payment_method_data[billing_details][name]": "Erika Mustermann",
        "payment_method_data[billing_details][email]": "erika@example.org",
        "mandate_data[customer_acceptance][type]": "online",
        "mandate_data[customer_acceptance][accepted_at]": "1767225600",
        "mandate_data[customer_acceptance][online][ip_address]": "203.0.113.7",
        "mandate_data[customer_acceptance][online][user_agent]": "Mozilla/5.0",
    }
    assert "DE89370400440532013000" not in sent.idempotency_key  # only a digest of the IBAN
    mandate = fake_stripe.mandates[saved.mandate_id]
    assert (mandate["payment_method"], mandate["customer_acceptance"]["type"]) == (saved.payment_method_id, "online")

    # Repeating the set-up (an API retry) replays: one SetupIntent, one mandate.
    again = await stripe_gateway.setup_sepa_debit(customer, "DE89370400440532013000", account_holder="Erika Mustermann",
                                                  email="erika@example.org", acceptance=online)
    assert again == saved and len(fake_stripe.setup_intents) == 1

    # Charged off-session on that mandate: no new mandate data on the PaymentIntent.
    out = await stripe_gateway.charge(make_request(saved.reference))
    assert out.status == "processing"
    [charge] = fake_stripe.requests_to(*CREATE_INTENT)
    assert not any(k.startswith("mandate_data") for k in charge.form)
    assert (charge.form["payment_method_types[0]"], charge.form["customer"]) == ("sepa_debit", customer)


async def test_offline_acceptance_and_changed_acceptance_under_the_same_key(stripe_gateway, fake_stripe) -> None:
    customer = await stripe_gateway.ensure_customer("ba-offline")
    await stripe_gateway.setup_sepa_debit(customer, "DE89370400440532013000", account_holder="E", email=None, acceptance=OFFLINE)
    [sent] = fake_stripe.requests_to(*SETUP)
    assert sent.form["mandate_data[customer_acceptance][type]"] == "offline"
    assert not any("[online]" in k for k in sent.form)
    # The same IBAN set up again with other evidence is another request under the same key.
    with pytest.raises(IdempotencyConflict):
        await stripe_gateway.setup_sepa_debit(customer, "DE89370400440532013000", account_holder="Someone Else",
                                              email=None, acceptance=OFFLINE)


def test_online_acceptance_needs_its_evidence() -> None:
    with pytest.raises(ValidationError):
        MandateAcceptance(type="online", ip_address="203.0.113.7")


# --- lost answers, reconciled by key ------------------------------------------------------------


async def test_lost_response_is_unknown_and_reconciled_without_a_second_intent(stripe_gateway, fake_stripe, make_request) -> None:
    customer = await stripe_gateway.ensure_customer("ba-timeout")
    saved = await stripe_gateway.attach_card(customer, "pm_card_visa")
    req = make_request(saved.reference, gateway_customer_id=customer)

    fake_stripe.drop_next_response()  # Stripe charges the card; the answer never arrives
    out = await stripe_gateway.charge(req)
    assert (out.status, out.next_step, out.gateway_payment_id) == ("unknown", "reconcile", None)
    [intent] = fake_stripe.intents.values()
    assert intent["status"] == "succeeded"  # the money moved

    # Reconciled by reading Stripe (the customer's list is consistent at once), not by charging.
    found = await stripe_gateway.find_by_idempotency(req.idempotency_key, gateway_customer_id=customer)
    assert (found.status, found.gateway_payment_id) == ("succeeded", intent["id"])
    assert await stripe_gateway.retrieve(found.gateway_payment_id) == found
    assert len(fake_stripe.requests_to(*CREATE_INTENT)) == 1

    # A caller that does send the same attempt again gets the first result replayed.
    assert await stripe_gateway.charge(req) == found
    sent = fake_stripe.requests_to(*CREATE_INTENT)
    assert [r.status for r in sent] == [0, 200] and sent[1].headers.get("idempotency-key") == req.idempotency_key
    assert len(fake_stripe.intents) == 1


async def test_reconciling_without_the_customer_uses_search_which_lags(stripe_gateway, fake_stripe, make_request) -> None:
    fake_stripe.search_lag = True
    req = make_request("pm_card_visa")
    fake_stripe.drop_next_response()
    assert (await stripe_gateway.charge(req)).status == "unknown"
    # Not searchable yet: None means "not visible", which is why the port says None proves nothing.
    assert await stripe_gateway.find_by_idempotency(req.idempotency_key) is None
    fake_stripe.index_search()
    found = await stripe_gateway.find_by_idempotency(req.idempotency_key)
    assert found is not None and found.status == "succeeded"
    [search] = fake_stripe.requests_to("GET", "/v1/payment_intents/search")[-1:]
    assert search.form["query"] == f"metadata['idempotency_key']:'{req.idempotency_key}'"


async def test_sdk_retry_after_a_lost_response_replays(fake_stripe, make_request, monkeypatch) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    gw = StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=1)
    req = make_request("pm_card_chargeDeclinedLostCard")
    fake_stripe.drop_next_response()
    out = await gw.charge(req)
    assert (out.status, out.decline_code, out.decline_class) == ("declined", "lost_card", "hard")
    assert [r.status for r in fake_stripe.requests_to(*CREATE_INTENT)] == [0, 402]
    assert len(fake_stripe.intents) == 1


async def test_canceled_intent(stripe_gateway, fake_stripe, make_request) -> None:
    out = await stripe_gateway.charge(make_request("4000002760003184"))
    assert out.status == "requires_action"
    client = stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    client.v1.payment_intents.cancel(out.gateway_payment_id, {"cancellation_reason": "abandoned"})
    canceled = await stripe_gateway.retrieve(out.gateway_payment_id)
    assert (canceled.status, canceled.message, canceled.next_step) == ("canceled", "abandoned", "retry_later")
    assert [e["type"] for e in fake_stripe.events_for(out.gateway_payment_id)] == [
        "payment_intent.created", "payment_intent.payment_failed", "payment_intent.canceled"]


# --- every PaymentIntent status ----------------------------------------------------------------


def _intent(status: str, **extra) -> dict:
    return {"id": "pi_1", "object": "payment_intent", "amount": 2379, "currency": "eur", "status": status,
            "payment_method_types": ["sepa_debit"],
            "metadata": {"invoice_id": "inv-1", "attempt": "2", "account_id": "ba-1", "idempotency_key": "o2c-charge-inv-1-2"},
            **extra}


@pytest.mark.parametrize(
    "status, extra, expected",
    [
        ("succeeded", {}, ("succeeded", None, None, "done")),
        ("processing", {}, ("processing", None, None, "wait")),
        ("requires_capture", {}, ("processing", None, None, "wait")),
        ("requires_action", {"next_action": {"type": "use_stripe_sdk"}}, ("requires_action", None, None, "notify_customer")),
        ("requires_confirmation", {}, ("requires_action", None, None, "notify_customer")),
        ("canceled", {"cancellation_reason": "duplicate"}, ("canceled", None, None, "retry_later")),
        ("requires_payment_method", {"last_payment_error": {"type": "card_error", "code": "card_declined",
                                                            "decline_code": "insufficient_funds"}},
         ("declined", "insufficient_funds", "soft", "retry_later")),
        ("requires_payment_method", {"last_payment_error": {"type": "card_error", "code": "debit_not_authorized"}},
         ("declined", "debit_not_authorized", "hard", "ask_for_new_method")),
        ("requires_payment_method", {"last_payment_error": {"type": "card_error", "code": "authentication_required",
                                                            "decline_code": "authentication_required"}},
         ("requires_action", "authentication_required", None, "notify_customer")),
        ("requires_payment_method", {}, ("declined", None, "unknown", "retry_later")),
    ],
)
def test_every_intent_status_maps_to_an_outcome(status: str, extra: dict, expected: tuple) -> None:
    out = _outcome_from_intent(_intent(status, **extra))
    assert (out.status, out.decline_code, out.decline_class, out.next_step) == expected
    assert (out.invoice_id, out.attempt, out.account_id, out.payment_method_kind) == ("inv-1", 2, "ba-1", "sepa_debit")
    assert (out.amount_minor, out.currency, out.idempotency_key) == (2379, "EUR", "o2c-charge-inv-1-2")
