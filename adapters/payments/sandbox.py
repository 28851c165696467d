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
  replays ``processing``; use ``retrieve`` or ``find_by_idempotency`` for the current state), the
  same key with other parameters raises IdempotencyConflict. Ids derive from the key, so a
  retried activity in a fresh process gets the same id (though not the in-memory SEPA timer).
- It never answers ``unknown`` (there is no network to lose an answer on).
- Customers and saved methods are derived, not stored: a customer id is a digest of the billing
  account id; a saved card is ``pm_sbx_<alias without pm_>`` and a saved SEPA method
  ``pm_sbx_sepa_<IBAN>`` (test IBANs only), so they charge correctly after a restart. Declined
  test cards are refused when saved, except 4000000000000341 (attaches, fails on charge), as
  Stripe test mode does.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from adapters.payments.port import GatewayRequestRejected, IdempotencyConflict, PaymentMethodRejected, PaymentNotFound, card_to_attach, iban_to_set_up
from domain.payments import (
    TEST_CARD_ALIASES,
    ChargeRequest,
    DisputeOutcome,
    InvalidPaymentMethod,
    MandateAcceptance,
    PaymentOutcome,
    RefundOutcome,
    RefundRequest,
    SavedPaymentMethod,
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
    # Whether saving it to a customer succeeds (declined cards are refused when saved, except
    # the "attaches but fails on charge" card).
    attaches: bool = True


_DECLINED = "Your card was declined."
_AUTH = "Your card was declined. This transaction requires authentication."

# Keyed by Stripe pm_card_* alias (test card numbers map to these in domain.TEST_CARD_ALIASES)
# or by IBAN. Shared with the fake Stripe server in tests so both sides agree.
TEST_INSTRUMENTS: dict[str, TestInstrument] = {
    "pm_card_visa": TestInstrument("card", "succeeded"),
    "pm_card_visa_debit": TestInstrument("card", "succeeded"),
    "pm_card_mastercard": TestInstrument("card", "succeeded"),
    "pm_card_amex": TestInstrument("card", "succeeded"),
    "pm_card_chargeDeclined": TestInstrument("card", "declined", "card_declined", "generic_decline", _DECLINED, attaches=False),
    "pm_card_chargeDeclinedInsufficientFunds": TestInstrument(
        "card", "declined", "card_declined", "insufficient_funds", "Your card has insufficient funds.", attaches=False
    ),
    "pm_card_chargeDeclinedLostCard": TestInstrument("card", "declined", "card_declined", "lost_card", _DECLINED, attaches=False),
    "pm_card_chargeDeclinedStolenCard": TestInstrument(
        "card", "declined", "card_declined", "stolen_card", _DECLINED, attaches=False
    ),
    "pm_card_chargeDeclinedExpiredCard": TestInstrument(
        "card", "declined", "expired_card", "expired_card", "Your card has expired.", attaches=False
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestInstrument(
        "card", "declined", "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", attaches=False
    ),
    "pm_card_chargeDeclinedProcessingError": TestInstrument(
        "card",
        "declined",
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
        attaches=False,
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


SAVED_PREFIX = "pm_sbx_"
SAVED_SEPA_PREFIX = "pm_sbx_sepa_"


def instrument_key(ref_id: str) -> str:
    """The TEST_INSTRUMENTS key behind a sandbox-saved method id (else the id itself)."""
    if ref_id.startswith(SAVED_SEPA_PREFIX):
        return ref_id[len(SAVED_SEPA_PREFIX):]
    if ref_id.startswith(SAVED_PREFIX):
        return "pm_" + ref_id[len(SAVED_PREFIX):]
    return ref_id


def lookup_test_instrument(payment_method: str) -> TestInstrument | None:
    """The test instrument a `ChargeRequest.payment_method` refers to, or None if unknown."""
    try:
        ref = parse_payment_method(payment_method)
    except InvalidPaymentMethod:
        return None
    key = ref.iban or instrument_key(ref.payment_method_id or "")
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


@dataclass
class _Refund:
    fingerprint: tuple
    first: RefundOutcome
    created_at: float
    failed: str | None = None


def _refund_now(refund: _Refund, now: float, delay: float) -> RefundOutcome:
    """A sandbox refund as it stands now (a SEPA refund settles after the delay, unless the bank sent it back)."""
    if refund.failed is not None:
        return refund.first.model_copy(update={"status": "failed", "failure_reason": refund.failed})
    if refund.first.status == "pending" and now - refund.created_at >= delay:
        return refund.first.model_copy(update={"status": "succeeded"})
    return refund.first


class SandboxGateway:
    """In-memory PaymentGateway with Stripe test-mode semantics (see module docstring)."""

    def __init__(self, sepa_settle_delay_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._delay = sepa_settle_delay_s
        self._clock = clock
        self._by_key: dict[str, _Payment] = {}
        self._by_id: dict[str, _Payment] = {}
        self._refunds_by_key: dict[str, _Refund] = {}
        self._refunds_by_id: dict[str, _Refund] = {}
        self._disputes: dict[str, DisputeOutcome] = {}
        self._revoked_mandates: set[str] = set()
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

    async def find_by_idempotency(self, idempotency_key: str, *, gateway_customer_id: str | None = None) -> PaymentOutcome | None:
        with self._lock:
            payment = self._by_key.get(idempotency_key)
            if payment is None or payment.first.gateway_payment_id is None:
                return None  # never charged, or refused before a payment existed (unknown method)
            return self._current(payment)

    async def ensure_customer(self, billing_account_id: str, *, email: str | None = None, name: str | None = None) -> str:
        if not billing_account_id:
            raise GatewayRequestRejected("a billing account id is required")
        return "sbx_cus_" + hashlib.sha256(billing_account_id.encode()).hexdigest()[:24]

    async def attach_card(self, customer_id: str, payment_method: str) -> SavedPaymentMethod:
        card_id = card_to_attach(payment_method)
        alias = instrument_key(card_id)
        instrument = TEST_INSTRUMENTS.get(alias)
        if instrument is None or instrument.kind != "card":
            raise GatewayRequestRejected(f"No such PaymentMethod: {payment_method!r}")
        if not instrument.attaches:
            raise PaymentMethodRejected(instrument.message or "Your card was declined.", instrument.decline_code)
        return SavedPaymentMethod(payment_method_id=SAVED_PREFIX + alias[len("pm_"):], kind="card", customer_id=customer_id,
                                  last4=alias_last4(alias), brand=alias_brand(alias))

    async def setup_sepa_debit(
        self, customer_id: str, iban: str, *, account_holder: str, email: str | None, acceptance: MandateAcceptance
    ) -> SavedPaymentMethod:
        compact = iban_to_set_up(iban)
        instrument = TEST_INSTRUMENTS.get(compact)
        if instrument is None or instrument.kind != "sepa_debit":
            raise GatewayRequestRejected("The IBAN you provided is invalid (the sandbox knows Stripe's test IBANs only).")
        if not account_holder:
            raise GatewayRequestRejected("the account holder's name is required for a SEPA mandate")
        mandate = "sbx_mandate_" + hashlib.sha256(f"{customer_id}:{compact}".encode()).hexdigest()[:24]
        return SavedPaymentMethod(payment_method_id=SAVED_SEPA_PREFIX + compact, kind="sepa_debit", customer_id=customer_id,
                                  last4=compact[-4:], mandate_id=mandate)

    # --- refunds and disputes ---------------------------------------------------------------------

    @property
    def refunds_created(self) -> int:
        """Distinct refunds ever made (replays excluded)."""
        return len(self._refunds_by_key)

    async def refund(self, req: RefundRequest) -> RefundOutcome:
        """Like Stripe test mode: a card refund succeeds at once; a SEPA refund is `pending` until
        `sepa_settle_delay_s` has passed, then reads as succeeded (or failed, by `fail_refund`). The
        sandbox cannot see payments made in another process, so it trusts the caller's amount check."""
        key = req.idempotency_key
        fingerprint = tuple(sorted(req.model_dump().items()))
        with self._lock:
            existing = self._refunds_by_key.get(key)
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise IdempotencyConflict(f"idempotency key {key!r} was already used with different parameters")
                return existing.first
            refund_id = "sbx_re_" + hashlib.sha256(key.encode()).hexdigest()[:24]
            if refund_id in self._refunds_by_id:  # the same key again after its window passed: another refund
                refund_id += f"_{len(self._refunds_by_id)}"
            status = "pending" if req.payment_method_kind == "sepa_debit" else "succeeded"
            first = RefundOutcome(status=status, gateway_refund_id=refund_id, amount_minor=req.amount_minor, currency=req.currency,
                                  gateway_payment_id=req.gateway_payment_id, refund_id=req.refund_id)
            refund = _Refund(fingerprint, first, self._clock())
            self._refunds_by_key[key] = refund
            self._refunds_by_id[refund_id] = refund
            return first

    async def retrieve_refund(self, gateway_refund_id: str) -> RefundOutcome:
        with self._lock:
            refund = self._refunds_by_id.get(gateway_refund_id)
            if refund is None:
                raise PaymentNotFound(f"no sandbox refund {gateway_refund_id!r}")
            return _refund_now(refund, self._clock(), self._delay)

    async def find_refund(self, gateway_payment_id: str, refund_id: str) -> RefundOutcome | None:
        with self._lock:
            for refund in self._refunds_by_id.values():
                if refund.first.gateway_payment_id == gateway_payment_id and refund.first.refund_id == refund_id:
                    return _refund_now(refund, self._clock(), self._delay)
        return None

    def forget_idempotency_keys(self) -> None:
        """Test control: the idempotency window passes (24 h at Stripe); the refunds stay, their keys replay no more."""
        with self._lock:
            self._refunds_by_key = {f"expired:{i}:{k}": r for i, (k, r) in enumerate(self._refunds_by_key.items())}

    def fail_refund(self, gateway_refund_id: str, reason: str = "lost_or_stolen_card") -> None:
        """Test control: the bank sends a pending refund back (Stripe: refund.failed)."""
        with self._lock:
            self._refunds_by_id[gateway_refund_id].failed = reason

    def open_dispute(self, gateway_payment_id: str, amount_minor: int, currency: str = "EUR", reason: str = "fraudulent") -> DisputeOutcome:
        """Test control: the payer's bank disputes a payment (Stripe: charge.dispute.created)."""
        with self._lock:
            dispute_id = "sbx_dp_" + hashlib.sha256(f"{gateway_payment_id}:{len(self._disputes)}".encode()).hexdigest()[:24]
            dispute = DisputeOutcome(gateway_dispute_id=dispute_id, gateway_payment_id=gateway_payment_id, amount_minor=amount_minor,
                                     currency=currency, status="needs_response", reason=reason)
            self._disputes[dispute_id] = dispute
            return dispute

    def close_dispute(self, gateway_dispute_id: str, won: bool) -> DisputeOutcome:
        with self._lock:
            dispute = self._disputes[gateway_dispute_id].model_copy(update={"status": "won" if won else "lost"})
            self._disputes[gateway_dispute_id] = dispute
            return dispute

    async def retrieve_dispute(self, gateway_dispute_id: str) -> DisputeOutcome:
        with self._lock:
            dispute = self._disputes.get(gateway_dispute_id)
            if dispute is None:
                raise PaymentNotFound(f"no sandbox dispute {gateway_dispute_id!r}")
            return dispute

    def revoke_mandate(self, mandate_id: str) -> None:
        """Test control: the debtor's bank cancels the mandate."""
        with self._lock:
            self._revoked_mandates.add(mandate_id)

    async def retrieve_mandate_status(self, mandate_id: str) -> str:
        if not mandate_id.startswith("sbx_mandate_"):
            raise PaymentNotFound(f"no sandbox mandate {mandate_id!r}")
        with self._lock:
            return "inactive" if mandate_id in self._revoked_mandates else "active"

    def _first_outcome(self, req: ChargeRequest, instrument: TestInstrument | None) -> PaymentOutcome:
        base = dict(amount_minor=req.amount_minor, currency=req.currency, invoice_id=req.invoice_id, attempt=req.attempt,
                    account_id=req.account_id, payment_method_kind=_kind(req.payment_method))
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
        refs = first.model_dump(include={"amount_minor", "currency", "invoice_id", "attempt", "account_id", "payment_method_kind"})
        return _declined(first.gateway_payment_id, instrument, **refs)


def _declined(pid: str | None, instrument: TestInstrument, **base) -> PaymentOutcome:
    return PaymentOutcome(
        status="declined",
        gateway_payment_id=pid,
        decline_code=instrument.decline_code,
        decline_class=classify_decline(instrument.decline_code),
        message=instrument.message,
        **base,
    )


def _kind(payment_method: str) -> str | None:
    try:
        return parse_payment_method(payment_method).kind
    except InvalidPaymentMethod:
        return None


def alias_last4(alias: str) -> str | None:
    """The last four digits of the test card number behind a Stripe alias, if o2c knows it."""
    return next((number[-4:] for number, a in TEST_CARD_ALIASES.items() if a == alias), None)


def alias_brand(alias: str) -> str:
    for brand in ("mastercard", "amex"):
        if brand in alias.lower():
            return brand
    return "visa"
