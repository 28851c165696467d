"""Stripe webhooks: what Stripe tells o2c about its PaymentIntents, acted on once, in order of
progress rather than order of arrival.

Stripe delivers each event at least once (retries for up to three days), in no particular order,
and signs it. So, per delivery:

1. verify the `Stripe-Signature` header (HMAC-SHA256 over "t.payload" with the endpoint secret,
   300 s tolerance); a bad one is refused with 400 and a code (`signature_missing`,
   `signature_invalid`, `signature_expired`);
2. an event id already recorded is answered 200 and changes nothing;
3. the event's body is only a hint: the PaymentIntent is re-read from Stripe (through the
   gateway), so a stale or reordered event can only ever report the current state; Stripe not
   answering is a 503, which Stripe retries;
4. in ONE transaction: the event id (table `stripe_webhook_event`), the payment's new status
   by domain.payments.advance_payment_status (never backwards: a success is final, a failure
   is final against every pending state), a business event, and, when the payment reached a
   final state, an outbox message (topic `payment.result`) for the billing-account workflow;
5. after the commit, the API signals the workflow itself (`payment_received`) and marks the
   message delivered; if Temporal cannot be reached the message stays in the outbox and the
   worker's relay (adapters.temporal.outbox_relay) delivers it, so the webhook is still answered
   200 and the result still reaches the workflow.

The payment row is found by its correlator (the charge's idempotency key, rebuilt from the
intent's metadata invoice_id + attempt) or its gateway id. When the webhook wins the race against
the charge activity's own write, the row is created here from the intent (id = correlator, as the
activity would); the activity's later write finds it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from datetime import datetime
from typing import Any

import stripe
from sqlmodel import Session, select
from temporalio.service import RPCError

from adapters.payments.port import GatewayError, PaymentGateway, PaymentNotFound
from domain.money import from_minor
from domain.payments import FINAL_STATUSES, PaymentOutcome, advance_payment_status
from persistence.tables import BillingAccount, BusinessEvent, Invoice, OutboxMessage, Payment, StripeWebhookEvent
from services import payment_methods
from services import bill_state_events  # noqa: F401 - registers the bill state event hook (API and worker)
from services.errors import ServiceError, Unavailable
from services.outbox import mark_delivered
from services.query import run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import PaymentReceived

log = logging.getLogger(__name__)

PAYMENT_RESULT_TOPIC = "payment.result"
SIGNATURE_TOLERANCE_S = 300
# The PaymentIntent events that can change a payment; every other event is acknowledged and ignored.
PAYMENT_INTENT_EVENTS = frozenset({
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "payment_intent.requires_action",
    "payment_intent.canceled",
})
SOURCE = "webhook"
# Refunds and disputes (services.refunds, services.disputes): the object is re-read like an intent.
MANDATE_UPDATED = "mandate.updated"
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed"})
CHARGE_REFUNDED = "charge.refunded"
DISPUTE_EVENTS = frozenset({
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
})


class WebhookRejected(ServiceError):
    """The delivery is not a genuine, readable Stripe event (answered 400, so Stripe shows the failure)."""

    code = "invalid_webhook"


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    object_type: str | None
    object_id: str | None
    payment_intent: str | None = None  # a charge's or refund's PaymentIntent (only a hint: re-read before use)


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    result: str  # applied | unchanged | ignored | unmatched | duplicate
    payment_id: str | None = None
    status: str | None = None  # the payment's status after the event
    signalled: bool = False  # the billing-account workflow was told by this request


# --- 1. signature ------------------------------------------------------------------------------


def verify_event(payload: bytes, signature_header: str | None, secret: str | None, *,
                 tolerance_s: int = SIGNATURE_TOLERANCE_S, now: float | None = None) -> StripeEvent:
    """The event in `payload` if `signature_header` proves Stripe sent it with `secret`, else
    WebhookRejected; Unavailable when no secret is configured (Stripe retries meanwhile)."""
    if not secret or not secret.strip():
        raise Unavailable("Stripe webhooks are not configured: set O2C_STRIPE_WEBHOOK_SECRET", code="stripe_webhook_not_configured")
    if not signature_header:
        raise WebhookRejected("the Stripe-Signature header is missing", code="signature_missing")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookRejected("the event body is not UTF-8 JSON", code="malformed_event") from exc
    try:
        # No tolerance here: the SDK reads the clock itself; the age is checked below, so a
        # well-signed but old delivery gets its own code.
        stripe.WebhookSignature.verify_header(payload, signature_header, secret.strip(), tolerance=None)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"the Stripe-Signature header does not verify: {exc.user_message or exc}", code="signature_invalid") from exc
    timestamp = _signed_at(signature_header)
    if tolerance_s and timestamp < (time.time() if now is None else now) - tolerance_s:
        raise WebhookRejected(f"the signature is older than {tolerance_s} s (replayed delivery?)", code="signature_expired")
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise WebhookRejected("the event body is not JSON", code="malformed_event") from exc
    if not isinstance(body, dict) or body.get("object") != "event" or not isinstance(body.get("id"), str) or not isinstance(body.get("type"), str):
        raise WebhookRejected("the body is not a Stripe event", code="malformed_event")
    obj = (body.get("data") or {}).get("object") if isinstance(body.get("data"), dict) else None
    obj = obj if isinstance(obj, dict) else {}
    intent = obj.get("payment_intent")
    return StripeEvent(id=body["id"], type=body["type"], object_type=obj.get("object"), object_id=obj.get("id"),
                       payment_intent=intent if isinstance(intent, str) else None)


def _signed_at(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0  # verify_header already refused a header without one


# --- 2-5. acting on an event -------------------------------------------------------------------


async def handle_event(db_url: str, gateway: PaymentGateway, workflows: LazyWorkflows, event: StripeEvent, *,
                       chargeback_fee: Decimal = Decimal("15.00")) -> WebhookResult:
    if await run_tx(db_url, _already_seen, event.id):
        return WebhookResult(event.id, "duplicate")
    if event.type in REFUND_EVENTS or event.type == CHARGE_REFUNDED or event.type in DISPUTE_EVENTS:
        from services import money_back_events

        return await money_back_events.handle(db_url, gateway, workflows, event, chargeback_fee)
    if event.type == MANDATE_UPDATED and event.object_type == "mandate" and event.object_id:
        return await _mandate_updated(db_url, gateway, event)
    outcome: PaymentOutcome | None = None
    if event.type in PAYMENT_INTENT_EVENTS and event.object_type == "payment_intent" and event.object_id:
        try:
            outcome = await gateway.retrieve(event.object_id)
        except PaymentNotFound:
            outcome = None  # not an intent of this Stripe account/mode: acknowledged, recorded as unmatched
        except GatewayError as exc:
            # Not recorded: Stripe gets a 5xx and delivers the event again later.
            raise Unavailable(f"cannot re-read {event.object_id} from Stripe: {exc}", code="stripe_unavailable") from exc
    applied = await run_tx(db_url, record_event, event, outcome, utcnow())
    if applied.message_id is None:
        return applied.result
    signalled = await deliver_payment_result(db_url, workflows, applied.message_id, applied.payload)
    r = applied.result
    return WebhookResult(r.event_id, r.result, r.payment_id, r.status, signalled)


async def _mandate_updated(db_url: str, gateway: PaymentGateway, event: StripeEvent) -> WebhookResult:
    """A SEPA mandate changed (the debtor's bank cancelled it): re-read it and, when it is no longer active,
    flag the account's saved method so its debits are hard declines (no retry against a dead mandate)."""
    try:
        status = await gateway.retrieve_mandate_status(event.object_id)
    except PaymentNotFound:
        status = None
    except GatewayError as exc:
        raise Unavailable(f"cannot re-read {event.object_id} from Stripe: {exc}", code="stripe_unavailable") from exc

    def record(session: Session) -> WebhookResult:
        if session.get(StripeWebhookEvent, event.id) is not None:
            return WebhookResult(event.id, "duplicate")
        changed = payment_methods.record_mandate_status(session, event.object_id, status) if status else None
        result = "applied" if changed is not None else ("unmatched" if status is None else "unchanged")
        session.add(StripeWebhookEvent(id=event.id, type=event.type, object_id=event.object_id, result=result, received_at=utcnow()))
        return WebhookResult(event.id, result, status=status)

    return await run_tx(db_url, record)


def _already_seen(session: Session, event_id: str) -> bool:
    return session.get(StripeWebhookEvent, event_id) is not None


@dataclass(frozen=True)
class _Applied:
    result: WebhookResult
    message_id: int | None = None  # the outbox message to deliver now
    payload: dict[str, Any] | None = None


def record_event(session: Session, event: StripeEvent, outcome: PaymentOutcome | None, now: datetime) -> _Applied:
    """Step 4, in the caller's transaction. Safe to run again from scratch (a unique-key race
    with a parallel delivery of the same event is retried by run_tx and then finds it)."""
    if session.get(StripeWebhookEvent, event.id) is not None:
        return _Applied(WebhookResult(event.id, "duplicate"))
    row = StripeWebhookEvent(id=event.id, type=event.type, object_id=event.object_id, result="ignored", received_at=now)
    session.add(row)
    if event.type not in PAYMENT_INTENT_EVENTS or event.object_type != "payment_intent":
        return _Applied(WebhookResult(event.id, "ignored"))
    if outcome is None:
        row.result = "unmatched"
        return _Applied(WebhookResult(event.id, "unmatched"))
    payment = _find_payment(session, outcome)
    previous = payment.status if payment is not None else None
    if payment is None:
        payment = _payment_from_intent(session, outcome, now)
        if payment is None:
            log.info("Stripe event %s: %s names no o2c invoice; acknowledged", event.id, outcome.gateway_payment_id)
            row.result = "unmatched"
            return _Applied(WebhookResult(event.id, "unmatched"))
    row.payment_id = payment.id
    new_status = advance_payment_status(previous, outcome.status)
    if new_status is None:
        row.result = "unchanged"
        return _Applied(WebhookResult(event.id, "unchanged", payment.id, payment.status))
    payment.status = new_status
    payment.decline_code = outcome.decline_code  # None once it succeeded
    payment.gateway_payment_id = payment.gateway_payment_id or outcome.gateway_payment_id
    session.add(payment)
    row.result = "applied"
    account = session.get(BillingAccount, payment.billing_account_id)
    session.add(BusinessEvent(
        customer_id=account.customer_id if account else None, billing_account_id=payment.billing_account_id,
        kind=f"payment.{new_status}",
        message=f"Stripe reports payment {payment.id} ({from_minor(payment.amount_cents)} {payment.currency}"
                + (f", invoice {payment.invoice_id}" if payment.invoice_id else "") + f"): {previous or 'new'} -> {new_status}"
                + (f", {outcome.decline_code} ({outcome.decline_class} decline)" if new_status == "declined" and outcome.decline_code else ""),
        data={"paymentId": payment.id, "invoiceId": payment.invoice_id, "gatewayPaymentId": outcome.gateway_payment_id,
              "eventId": event.id, "from": previous, "to": new_status},
        at=now,
    ))
    result = WebhookResult(event.id, "applied", payment.id, new_status)
    if new_status not in FINAL_STATUSES:
        return _Applied(result)
    payload = {
        "billingAccountId": payment.billing_account_id,
        "paymentId": payment.id,
        "status": new_status,
        "amountCents": payment.amount_cents if new_status == "succeeded" else 0,  # what was received
        "source": SOURCE,
    }
    message = OutboxMessage(key=f"{PAYMENT_RESULT_TOPIC}:{payment.id}:{new_status}", topic=PAYMENT_RESULT_TOPIC, payload=payload, created_at=now)
    if session.exec(select(OutboxMessage).where(OutboxMessage.key == message.key)).first() is not None:
        return _Applied(result)  # e.g. declined -> succeeded -> ... cannot repeat, but never write a key twice
    session.add(message)
    session.flush()
    return _Applied(result, message.id, payload)


def _find_payment(session: Session, outcome: PaymentOutcome) -> Payment | None:
    key = outcome.idempotency_key
    if key is not None:
        found = session.exec(select(Payment).where(Payment.correlator_id == key).with_for_update()).first()
        if found is not None:
            return found
    return session.exec(select(Payment).where(Payment.gateway_payment_id == outcome.gateway_payment_id).with_for_update()).first()


def _payment_from_intent(session: Session, outcome: PaymentOutcome, now: datetime) -> Payment | None:
    """The row the charge activity would write, when the webhook arrives first; None when the
    intent's metadata does not name an invoice of the account it names."""
    key = outcome.idempotency_key
    if key is None or outcome.account_id is None:
        return None
    invoice = session.get(Invoice, outcome.invoice_id)
    if invoice is None or invoice.billing_account_id != outcome.account_id:
        return None
    payment = Payment(id=key, correlator_id=key, billing_account_id=invoice.billing_account_id, invoice_id=invoice.id,
                      amount_cents=outcome.amount_minor, currency=outcome.currency, method=outcome.payment_method_kind or "card",
                      status="unknown", attempt=outcome.attempt or 0, gateway_payment_id=outcome.gateway_payment_id,
                      recorded_by="stripe-webhook", created_at=now)
    session.add(payment)
    return payment


# --- delivery to the billing-account workflow ------------------------------------------------------


def payment_signal(payload: dict[str, Any]) -> tuple[str, PaymentReceived]:
    """(billing account id, signal) for a `payment.result` outbox message. The workflow reads the
    payment's status from the database; `amount_cents` is what was received (0 for a failure)."""
    return payload["billingAccountId"], PaymentReceived(
        payment_id=payload["paymentId"], amount_cents=int(payload["amountCents"]), source=payload.get("source", SOURCE)
    )


async def deliver_payment_result(db_url: str, workflows: LazyWorkflows, message_id: int, payload: dict[str, Any]) -> bool:
    """Signals a `payment.result` outbox message to the account's workflow now and marks it delivered;
    when Temporal cannot be reached it stays in the outbox for the relay. True when the workflow was told."""
    account_id, signal = payment_signal(payload)
    try:
        await workflows.call(lambda gateway: gateway.payment_received(account_id, signal))
    except Unavailable as exc:
        log.warning("payment %s recorded; Temporal unreachable (%s): the outbox relay delivers it", signal.payment_id, exc.message)
        return False
    except RPCError as exc:
        if not is_not_found(exc):
            log.warning("payment %s recorded; signalling its account workflow failed (%s): the outbox relay retries", signal.payment_id, exc)
            return False
        # No workflow runs for the account: nothing waits; it allocates the payment when it starts.
        log.info("payment %s recorded; billing account %s has no running workflow", signal.payment_id, account_id)
        await run_tx(db_url, mark_delivered, message_id, utcnow())
        return False
    await run_tx(db_url, mark_delivered, message_id, utcnow())
    return True
