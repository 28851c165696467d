"""Stripe webhooks about money going back: refunds (refund.created / refund.updated / refund.failed,
charge.refunded) and disputes (charge.dispute.*). Same rules as services.stripe_webhooks: the event is only
a hint, the object is re-read from Stripe, the event id is recorded in the transaction of its effect (a
duplicate does nothing), and statuses only move forward, so any order of arrival ends in the same state."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, select

from adapters.payments.port import GatewayError, PaymentGateway, PaymentNotFound
from domain.payments import DisputeOutcome, RefundOutcome
from persistence.tables import Payment, Refund, StripeWebhookEvent
from services import disputes, refunds
from services.errors import Unavailable
from services.query import run_tx, utcnow
from services.stripe_webhooks import CHARGE_REFUNDED, DISPUTE_EVENTS, StripeEvent, WebhookResult, deliver_payment_result
from services.workflows import LazyWorkflows


@dataclass(frozen=True)
class _Applied:
    result: WebhookResult
    notices: tuple[refunds.Notice, ...] = ()


def _refunds_to_reread(session: Session, payment_intent: str | None) -> list[str]:
    """charge.refunded names the charge's PaymentIntent: the o2c refunds of it still pending at the gateway."""
    if not payment_intent:
        return []
    payment = session.exec(select(Payment).where(Payment.gateway_payment_id == payment_intent)).first()
    if payment is None:
        return []
    rows = session.exec(select(Refund).where(Refund.payment_id == payment.id, Refund.status == "pending")).all()
    return [r.gateway_refund_id for r in rows if r.gateway_refund_id]


async def handle(db_url: str, gateway: PaymentGateway, workflows: LazyWorkflows, event: StripeEvent, fee: Decimal) -> WebhookResult:
    refund_outcomes: list[RefundOutcome] = []
    dispute: DisputeOutcome | None = None
    try:
        if event.type in DISPUTE_EVENTS:
            if event.object_type == "dispute" and event.object_id:
                try:
                    dispute = await gateway.retrieve_dispute(event.object_id)
                except PaymentNotFound:
                    dispute = None
        else:
            ids = await run_tx(db_url, _refunds_to_reread, event.payment_intent) if event.type == CHARGE_REFUNDED else (
                [event.object_id] if event.object_type == "refund" and event.object_id else [])
            for refund_id in ids:
                try:
                    refund_outcomes.append(await gateway.retrieve_refund(refund_id))
                except PaymentNotFound:
                    pass
    except GatewayError as exc:
        raise Unavailable(f"cannot re-read {event.object_id} from Stripe: {exc}", code="stripe_unavailable") from exc
    applied = await run_tx(db_url, record, event, refund_outcomes, dispute, fee, utcnow())
    for notice in applied.notices:
        await deliver_payment_result(db_url, workflows, notice.message_id, notice.payload)
    return applied.result


def record(session: Session, event: StripeEvent, refund_outcomes: list[RefundOutcome], dispute: DisputeOutcome | None,
           fee: Decimal, now: datetime) -> _Applied:
    if session.get(StripeWebhookEvent, event.id) is not None:
        return _Applied(WebhookResult(event.id, "duplicate"))
    row = StripeWebhookEvent(id=event.id, type=event.type, object_id=event.object_id, result="unmatched", received_at=now)
    session.add(row)
    if dispute is not None:
        done = disputes.apply_dispute(session, dispute, fee, now)
        row.result = done.result
        refund = done.refund
        row.payment_id = refund.payment_id if refund else None
        return _Applied(WebhookResult(event.id, done.result, refund.payment_id if refund else None, refund.dispute_status if refund else None),
                        done.notices)
    result, last, notices = "unmatched", None, []
    for outcome in refund_outcomes:
        refund = session.exec(select(Refund).where(Refund.gateway_refund_id == outcome.gateway_refund_id)).first()
        if refund is None and outcome.refund_id:
            refund = session.get(Refund, outcome.refund_id)  # the refund call's answer was lost; Stripe's metadata names it
        if refund is None:
            continue
        refund, changed, notice = refunds.apply_refund_outcome(session, refund.id, outcome, now)
        last = refund
        result = "applied" if changed or result == "applied" else "unchanged"
        if notice is not None:
            notices.append(notice)
    row.result = result
    row.payment_id = last.payment_id if last else None
    return _Applied(WebhookResult(event.id, result, last.payment_id if last else None, last.status if last else None), tuple(notices))
