"""SandboxGateway: the embedded default gateway when no Stripe key is configured.

It behaves like Stripe test mode for Stripe's own test instruments (TEST_INSTRUMENTS), so the
flow can be demoed and tested with no network, and switching to a Stripe test key changes
nothing but the ids. It is a sandbox: payments live in this process's memory only.

Choices, documented because callers see them:
- An unknown payment method (not one of TEST_INSTRUMENTS, or a raw non-test card number) is
  *declined* hard with decline_code ``invalid_payment_method`` and no payment id: that is what
  StripeGateway reports when Stripe answers "No such PaymentMethod", and it keeps junk data
  from silently "succeeding" in demos.
- SEPA debits return ``processing``; once ``sepa_settle_delay_s`` has passed on ``clock`` they
  read as succeeded, or declined with ``debit_not_authorized`` for the failing test IBAN.
- Idempotent like Stripe: the same idempotency key replays the *first* outcome (a SEPA charge
  replays ``processing``; use ``retrieve`` for the current state), the same key with other
  parameters raises IdempotencyConflict. Ids derive from the key, so a retried activity in a
  fresh process gets the same id (though not the in-memory SEPA timer).
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from adapters.payments.port import IdempotencyConflict, PaymentNotFound
from domain.payments import (
    ChargeRequest,
    InvalidPaymentMethod,
    PaymentOutcome,
    classify_decline,
    parse_payment_method,
)

InstrumentResult = Literal["succeeded", "declined", "requires_action", "settles", "bounces"]


@dataclass(frozen=True)
class TestInstrument:
    """How Stripe test mode treats one test instrument; `code`/`decline_code`/`message` are
    the fields of Stripe's error object for the failing ones."""

    __test__ = False  # not a pytest test class, despite the name

    kind: Literal["card", "sepa_debit"]
    result: InstrumentResult
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


_DECLINED = "Your card was declined."
_AUTH = "Your card was declined. This transaction requires authentication."

# Keyed by Stripe pm_card_* alias (test card numbers map to these in domain.TEST_CARD_ALIASES)
# or by IBAN. Shared with the fake Stripe server in tests so both sides agree.
TEST_INSTRUMENTS: dict[str, TestInstrument] = {
    "pm_card_visa": TestInstrument("card", "succeeded"),
    "pm_card_visa_debit": TestInstrument("card", "succeeded"),
    "pm_card_mastercard": TestInstrument("card", "succeeded"),
    "pm_card_amex": TestInstrument("card", "succeeded"),
    "pm_card_chargeDeclined": TestInstrument("card", "declined", "card_declined", "generic_decline", _DECLINED),
    "pm_card_chargeDeclinedInsufficientFunds": TestInstrument(
        "card", "declined", "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedLostCard": TestInstrument("card", "declined", "card_declined", "lost_card", _DECLINED),
    "pm_card_chargeDeclinedStolenCard": TestInstrument("card", "declined", "card_declined", "stolen_card", _DECLINED),
    "pm_card_chargeDeclinedExpiredCard": TestInstrument(
        "card", "declined", "expired_card", "expired_card", "Your card has expired."
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestInstrument(
        "card", "declined", "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
    ),
    "pm_card_chargeDeclinedProcessingError": TestInstrument(
        "card",
        "declined",
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    # 4000000000000341: attaches to a customer fine, every charge fails.
    "pm_card_chargeCustomerFail": TestInstrument("card", "declined", "card_declined", "generic_decline", _DECLINED),
    # 3DS cards: an off-session charge cannot authenticate, so the customer must act.
    "pm_card_authenticationRequiredOnSetup": TestInstrument(
        "card", "requires_action", "authentication_required", "authentication_required", _AUTH
    ),
    "pm_card_authenticationRequired": TestInstrument(
        "card", "requires_action", "authentication_required", "authentication_required", _AUTH
    ),
    "pm_card_threeDSecureRequired": TestInstrument(
        "card", "requires_action", "authentication_required", "authentication_required", _AUTH
    ),
    "DE89370400440532013000": TestInstrument("sepa_debit", "settles"),
    "DE62370400440532013001": TestInstrument(
        "sepa_debit",
        "bounces",
        "debit_not_authorized",
        "debit_not_authorized",
        "The customer's bank could not debit the account: the debit was not authorized.",
    ),
}


def lookup_test_instrument(payment_method: str) -> TestInstrument | None:
    """The test instrument a `ChargeRequest.payment_method` refers to, or None if unknown."""
    try:
        ref = parse_payment_method(payment_method)
    except InvalidPaymentMethod:
        return None
    key = ref.iban or ref.payment_method_id or ""
    found = TEST_INSTRUMENTS.get(key)
    return found if found is not None and found.kind == ref.kind else None


def sandbox_payment_id(idempotency_key: str) -> str:
    return "sbx_pi_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


@dataclass
class _Payment:
    fingerprint: tuple
    first: PaymentOutcome
    instrument: TestInstrument | None
    created_at: float


class SandboxGateway:
    """In-memory PaymentGateway with Stripe test-mode semantics (see module docstring)."""

    def __init__(self, sepa_settle_delay_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._delay = sepa_settle_delay_s
        self._clock = clock
        self._by_key: dict[str, _Payment] = {}
        self._by_id: dict[str, _Payment] = {}
        # Activities may run on worker threads; the dicts are the whole "ledger".
        self._lock = threading.Lock()

    @property
    def charges_created(self) -> int:
        """Distinct charges ever made (replays excluded): lets tests prove no double charge."""
        return len(self._by_key)

    async def charge(self, req: ChargeRequest) -> PaymentOutcome:
        key = req.idempotency_key
        fingerprint = tuple(sorted(req.model_dump().items()))
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise IdempotencyConflict(
                        f"idempotency key {key!r} was already used with different parameters"
                    )
                return existing.first
            instrument = lookup_test_instrument(req.payment_method)
            outcome = self._first_outcome(req, instrument)
            payment = _Payment(fingerprint, outcome, instrument, self._clock())
            self._by_key[key] = payment
            if outcome.gateway_payment_id is not None:
                self._by_id[outcome.gateway_payment_id] = payment
            return outcome

    async def retrieve(self, gateway_payment_id: str) -> PaymentOutcome:
        with self._lock:
            payment = self._by_id.get(gateway_payment_id)
            if payment is None:
                raise PaymentNotFound(f"no sandbox payment {gateway_payment_id!r}")
            return self._current(payment)

    def _first_outcome(self, req: ChargeRequest, instrument: TestInstrument | None) -> PaymentOutcome:
        base = dict(amount_minor=req.amount_minor, currency=req.currency)
        if instrument is None:
            return PaymentOutcome(
                status="declined",
                gateway_payment_id=None,
                decline_code="invalid_payment_method",
                decline_class=classify_decline("invalid_payment_method"),
                message=f"No such payment method: {req.payment_method!r}",
                **base,
            )
        pid = sandbox_payment_id(req.idempotency_key)
        if instrument.result == "succeeded":
            return PaymentOutcome(status="succeeded", gateway_payment_id=pid, **base)
        if instrument.result in ("settles", "bounces"):
            return PaymentOutcome(status="processing", gateway_payment_id=pid, **base)
        if instrument.result == "requires_action":
            return PaymentOutcome(
                status="requires_action",
                gateway_payment_id=pid,
                decline_code=instrument.decline_code,
                message=instrument.message,
                **base,
            )
        return _declined(pid, instrument, **base)

    def _current(self, payment: _Payment) -> PaymentOutcome:
        first, instrument = payment.first, payment.instrument
        if first.status != "processing" or instrument is None:
            return first
        if self._clock() - payment.created_at < self._delay:
            return first
        if instrument.result == "settles":
            return first.model_copy(update={"status": "succeeded"})
        return _declined(first.gateway_payment_id, instrument, amount_minor=first.amount_minor, currency=first.currency)


def _declined(pid: str | None, instrument: TestInstrument, *, amount_minor: int, currency: str) -> PaymentOutcome:
    return PaymentOutcome(
        status="declined",
        gateway_payment_id=pid,
        amount_minor=amount_minor,
        currency=currency,
        decline_code=instrument.decline_code,
        decline_class=classify_decline(instrument.decline_code),
        message=instrument.message,
    )
