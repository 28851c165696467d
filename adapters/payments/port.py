"""The payment gateway port: what the order-to-cash flow needs from a PSP, nothing more.

Errors are split by what the caller should do next, so activities can map them to Temporal's
retryable / non-retryable failures by the `retryable` attribute alone.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from domain.payments import ChargeRequest, PaymentOutcome


class GatewayError(Exception):
    """Base for gateway failures that are not a payment outcome (a decline is an outcome)."""

    retryable: bool = False


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached or failed (network, timeout, 5xx, rate limit).

    Whether the charge happened is unknown. Retry `charge` with the *same* ChargeRequest (same
    idempotency key, so the gateway replays rather than charging twice) or `retrieve` a known
    id; never retry with a new attempt number because of this error."""

    retryable = True


class GatewayConfigError(GatewayError):
    """Bad or missing credentials / permissions. Retrying will not help; an operator must."""


class IdempotencyConflict(GatewayError):
    """The idempotency key was already used with different parameters (e.g. another amount).

    A bug on our side: the same invoice attempt must always be charged identically."""


class GatewayRequestRejected(GatewayError):
    """The gateway rejected the request as invalid (other than the payment method itself)."""


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
