"""The payment gateway port: what the order-to-cash flow needs from a PSP, nothing more.

Errors are split by what the caller should do next, so activities can map them to Temporal's
retryable / non-retryable failures by the `retryable` attribute alone.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from domain.payments import (
    ChargeRequest,
    DisputeOutcome,
    InvalidPaymentMethod,
    MandateAcceptance,
    PaymentOutcome,
    RefundOutcome,
    RefundRequest,
    SavedPaymentMethod,
    classify_decline,
    iban_is_valid,
    parse_payment_method,
)


class GatewayError(Exception):
    """Base for gateway failures that are not a payment outcome (a decline is an outcome)."""

    retryable: bool = False


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached, failed, or throttled us, on a call that changes nothing
    or is safe to repeat (a read, a rate-limited request that did not run).

    `charge` does not raise this for a request that may have run: it answers an outcome with
    status ``unknown`` instead, to be reconciled with `find_by_idempotency`. Never retry with a
    new attempt number because of either."""

    retryable = True


class GatewayConfigError(GatewayError):
    """Bad or missing credentials / permissions. Retrying will not help; an operator must."""


class IdempotencyConflict(GatewayError):
    """The idempotency key was already used with different parameters (e.g. another amount).

    A bug on our side: the same invoice attempt must always be charged identically."""


class GatewayRequestRejected(GatewayError):
    """The gateway rejected the request as invalid (other than the payment method itself)."""



def card_to_attach(payment_method: str) -> str:
    """The card payment-method id that attach_card saves; anything else is refused the same way by every gateway."""
    try:
        ref = parse_payment_method(payment_method)
    except InvalidPaymentMethod as exc:
        raise GatewayRequestRejected(str(exc)) from exc
    if ref.kind != "card" or ref.payment_method_id is None:
        raise GatewayRequestRejected("not a card payment method; save a SEPA debit with setup_sepa_debit")
    return ref.payment_method_id


def iban_to_set_up(iban: str) -> str:
    """The IBAN that setup_sepa_debit saves (compact, upper case); an invalid one is refused the same way by every gateway."""
    compact = "".join(iban.split()).upper()
    if not iban_is_valid(compact):
        raise GatewayRequestRejected(f"not a valid IBAN: {iban!r}")
    return compact


class PaymentMethodRejected(GatewayError):
    """The gateway refused to save a payment method (a declined card on attach, a failed SEPA
    mandate set-up). Like a charge decline, `decline_code`/`decline_class` say whether another
    try with the same details can work; the customer must usually give other details."""

    def __init__(self, message: str, decline_code: str | None = None) -> None:
        super().__init__(message)
        self.decline_code = decline_code
        self.decline_class = classify_decline(decline_code)


class PaymentNotFound(GatewayError):
    """`retrieve` was given an id the gateway does not know."""


@runtime_checkable
class PaymentGateway(Protocol):
    async def charge(self, req: ChargeRequest) -> PaymentOutcome:
        """Charge `req.amount_minor` once per `req.idempotency_key`; calling again with the same
        request returns the first outcome and never charges twice."""
        ...

    async def retrieve(self, gateway_payment_id: str) -> PaymentOutcome:
        """Current state of a payment, e.g. to follow a `processing` SEPA debit to its end."""
        ...

    async def find_by_idempotency(self, idempotency_key: str, *, gateway_customer_id: str | None = None) -> PaymentOutcome | None:
        """Current state of the charge made with this idempotency key, or None if the gateway shows
        none (yet). How an ``unknown`` outcome is reconciled. None is not proof that nothing was
        charged for a moment after the request (Stripe's search lags up to a minute; with the
        customer id a consistent list is read instead); repeating the *same* request is safe then,
        as the gateway replays an executed request for the same key."""
        ...

    async def ensure_customer(self, billing_account_id: str, *, email: str | None = None, name: str | None = None) -> str:
        """The gateway customer of a billing account, created once (keyed by the account id) and
        kept in sync with the given e-mail and name. Returns its id."""
        ...

    async def attach_card(self, customer_id: str, payment_method: str) -> SavedPaymentMethod:
        """Saves a card payment method (a ``pm_...`` from the gateway's client SDK, or a test
        card/alias) to the customer for off-session charges. Idempotent per customer and method."""
        ...

    async def setup_sepa_debit(
        self, customer_id: str, iban: str, *, account_holder: str, email: str | None, acceptance: MandateAcceptance
    ) -> SavedPaymentMethod:
        """Saves a SEPA Direct Debit payment method with its mandate to the customer (Stripe: a
        SetupIntent confirmed with mandate_data). Idempotent per customer and IBAN."""
        ...

    async def refund(self, req: RefundRequest) -> RefundOutcome:
        """Give back `req.amount_minor` of a succeeded payment once per `req.idempotency_key`; the same
        request again returns the first refund. A refund may be `pending` (SEPA: the money travels for
        days): follow it with `retrieve_refund` or the gateway's webhook. GatewayRequestRejected when the
        gateway refuses (e.g. more than is left to refund); GatewayUnavailable when it could not be asked
        (repeating the same request is safe: the key replays)."""
        ...

    async def retrieve_refund(self, gateway_refund_id: str) -> RefundOutcome:
        """Current state of a refund (PaymentNotFound for an id the gateway does not know)."""
        ...

    async def find_refund(self, gateway_payment_id: str, refund_id: str) -> RefundOutcome | None:
        """The refund of this payment made for o2c refund `refund_id` (by the id `refund` puts in its
        metadata), or None when the gateway holds none. Asked before sending a refund again whose answer
        was lost: the idempotency key replays only within the gateway's window (24 h at Stripe)."""
        ...

    async def retrieve_dispute(self, gateway_dispute_id: str) -> DisputeOutcome:
        """Current state of a dispute (chargeback) on one of our payments."""
        ...

    async def retrieve_mandate_status(self, mandate_id: str) -> str:
        """A SEPA mandate's current status (Stripe: active | inactive | pending). A webhook about a mandate
        is acted on only after this re-read, never on the event's own copy."""
        ...
