"""StripeGateway: PaymentGateway over Stripe (Customers, PaymentMethods, SetupIntents and
PaymentIntents confirmed off-session).

Why the sync SDK in a worker thread (asyncio.to_thread) rather than the SDK's *_async methods:
the sync requests-based client keeps no event-loop-bound state, so one gateway instance is safe
from any loop (Temporal worker, FastAPI, pytest) and from sync activities alike; the async
client holds an httpx.AsyncClient tied to the loop it was first used on.

Safety: every create carries an Idempotency-Key derived from business ids (charge: invoice id +
attempt; customer: billing account id; saved methods: customer + method), so the SDK's own
network retries and any activity retry replay the first result instead of acting twice. A charge
whose request may have run but whose answer was lost (timeout, dropped connection, 5xx, 409 key
in use) is reported as status ``unknown``, never as an error to retry blindly: the caller
reconciles it with `find_by_idempotency` (the key is also in the PaymentIntent's metadata).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import stripe

from adapters.payments.port import (
    GatewayConfigError,
    GatewayRequestRejected,
    GatewayUnavailable,
    IdempotencyConflict,
    PaymentMethodRejected,
    PaymentNotFound,
    card_to_attach,
    iban_to_set_up,
)
from domain.payments import (
    PAYMENT_STATUS_RANK,
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

log = logging.getLogger(__name__)

_AUTH_REQUIRED = "authentication_required"
# Metadata keys o2c writes on its Stripe objects.
META_BILLING_ACCOUNT = "billing_account_id"
META_IDEMPOTENCY_KEY = "idempotency_key"
META_REFUND_ID = "o2c_refund_id"


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

    # --- charging ----------------------------------------------------------------------------

    async def charge(self, req: ChargeRequest) -> PaymentOutcome:
        try:
            ref = parse_payment_method(req.payment_method)
        except InvalidPaymentMethod as exc:
            # Never sent: e.g. a raw card number we refuse to handle.
            return _invalid_method(req, str(exc), None)
        customer = req.gateway_customer_id
        if customer is None and ref.payment_method_id is not None and not _is_test_alias(ref.payment_method_id):
            # A saved method is charged together with the customer it is attached to (Stripe
            # refuses it otherwise); the customer never changes, so the request stays identical
            # for the same idempotency key.
            try:
                customer = await self._customer_of(ref.payment_method_id)
            except PaymentNotFound as exc:
                return _invalid_method(req, str(exc), None)
        params = _create_params(req, ref, customer)
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
            if _may_have_run(exc):
                return _unknown(req, exc)
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

    async def find_by_idempotency(self, idempotency_key: str, *, gateway_customer_id: str | None = None) -> PaymentOutcome | None:
        """With the customer: the customer's latest 100 PaymentIntents (the list API is read-after-
        write consistent). Without: Stripe search on the metadata key (searchable within about a
        minute of the create; None before that proves nothing)."""
        try:
            if gateway_customer_id:
                page = await asyncio.to_thread(
                    self._client.v1.payment_intents.list, {"customer": gateway_customer_id, "limit": 100}
                )
            else:
                page = await asyncio.to_thread(
                    self._client.v1.payment_intents.search,
                    {"query": f"metadata['{META_IDEMPOTENCY_KEY}']:{_quote(idempotency_key)}", "limit": 10},
                )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        intents = [i for i in page.to_dict().get("data", []) if (i.get("metadata") or {}).get(META_IDEMPOTENCY_KEY) == idempotency_key]
        if not intents:
            return None
        outcomes = [_outcome_from_intent(i) for i in intents]
        if len(outcomes) > 1:
            # One key, one create: more than one intent means someone created intents by hand.
            log.error("%d PaymentIntents carry idempotency key %s: %s", len(outcomes), idempotency_key,
                      [o.gateway_payment_id for o in outcomes])
        return max(outcomes, key=lambda o: PAYMENT_STATUS_RANK[o.status])

    # --- customers and saved payment methods -----------------------------------------------

    async def ensure_customer(self, billing_account_id: str, *, email: str | None = None, name: str | None = None) -> str:
        """Search by metadata first (finds customers older than the idempotency window), then
        create with a key derived from the account id (covers the search's indexing lag). The
        create carries only the account id, so a changed e-mail or name can never make the same
        key conflict; they are set by an update afterwards."""
        try:
            found = await asyncio.to_thread(
                self._client.v1.customers.search,
                {"query": f"metadata['{META_BILLING_ACCOUNT}']:{_quote(billing_account_id)}", "limit": 10},
            )
            customers = [c for c in found.to_dict().get("data", [])
                         if (c.get("metadata") or {}).get(META_BILLING_ACCOUNT) == billing_account_id]
            if customers:
                customer = min(customers, key=lambda c: (c.get("created") or 0, c["id"]))
            else:
                created = await asyncio.to_thread(
                    self._client.v1.customers.create,
                    {"metadata": {META_BILLING_ACCOUNT: billing_account_id}},
                    {"idempotency_key": f"o2c-customer-{billing_account_id}"},
                )
                customer = created.to_dict()
            changes = {k: v for k, v in (("email", email), ("name", name)) if v is not None and customer.get(k) != v}
            if changes:
                await asyncio.to_thread(self._client.v1.customers.update, customer["id"], changes)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return customer["id"]

    async def attach_card(self, customer_id: str, payment_method: str) -> SavedPaymentMethod:
        card_id = card_to_attach(payment_method)
        try:
            pm = await asyncio.to_thread(
                self._client.v1.payment_methods.attach,
                card_id,
                {"customer": customer_id},
                {"idempotency_key": f"o2c-attach-{customer_id}-{card_id}"},
            )
        except stripe.CardError as exc:
            raise _rejected_method(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        data = pm.to_dict()
        card = data.get("card") or {}
        return SavedPaymentMethod(payment_method_id=data["id"], kind="card", customer_id=customer_id,
                                  last4=card.get("last4"), brand=card.get("brand"))

    async def setup_sepa_debit(
        self, customer_id: str, iban: str, *, account_holder: str, email: str | None, acceptance: MandateAcceptance
    ) -> SavedPaymentMethod:
        compact = iban_to_set_up(iban)
        billing: dict[str, str] = {"name": account_holder}
        if email:
            billing["email"] = email
        params: dict[str, Any] = {
            "customer": customer_id,
            "confirm": True,
            "usage": "off_session",
            "payment_method_types": ["sepa_debit"],
            "payment_method_data": {"type": "sepa_debit", "sepa_debit": {"iban": compact}, "billing_details": billing},
            "mandate_data": {"customer_acceptance": _acceptance_params(acceptance)},
        }
        # The IBAN only as a digest: the key is logged and shown in Stripe's dashboard.
        key = f"o2c-sepa-setup-{customer_id}-{hashlib.sha256(compact.encode()).hexdigest()[:24]}"
        try:
            intent = await asyncio.to_thread(self._client.v1.setup_intents.create, params, {"idempotency_key": key})  # type: ignore[arg-type]
        except stripe.CardError as exc:
            raise _rejected_method(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        data = intent.to_dict()
        if data.get("status") not in ("succeeded", "processing"):
            error = data.get("last_setup_error") or {}
            code = error.get("decline_code") or error.get("code")
            raise PaymentMethodRejected(error.get("message") or f"SetupIntent {data.get('id')} is {data.get('status')}", code)
        return SavedPaymentMethod(payment_method_id=data["payment_method"], kind="sepa_debit", customer_id=customer_id,
                                  last4=compact[-4:], mandate_id=data.get("mandate"))

    # --- refunds and disputes ---------------------------------------------------------------------

    async def refund(self, req: RefundRequest) -> RefundOutcome:
        """A Stripe Refund of the PaymentIntent, keyed by the refund's business id. o2c's reason goes
        to the metadata (Stripe's `reason` is an enum). A lost answer is GatewayUnavailable: the same
        request with the same key is safe to send again (Stripe replays the refund it made)."""
        params: dict[str, Any] = {
            "payment_intent": req.gateway_payment_id,
            "amount": req.amount_minor,
            "reason": "requested_by_customer",
            "metadata": {META_REFUND_ID: req.refund_id, "refund_id": req.refund_id, META_IDEMPOTENCY_KEY: req.idempotency_key},
        }
        if req.reason:
            params["metadata"]["o2c_reason"] = req.reason[:500]
        try:
            refund = await asyncio.to_thread(self._client.v1.refunds.create, params, {"idempotency_key": req.idempotency_key})  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return _outcome_from_refund(refund.to_dict())

    async def retrieve_refund(self, gateway_refund_id: str) -> RefundOutcome:
        return _outcome_from_refund(await self._retrieve(self._client.v1.refunds.retrieve, gateway_refund_id, "refund"))

    async def find_refund(self, gateway_payment_id: str, refund_id: str) -> RefundOutcome | None:
        """Lists the PaymentIntent's refunds (GET /v1/refunds?payment_intent=..., newest first, every page) and
        picks the one whose metadata names the o2c refund. A list, not a search: it is read consistently."""
        params: dict[str, Any] = {"payment_intent": gateway_payment_id, "limit": 100}
        while True:
            try:
                page = (await asyncio.to_thread(self._client.v1.refunds.list, params)).to_dict()  # type: ignore[arg-type]
            except stripe.StripeError as exc:
                raise _translate(exc) from exc
            rows = page.get("data") or []
            for row in rows:
                if _metadata_refund_id(row) == refund_id:
                    return _outcome_from_refund(row)
            if not page.get("has_more") or not rows:
                return None
            params = {**params, "starting_after": rows[-1]["id"]}

    async def retrieve_dispute(self, gateway_dispute_id: str) -> DisputeOutcome:
        data = await self._retrieve(self._client.v1.disputes.retrieve, gateway_dispute_id, "dispute")
        return DisputeOutcome(gateway_dispute_id=data["id"], gateway_payment_id=data.get("payment_intent"), amount_minor=int(data["amount"]),
                              currency=str(data.get("currency", "")).upper(), status=str(data.get("status")), reason=data.get("reason"))

    async def retrieve_mandate_status(self, mandate_id: str) -> str:
        data = await self._retrieve(self._client.v1.mandates.retrieve, mandate_id, "mandate")
        return str(data.get("status"))

    async def _retrieve(self, read, object_id: str, name: str) -> dict[str, Any]:
        if not object_id:
            raise PaymentNotFound(f"empty {name} id")
        try:
            found = await asyncio.to_thread(read, object_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                raise PaymentNotFound(exc.user_message or object_id) from exc
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return found.to_dict()

    async def _customer_of(self, payment_method_id: str) -> str | None:
        try:
            pm = await asyncio.to_thread(self._client.v1.payment_methods.retrieve, payment_method_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 or exc.code == "resource_missing":
                raise PaymentNotFound(exc.user_message or f"No such PaymentMethod: {payment_method_id!r}") from exc
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return pm.to_dict().get("customer")


def _create_params(req: ChargeRequest, ref, customer: str | None) -> dict[str, Any]:
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
            META_IDEMPOTENCY_KEY: req.idempotency_key,
        },
    }
    if req.description:
        params["description"] = req.description
    if customer:
        params["customer"] = customer
    if ref.payment_method_id is not None:
        # A saved SEPA method carries the mandate it was set up with.
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


def _acceptance_params(acceptance: MandateAcceptance) -> dict[str, Any]:
    params: dict[str, Any] = {"type": acceptance.type}
    if acceptance.accepted_at is not None:
        params["accepted_at"] = acceptance.accepted_at
    if acceptance.type == "online":
        params["online"] = {"ip_address": acceptance.ip_address, "user_agent": acceptance.user_agent}
    return params


def _references(intent: dict[str, Any]) -> dict[str, Any]:
    metadata = intent.get("metadata") or {}
    attempt = metadata.get("attempt")
    types = intent.get("payment_method_types") or []
    kind = types[0] if types and types[0] in ("card", "sepa_debit") else None
    return dict(
        invoice_id=metadata.get("invoice_id") or None,
        attempt=int(attempt) if isinstance(attempt, str) and attempt.isdigit() and int(attempt) > 0 else None,
        account_id=metadata.get("account_id") or None,
        payment_method_kind=kind,
    )


def _request_references(req: ChargeRequest) -> dict[str, Any]:
    try:
        kind = parse_payment_method(req.payment_method).kind
    except InvalidPaymentMethod:
        kind = None
    return dict(invoice_id=req.invoice_id, attempt=req.attempt, account_id=req.account_id, payment_method_kind=kind)


def _outcome_from_intent(intent: dict[str, Any]) -> PaymentOutcome:
    """Every PaymentIntent status, mapped:
    succeeded -> succeeded; processing (SEPA for days) and requires_capture (authorised, we never
    capture manually, so money in flight) -> processing; canceled -> canceled;
    requires_action / requires_confirmation -> requires_action (the customer must act);
    requires_payment_method -> declined with the last error's code and class, or requires_action
    when that error is `authentication_required` (the card is fine, the customer must authenticate)."""
    status = intent.get("status")
    base = dict(
        gateway_payment_id=intent.get("id"),
        amount_minor=int(intent.get("amount")),
        currency=str(intent.get("currency", "")).upper(),
        **_references(intent),
    )
    if status == "succeeded":
        return PaymentOutcome(status="succeeded", **base)
    if status in ("processing", "requires_capture"):
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


def _outcome_from_refund(refund: dict[str, Any]) -> RefundOutcome:
    """Stripe Refund.status: pending and requires_action (the customer must give bank details) are
    pending; succeeded, failed and canceled are final."""
    status = refund.get("status")
    mapped = {"succeeded": "succeeded", "failed": "failed", "canceled": "canceled"}.get(str(status), "pending")
    return RefundOutcome(status=mapped, gateway_refund_id=refund["id"], amount_minor=int(refund["amount"]),
                         currency=str(refund.get("currency", "")).upper(), gateway_payment_id=refund.get("payment_intent"),
                         refund_id=_metadata_refund_id(refund), failure_reason=refund.get("failure_reason"))


def _metadata_refund_id(refund: dict[str, Any]) -> str | None:
    """The o2c refund a Stripe refund was made for (`refund_id`: refunds made before `o2c_refund_id` was added)."""
    metadata = refund.get("metadata") or {}
    return metadata.get(META_REFUND_ID) or metadata.get("refund_id") or None


def _outcome_from_card_error(req: ChargeRequest, exc: stripe.CardError) -> PaymentOutcome:
    err = exc.error
    code = (err.decline_code if err is not None else None) or exc.code
    base = dict(
        gateway_payment_id=_error_intent_id(exc),
        amount_minor=req.amount_minor,
        currency=req.currency,
        decline_code=code,
        message=exc.user_message,
        **_request_references(req),
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
        **_request_references(req),
    )


def _unknown(req: ChargeRequest, exc: stripe.StripeError) -> PaymentOutcome:
    return PaymentOutcome(
        status="unknown",
        gateway_payment_id=None,
        amount_minor=req.amount_minor,
        currency=req.currency,
        message=f"no answer from Stripe ({type(exc).__name__}: {exc.user_message or exc}); "
        f"reconcile with find_by_idempotency({req.idempotency_key!r})",
        **_request_references(req),
    )


def _may_have_run(exc: stripe.StripeError) -> bool:
    """Whether a failed create may still have created a PaymentIntent: a lost answer (timeout,
    dropped connection), a server error (Stripe replays even a 500 for the same key), or 409 (a
    request with the same key is still running). A rate limit or a 4xx means it did not run."""
    if isinstance(exc, stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.RateLimitError):
        return False
    return exc.http_status is None or exc.http_status >= 500 or exc.http_status == 409


def _error_intent_id(exc: stripe.StripeError) -> str | None:
    # Read the raw JSON: on a failed confirmation Stripe still creates the intent and puts it
    # in the error body; its id lets the caller retrieve/audit the failed attempt.
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    intent = (body.get("error") or {}).get("payment_intent") or {}
    return intent.get("id") if isinstance(intent, dict) else None


def _rejected_method(exc: stripe.CardError) -> PaymentMethodRejected:
    err = exc.error
    code = (err.decline_code if err is not None else None) or exc.code
    return PaymentMethodRejected(exc.user_message or "the payment method was declined", code)


def _is_test_alias(payment_method_id: str) -> bool:
    # Stripe's test-mode aliases (pm_card_visa, pm_card_chargeDeclined, ...) belong to no customer.
    return payment_method_id.startswith("pm_card_")


def _quote(value: str) -> str:
    """A string literal for Stripe's search query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
