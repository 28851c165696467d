"""StripeGateway: PaymentGateway over Stripe PaymentIntents (off-session, confirm at create).

Why the sync SDK in a worker thread (asyncio.to_thread) rather than the SDK's *_async methods:
the sync requests-based client keeps no event-loop-bound state, so one gateway instance is safe
from any loop (Temporal worker, FastAPI, pytest) and from sync activities alike; the async
client holds an httpx.AsyncClient tied to the loop it was first used on.

Safety: every create carries Idempotency-Key = ChargeRequest.idempotency_key, so the SDK's own
network retries and any activity retry replay the first result instead of charging twice.
"""
from __future__ import annotations

import asyncio
from typing import Any

import stripe

from adapters.payments.port import (
    GatewayConfigError,
    GatewayRequestRejected,
    GatewayUnavailable,
    IdempotencyConflict,
    PaymentNotFound,
)
from domain.payments import (
    ChargeRequest,
    InvalidPaymentMethod,
    PaymentOutcome,
    classify_decline,
    parse_payment_method,
)

_AUTH_REQUIRED = "authentication_required"


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        max_network_retries: int = 2,
        timeout_s: float = 30.0,
    ):
        if not api_key:
            raise GatewayConfigError("a Stripe API key is required")
        # A bounded timeout: the SDK default (80 s) would outlive a typical activity timeout
        # and leave the outcome unknown for longer than needed.
        http_client = stripe.RequestsClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=http_client,
            max_network_retries=max_network_retries,
        )

    async def charge(self, req: ChargeRequest) -> PaymentOutcome:
        try:
            params = _create_params(req)
        except InvalidPaymentMethod as exc:
            # Never sent: e.g. a raw card number we refuse to handle.
            return _invalid_method(req, str(exc), None)
        try:
            intent = await asyncio.to_thread(
                self._client.v1.payment_intents.create,
                params,  # type: ignore[arg-type]
                {"idempotency_key": req.idempotency_key},
            )
        except stripe.CardError as exc:
            return _outcome_from_card_error(req, exc)
        except stripe.InvalidRequestError as exc:
            if (exc.param or "").startswith("payment_method"):
                pi = _error_intent_id(exc)
                return _invalid_method(req, exc.user_message or "invalid payment method", pi)
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _outcome_from_intent(intent.to_dict())

    async def retrieve(self, gateway_payment_id: str) -> PaymentOutcome:
        if not gateway_payment_id:
            raise PaymentNotFound("empty payment id")
        try:
            intent = await asyncio.to_thread(self._client.v1.payment_intents.retrieve, gateway_payment_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                raise PaymentNotFound(exc.user_message or gateway_payment_id) from exc
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _outcome_from_intent(intent.to_dict())


def _create_params(req: ChargeRequest) -> dict[str, Any]:
    ref = parse_payment_method(req.payment_method)
    params: dict[str, Any] = {
        "amount": req.amount_minor,
        "currency": req.currency.lower(),
        "confirm": True,
        "off_session": True,
        "payment_method_types": [ref.kind],
        "metadata": {
            "invoice_id": req.invoice_id,
            "attempt": str(req.attempt),
            "account_id": req.account_id,
        },
    }
    if req.description:
        params["description"] = req.description
    if req.gateway_customer_id:
        params["customer"] = req.gateway_customer_id
    if ref.payment_method_id is not None:
        params["payment_method"] = ref.payment_method_id
    else:
        billing: dict[str, str] = {"name": req.account_id}
        if req.payer_email:
            billing["email"] = req.payer_email
        params["payment_method_data"] = {
            "type": "sepa_debit",
            "sepa_debit": {"iban": ref.iban},
            "billing_details": billing,
        }
        # A telecom contract carries the signed SEPA mandate, hence "offline" acceptance;
        # Stripe requires mandate_data when confirming a new SEPA method off-session.
        params["mandate_data"] = {"customer_acceptance": {"type": "offline"}}
    return params


def _outcome_from_intent(intent: dict[str, Any]) -> PaymentOutcome:
    status = intent.get("status")
    base = dict(
        gateway_payment_id=intent.get("id"),
        amount_minor=int(intent.get("amount")),
        currency=str(intent.get("currency", "")).upper(),
    )
    if status == "succeeded":
        return PaymentOutcome(status="succeeded", **base)
    if status in ("processing", "requires_capture"):
        # requires_capture: authorised but not captured; we never use manual capture, so it
        # means money is still in flight, like processing.
        return PaymentOutcome(status="processing", **base)
    if status == "canceled":
        return PaymentOutcome(status="canceled", message=intent.get("cancellation_reason"), **base)
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code")
    message = error.get("message")
    if status in ("requires_action", "requires_confirmation"):
        return PaymentOutcome(
            status="requires_action", decline_code=code, message=message or f"payment intent {status}", **base
        )
    if status == "requires_payment_method":
        if code == _AUTH_REQUIRED:
            return PaymentOutcome(status="requires_action", decline_code=code, message=message, **base)
        return PaymentOutcome(
            status="declined",
            decline_code=code,
            decline_class=classify_decline(code),
            message=message or "no successful payment attempt",
            **base,
        )
    raise GatewayRequestRejected(f"unexpected PaymentIntent status {status!r}")


def _outcome_from_card_error(req: ChargeRequest, exc: stripe.CardError) -> PaymentOutcome:
    err = exc.error
    code = (err.decline_code if err is not None else None) or exc.code
    base = dict(
        gateway_payment_id=_error_intent_id(exc),
        amount_minor=req.amount_minor,
        currency=req.currency,
        decline_code=code,
        message=exc.user_message,
    )
    # Off-session 3DS: Stripe answers 402 authentication_required; the card is fine, the
    # customer has to come back on-session and authenticate.
    if code == _AUTH_REQUIRED or exc.code == _AUTH_REQUIRED:
        return PaymentOutcome(status="requires_action", **base)
    return PaymentOutcome(status="declined", decline_class=classify_decline(code), **base)


def _invalid_method(req: ChargeRequest, message: str, pi: str | None) -> PaymentOutcome:
    return PaymentOutcome(
        status="declined",
        gateway_payment_id=pi,
        amount_minor=req.amount_minor,
        currency=req.currency,
        decline_code="invalid_payment_method",
        decline_class=classify_decline("invalid_payment_method"),
        message=message,
    )


def _error_intent_id(exc: stripe.StripeError) -> str | None:
    # Read the raw JSON: on a failed confirmation Stripe still creates the intent and puts it
    # in the error body; its id lets the caller retrieve/audit the failed attempt.
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    intent = (body.get("error") or {}).get("payment_intent") or {}
    return intent.get("id") if isinstance(intent, dict) else None


def _translate(exc: stripe.StripeError) -> Exception:
    """Stripe SDK error -> port error, by what the caller should do next."""
    if isinstance(exc, stripe.IdempotencyError):
        return IdempotencyConflict(exc.user_message or "idempotency key reused with other parameters")
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return GatewayConfigError(f"Stripe rejected the credentials: {exc.user_message}")
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError)):
        return GatewayUnavailable(f"Stripe unreachable or throttling: {exc.user_message}")
    if isinstance(exc, stripe.InvalidRequestError):
        return GatewayRequestRejected(f"Stripe rejected the request: {exc.user_message} (param={exc.param})")
    if exc.http_status is None or exc.http_status >= 500 or exc.http_status == 409:
        return GatewayUnavailable(f"Stripe error {exc.http_status}: {exc.user_message}")
    return GatewayRequestRejected(f"Stripe error {exc.http_status}: {exc.user_message}")
