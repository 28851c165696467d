"""Pure domain rules: decline classes, charge requests, payment-method references."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.payments import (
    HARD_DECLINE_CODES,
    SOFT_DECLINE_CODES,
    ChargeRequest,
    InvalidPaymentMethod,
    PaymentOutcome,
    classify_decline,
    parse_payment_method,
)


@pytest.mark.parametrize(
    "code",
    [
        "lost_card",
        "stolen_card",
        "pickup_card",
        "invalid_account",
        "account_closed",
        "incorrect_number",
        "expired_card",
        "card_not_supported",
        "debit_not_authorized",
        "revocation_of_authorization",
        "fraudulent",
        "invalid_payment_method",
    ],
)
def test_hard_declines(code: str) -> None:
    assert classify_decline(code) == "hard"


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_funds",
        "processing_error",
        "try_again_later",
        "generic_decline",
        "issuer_not_available",
        "reenter_transaction",
        "authentication_required",
    ],
)
def test_soft_declines(code: str) -> None:
    assert classify_decline(code) == "soft"


def test_do_not_honor_is_soft_by_decision() -> None:
    # Issuers use it as a catch-all; networks allow limited retries. See module docstring.
    assert classify_decline("do_not_honor") == "soft"


@pytest.mark.parametrize("code", [None, "", "brand_new_issuer_code"])
def test_missing_or_new_codes_are_unknown(code: str | None) -> None:
    assert classify_decline(code) == "unknown"


def test_classification_ignores_case_and_whitespace() -> None:
    assert classify_decline("  Lost_Card ") == "hard"
    assert classify_decline("INSUFFICIENT_FUNDS") == "soft"


def test_no_code_is_both_hard_and_soft() -> None:
    assert HARD_DECLINE_CODES.isdisjoint(SOFT_DECLINE_CODES)


def _req(**overrides) -> ChargeRequest:
    fields = dict(invoice_id="INV-2024-0007", attempt=2, amount_minor=2379, account_id="acc-1", payment_method="pm_card_visa")
    fields.update(overrides)
    return ChargeRequest(**fields)


def test_idempotency_key_is_derived_from_invoice_and_attempt() -> None:
    req = _req()
    assert req.idempotency_key == "o2c-charge-INV-2024-0007-2"
    assert _req().idempotency_key == req.idempotency_key
    assert _req(attempt=3).idempotency_key != req.idempotency_key


def test_currency_defaults_to_eur_and_is_normalised() -> None:
    assert _req().currency == "EUR"
    assert _req(currency=" gbp ").currency == "GBP"
    with pytest.raises(ValidationError):
        _req(currency="EURO")


@pytest.mark.parametrize(
    "overrides",
    [
        {"attempt": 0},
        {"amount_minor": 0},
        {"amount_minor": -5},
        {"amount_minor": 23.79},
        {"amount_minor": 23.0},  # a float is refused even when whole: money is never a float
        {"invoice_id": ""},
        {"invoice_id": "x" * 250},  # key would exceed Stripe's 255-char limit
    ],
)
def test_invalid_charge_requests_are_rejected(overrides: dict) -> None:
    with pytest.raises(ValidationError):
        _req(**overrides)


def test_charge_request_round_trips_through_json() -> None:
    req = _req(gateway_customer_id="cus_1", payer_email="a@example.com")
    assert ChargeRequest.model_validate_json(req.model_dump_json()) == req


def test_outcome_finality() -> None:
    base = dict(gateway_payment_id="pi_1", amount_minor=100, currency="EUR")
    assert PaymentOutcome(status="succeeded", **base).is_final
    assert PaymentOutcome(status="declined", decline_code="lost_card", decline_class="hard", **base).is_final
    assert not PaymentOutcome(status="processing", **base).is_final
    assert not PaymentOutcome(status="requires_action", **base).is_final


@pytest.mark.parametrize(
    "raw, kind, pm_id, iban",
    [
        ("pm_card_visa", "card", "pm_card_visa", None),
        ("pm_1PqRsT", "card", "pm_1PqRsT", None),
        ("4242424242424242", "card", "pm_card_visa", None),
        ("4242 4242 4242 4242", "card", "pm_card_visa", None),
        ("4000000000009995", "card", "pm_card_chargeDeclinedInsufficientFunds", None),
        ("sepa:DE89370400440532013000", "sepa_debit", None, "DE89370400440532013000"),
        ("SEPA: de89 3704 0044 0532 0130 00", "sepa_debit", None, "DE89370400440532013000"),
        ("DE89370400440532013000", "sepa_debit", None, "DE89370400440532013000"),
        ("sepa:pm_1SepaSaved", "sepa_debit", "pm_1SepaSaved", None),
    ],
)
def test_parse_payment_method(raw: str, kind: str, pm_id: str | None, iban: str | None) -> None:
    ref = parse_payment_method(raw)
    assert (ref.kind, ref.payment_method_id, ref.iban) == (kind, pm_id, iban)


def test_raw_non_test_card_numbers_are_refused() -> None:
    with pytest.raises(InvalidPaymentMethod):
        parse_payment_method("4111111111111111")


def test_sepa_prefix_with_a_bad_iban_is_refused() -> None:
    # check digits wrong (89 -> 88)
    with pytest.raises(InvalidPaymentMethod):
        parse_payment_method("sepa:DE88370400440532013000")
