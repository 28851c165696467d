"""Payment vocabulary shared by dunning, the gateway adapters and the API.

Pure: no I/O. Amounts are integer minor units (cents); never floats.

Decline classification drives dunning. A *hard* decline means retrying the same payment method
can never succeed (the card is lost, the account is closed, the mandate was revoked): dunning
should stop retrying and ask the customer for a new method. A *soft* decline may succeed later
(insufficient funds, issuer temporarily down): dunning retries on its schedule. *unknown* is
anything we have not classified; dunning treats it like soft but bounded by its retry cap, so a
new issuer code never makes us give up on recoverable revenue nor hammer a dead card forever.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DeclineClass = Literal["hard", "soft", "unknown"]
PaymentMethodKind = Literal["card", "sepa_debit"]
# `unknown`: the request may or may not have reached the gateway (timeout, dropped connection,
# gateway 5xx). It is never a reason to charge again: read the gateway (find_by_idempotency /
# retrieve) until the outcome is known.
PaymentStatus = Literal["succeeded", "processing", "requires_action", "declined", "canceled", "unknown"]
# What the caller should do next with an outcome (PaymentOutcome.next_step).
NextStep = Literal["done", "wait", "notify_customer", "retry_later", "ask_for_new_method", "reconcile"]

# Stripe's limit for Idempotency-Key; a longer key would be rejected by the gateway.
MAX_IDEMPOTENCY_KEY_LEN = 255

# Codes after which the same instrument will never be approved (Visa "category 1" style:
# issuer will never approve). Card decline codes first, then SEPA/bank-debit failure codes,
# then our own codes.
HARD_DECLINE_CODES: frozenset[str] = frozenset(
    {
        # card is gone or not the cardholder's
        "lost_card",
        "stolen_card",
        "pickup_card",
        "fraudulent",
        "merchant_blacklist",
        "security_violation",
        "restricted_card",
        # card/account no longer exists or details are wrong: needs new details
        "invalid_account",
        "account_closed",
        "no_account",
        "incorrect_number",
        "invalid_number",
        "expired_card",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_cvc",
        "invalid_cvc",
        "new_account_information_available",
        # the instrument cannot do this kind of payment at all
        "card_not_supported",
        "currency_not_supported",
        "transaction_not_allowed",
        "not_permitted",
        "service_not_allowed",
        "invalid_amount",
        # the cardholder told the issuer to stop paying us
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "stop_payment_order",
        # a live card used against a test key, or vice versa: will never work
        "testmode_decline",
        # SEPA / bank debits: mandate or account problems
        "debit_not_authorized",
        "bank_account_restricted",
        "bank_account_unusable",
        "invalid_account_number",
        "invalid_iban",
        "account_frozen",
        "mandate_revoked",
        # ours: the gateway does not know this payment method
        "invalid_payment_method",
    }
)

# Codes that may clear on a later attempt with the same instrument.
SOFT_DECLINE_CODES: frozenset[str] = frozenset(
    {
        "insufficient_funds",
        "processing_error",
        "try_again_later",
        "generic_decline",
        "issuer_not_available",
        "reenter_transaction",
        "approve_with_id",
        "card_velocity_exceeded",
        "withdrawal_count_limit_exceeded",
        "duplicate_transaction",
        "no_action_taken",
        "call_issuer",
        "pin_try_exceeded",
        # Issuers use "do not honor" (ISO 8583 code 05) as a catch-all; networks allow limited
        # retries on it. Calling it hard would abandon recoverable revenue; dunning's retry cap
        # bounds the cost of being wrong.
        "do_not_honor",
        # The card is fine; the issuer wants the cardholder to authenticate (3DS). Retrying
        # after the customer authenticates succeeds.
        "authentication_required",
        # SEPA: the debit bounced for reasons that can clear (AM04 insufficient funds etc.)
        "generic_could_not_process",
        "refer_to_customer",
    }
)


def classify_decline(decline_code: str | None) -> DeclineClass:
    """Hard/soft/unknown for a gateway decline code (Stripe's `decline_code`, or `code` when
    Stripe sends no decline_code). Case and surrounding whitespace are ignored."""
    if not decline_code:
        return "unknown"
    code = decline_code.strip().lower()
    if code in HARD_DECLINE_CODES:
        return "hard"
    if code in SOFT_DECLINE_CODES:
        return "soft"
    return "unknown"


class PaymentOutcome(BaseModel):
    """What a gateway says about one charge. `declined` carries the code and its class;
    `processing` (SEPA) is not final: ask the gateway again via `retrieve`; `unknown` means the
    charge may or may not exist: reconcile by reading the gateway, never by charging again.

    The reference fields (invoice, attempt, account, method kind) echo the business ids the charge
    was made for, as the gateway keeps them (Stripe: the PaymentIntent's metadata), so an outcome
    read later (a webhook's re-read) can be matched to its payment without any other lookup."""

    model_config = ConfigDict(frozen=True)

    status: PaymentStatus
    gateway_payment_id: str | None
    amount_minor: int = Field(strict=True)
    currency: str
    decline_code: str | None = None
    decline_class: DeclineClass | None = None
    message: str | None = None
    invoice_id: str | None = None
    attempt: int | None = None
    account_id: str | None = None
    payment_method_kind: PaymentMethodKind | None = None

    @property
    def is_final(self) -> bool:
        """False while the money is still moving (`processing`), the customer must act, or the
        outcome is not known yet."""
        return self.status in FINAL_STATUSES

    @property
    def idempotency_key(self) -> str | None:
        """The charge's idempotency key, when the outcome names its invoice and attempt."""
        if self.invoice_id is None or self.attempt is None:
            return None
        return charge_idempotency_key(self.invoice_id, self.attempt)

    @property
    def next_step(self) -> NextStep:
        """What the caller does next:
        - done: the money is collected;
        - wait: money in flight (SEPA stays `processing` for days): wait for the gateway's webhook,
          poll `retrieve` as a fallback;
        - notify_customer: the bank wants the customer to authenticate (3DS) on-session; an
          off-session retry cannot succeed until they do;
        - retry_later: a soft/unclassified decline or a canceled intent: a later attempt (new
          attempt number) may succeed;
        - ask_for_new_method: a hard decline: the same method will never pay;
        - reconcile: unknown outcome: read the gateway by idempotency key before anything else."""
        if self.status == "succeeded":
            return "done"
        if self.status == "processing":
            return "wait"
        if self.status == "requires_action":
            return "notify_customer"
        if self.status == "unknown":
            return "reconcile"
        if self.status == "declined" and self.decline_class == "hard":
            return "ask_for_new_method"
        return "retry_later"


FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "declined", "canceled"})

# How far along a payment is. A payment only ever moves to a higher rank; an observation of the
# same or a lower rank is stale (webhooks arrive in any order, a replayed charge answers with its
# first result) and is ignored. Failures (declined, canceled) outrank every pending state, so a
# late `processing` never reopens a bounced debit. Only a success outranks a failure: the same
# PaymentIntent can be confirmed again on-session (the customer authenticates or gives another
# method), and money that did arrive must be booked. Nothing outranks a success.
PAYMENT_STATUS_RANK: dict[str, int] = {
    "unknown": 0,
    "requires_action": 1,
    "processing": 2,
    "declined": 3,
    "canceled": 3,
    "succeeded": 4,
}


def advance_payment_status(current: str | None, observed: str) -> str | None:
    """The status a payment moves to when `observed` is reported while it is `current` (None: no
    record yet), or None when the observation is stale or changes nothing and must be ignored.

    Pure and total over PaymentStatus; an unrecognised current status (e.g. a row written by an
    older release) ranks lowest, so any known observation replaces it."""
    if observed not in PAYMENT_STATUS_RANK:
        raise ValueError(f"not a payment status: {observed!r}")
    if current is None:
        return observed
    if current == observed:
        return None
    if PAYMENT_STATUS_RANK[observed] > PAYMENT_STATUS_RANK.get(current, -1):
        return observed
    return None


def charge_idempotency_key(invoice_id: str, attempt: int) -> str:
    """The one idempotency key of one collection attempt of one invoice. Business-derived, never
    random: a retried activity (even in a new process) sends the same key, so the gateway replays
    the first result instead of charging again; the next dunning attempt gets a new key."""
    return f"o2c-charge-{invoice_id}-{attempt}"


class ChargeRequest(BaseModel):
    """One attempt to collect one invoice. `attempt` numbers dunning attempts: a new attempt
    is a new charge (new idempotency key); retrying the *same* attempt after a timeout must
    reuse the same request so the gateway replays instead of charging twice."""

    model_config = ConfigDict(frozen=True)

    invoice_id: str = Field(min_length=1)
    attempt: int = Field(ge=1)
    amount_minor: int = Field(gt=0, strict=True)  # strict: 23.0 (euros as float?) is refused, not coerced
    currency: str = "EUR"
    account_id: str = Field(min_length=1)
    # Gateway reference for the instrument: a Stripe pm_... id or pm_card_* test alias, a test
    # card number (sandbox/test mode), or "sepa:<IBAN>" / a bare IBAN / "sepa:pm_..." for SEPA.
    payment_method: str = Field(min_length=1)
    description: str = ""
    # Optional extras for the Stripe adapter; the sandbox ignores them. A saved pm_ attached to
    # a Stripe customer must be charged together with that customer; SEPA needs a payer email.
    gateway_customer_id: str | None = None
    payer_email: str | None = None

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, v: str) -> str:
        v = v.strip().upper()
        if len(v) != 3 or not v.isalpha():
            raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {v!r}")
        return v

    @model_validator(mode="after")
    def _key_fits(self) -> ChargeRequest:
        if len(self.idempotency_key) > MAX_IDEMPOTENCY_KEY_LEN:
            raise ValueError("invoice_id too long for a gateway idempotency key")
        return self

    @property
    def idempotency_key(self) -> str:
        return charge_idempotency_key(self.invoice_id, self.attempt)


# --- payment method references ---------------------------------------------------------------

# Stripe's documented test card numbers and the server-side alias Stripe offers for each.
# A test number is shorthand for its alias: adapters send the alias, so no card number (PAN)
# ever leaves our process, and the sandbox and Stripe test mode agree on outcomes.
TEST_CARD_ALIASES: dict[str, str] = {
    "4242424242424242": "pm_card_visa",
    "4000000000000002": "pm_card_chargeDeclined",
    "4000000000009995": "pm_card_chargeDeclinedInsufficientFunds",
    "4000000000009987": "pm_card_chargeDeclinedLostCard",
    "4000000000009979": "pm_card_chargeDeclinedStolenCard",
    "4000000000000069": "pm_card_chargeDeclinedExpiredCard",
    "4000000000000127": "pm_card_chargeDeclinedIncorrectCvc",
    "4000000000000119": "pm_card_chargeDeclinedProcessingError",
    "4000000000000341": "pm_card_chargeCustomerFail",
    "4000002500003155": "pm_card_authenticationRequiredOnSetup",
    "4000002760003184": "pm_card_authenticationRequired",
}

_IBAN_RE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_CARD_RE = re.compile(r"^[0-9]{12,19}$")


class InvalidPaymentMethod(ValueError):
    """The payment method reference can never be charged (e.g. a raw, non-test card number)."""


@dataclass(frozen=True)
class PaymentMethodRef:
    """A parsed `ChargeRequest.payment_method`: exactly one of `payment_method_id` (a gateway
    id or test alias) and `iban` is set."""

    kind: PaymentMethodKind
    payment_method_id: str | None = None
    iban: str | None = None


def _compact(s: str) -> str:
    return re.sub(r"[\s-]", "", s)


def iban_is_valid(iban: str) -> bool:
    """ISO 13616 shape and mod-97 check digits, so a typo is caught before a debit bounces."""
    if not _IBAN_RE.match(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def parse_payment_method(raw: str) -> PaymentMethodRef:
    """Read our payment-method reference convention.

    - ``sepa:<IBAN>`` or a bare IBAN: SEPA debit from that account (spaces allowed);
    - ``sepa:pm_...``: a saved SEPA payment method at the gateway (carries its mandate);
    - a Stripe test card number: card, replaced by its Stripe alias (TEST_CARD_ALIASES);
    - anything else (``pm_...``, ``pm_card_visa``): a card payment method id at the gateway.

    Raises InvalidPaymentMethod for a raw card number that is not a test number: we never
    handle real card numbers (that would pull the BSS into PCI scope)."""
    value = raw.strip()
    if value[:5].lower() == "sepa:":
        rest = value[5:].strip()
        if rest.startswith("pm_"):
            return PaymentMethodRef(kind="sepa_debit", payment_method_id=rest)
        iban = _compact(rest).upper()
        if not iban_is_valid(iban):
            raise InvalidPaymentMethod(f"not a valid IBAN: {rest!r}")
        return PaymentMethodRef(kind="sepa_debit", iban=iban)
    compact = _compact(value)
    if iban_is_valid(compact.upper()):
        return PaymentMethodRef(kind="sepa_debit", iban=compact.upper())
    if _CARD_RE.match(compact):
        alias = TEST_CARD_ALIASES.get(compact)
        if alias is None:
            raise InvalidPaymentMethod("raw card numbers are not accepted; use a gateway payment method id")
        return PaymentMethodRef(kind="card", payment_method_id=alias)
    return PaymentMethodRef(kind="card", payment_method_id=value)


# --- saved payment methods ---------------------------------------------------------------------


class MandateAcceptance(BaseModel):
    """How the customer accepted a SEPA Direct Debit mandate, as Stripe models it
    (`mandate_data.customer_acceptance`): `online` (a web form: the customer's IP address and
    user agent are evidence) or `offline` (a signed paper or contract mandate; Stripe may need to
    enable offline acceptance on the account)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["online", "offline"]
    ip_address: str | None = None
    user_agent: str | None = None
    accepted_at: int | None = Field(default=None, ge=0)  # Unix seconds; the gateway's time if None

    @model_validator(mode="after")
    def _online_needs_evidence(self) -> MandateAcceptance:
        if self.type == "online" and not (self.ip_address and self.user_agent):
            raise ValueError("an online mandate acceptance needs the customer's ip_address and user_agent")
        return self


class SavedPaymentMethod(BaseModel):
    """A payment method saved at the gateway for a customer, ready for off-session charges."""

    model_config = ConfigDict(frozen=True)

    payment_method_id: str
    kind: PaymentMethodKind
    customer_id: str
    last4: str | None = None
    brand: str | None = None  # cards
    mandate_id: str | None = None  # SEPA: the mandate that authorises the debits

    @property
    def reference(self) -> str:
        """The value to store as the account's payment method (`ChargeRequest.payment_method`):
        ``pm_...`` for a card, ``sepa:pm_...`` for a SEPA debit (see parse_payment_method)."""
        return f"sepa:{self.payment_method_id}" if self.kind == "sepa_debit" else self.payment_method_id


# --- refunds and disputes ----------------------------------------------------------------------

# A refund's life at the gateway (Stripe's Refund.status, `requires_action` read as pending):
# pending (money on its way back, e.g. SEPA) -> succeeded | failed | canceled. Like payments it
# only moves forward; a failure never turns into a success later (Stripe refunds stay failed).
RefundStatus = Literal["pending", "succeeded", "failed", "canceled"]
REFUND_STATUS_RANK: dict[str, int] = {"pending": 0, "succeeded": 1, "failed": 1, "canceled": 1}
FINAL_REFUND_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

# A dispute (chargeback) as Stripe reports it; warnings (early fraud inquiries) rank lowest, the
# closed outcomes highest. `won` restores the payment, `lost` keeps the money with the payer.
DISPUTE_STATUS_RANK: dict[str, int] = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "warning_closed": 4,
    "needs_response": 2,
    "under_review": 3,
    "won": 4,
    "lost": 4,
}
CLOSED_DISPUTE_STATUSES: frozenset[str] = frozenset({"won", "lost", "warning_closed"})
# An early fraud inquiry (Stripe's `warning_*` statuses): no money has moved yet. It closes (`warning_closed`)
# or escalates to a real dispute (the same object moves on to needs_response, or a new dispute is opened).
INQUIRY_DISPUTE_STATUSES: frozenset[str] = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})

# Ledger entries booked as payments that are no money received: a dunning write-off, a credit note's credit.
# Nothing can be refunded from them (there is no money to give back).
NOT_RECEIVED_METHODS: frozenset[str] = frozenset({"write_off", "credit_note"})


def is_inquiry(dispute_status: str | None) -> bool:
    return dispute_status in INQUIRY_DISPUTE_STATUSES


def is_received_money(method: str) -> bool:
    """Whether a payment of this method is money o2c received (and so may refund)."""
    return method not in NOT_RECEIVED_METHODS


def advance_refund_status(current: str | None, observed: str) -> str | None:
    """The status a refund moves to when `observed` is reported while it is `current`, or None when
    the observation is stale or changes nothing (same rules as advance_payment_status)."""
    if observed not in REFUND_STATUS_RANK:
        raise ValueError(f"not a refund status: {observed!r}")
    if current is None:
        return observed
    if current == observed or current in FINAL_REFUND_STATUSES:
        return None
    return observed if REFUND_STATUS_RANK[observed] > REFUND_STATUS_RANK.get(current, -1) else None


def advance_dispute_status(current: str | None, observed: str) -> str | None:
    """Forward-only for disputes: a closed dispute never reopens, an older status is ignored. An
    unknown observed status (a new one Stripe may add) is ignored rather than guessed at."""
    if observed not in DISPUTE_STATUS_RANK:
        return None
    if current is None:
        return observed
    if current == observed or current in CLOSED_DISPUTE_STATUSES:
        return None
    return observed if DISPUTE_STATUS_RANK[observed] > DISPUTE_STATUS_RANK.get(current, -1) else None


def refund_idempotency_key(refund_id: str) -> str:
    """The gateway idempotency key of one refund: derived from the refund's business id, so a
    repeated request (a client retry, a lost answer) never refunds twice."""
    return f"o2c-refund-{refund_id}"


class RefundRequest(BaseModel):
    """Give back `amount_minor` of a gateway payment, once per `refund_id`."""

    model_config = ConfigDict(frozen=True)

    refund_id: str = Field(min_length=1, max_length=200)
    gateway_payment_id: str = Field(min_length=1)
    amount_minor: int = Field(gt=0, strict=True)
    currency: str = "EUR"
    payment_method_kind: PaymentMethodKind | None = None
    reason: str = ""

    @property
    def idempotency_key(self) -> str:
        return refund_idempotency_key(self.refund_id)


class RefundOutcome(BaseModel):
    """What the gateway says about one refund."""

    model_config = ConfigDict(frozen=True)

    status: RefundStatus
    gateway_refund_id: str
    amount_minor: int = Field(strict=True)
    currency: str
    gateway_payment_id: str | None = None
    refund_id: str | None = None  # o2c's business id, echoed from the gateway's metadata
    failure_reason: str | None = None


class DisputeOutcome(BaseModel):
    """A dispute (chargeback) as the gateway reports it."""

    model_config = ConfigDict(frozen=True)

    gateway_dispute_id: str
    gateway_payment_id: str | None
    amount_minor: int = Field(strict=True)
    currency: str
    status: str
    reason: str | None = None
