"""Chargebacks: a payer's bank takes a payment back (a card dispute reported by Stripe, or a SEPA return
a bank reports and finance records through POST /refund with "@type": "Chargeback").

TMF676 has no dispute resource; o2c records a chargeback as a TMF676 `refund` of @type Chargeback: money
that went back to the payer, against the payment it came from. The payment itself stays `succeeded` (it
was received); what it still covers is its amount minus what refunds and chargebacks hold.

A chargeback reverses the payment's allocation like a refund (services.refunds.take_back: the debt it
paid reopens) and adds the chargeback fee (settings.chargeback_fee, net, no VAT: it is damages passed on,
not a supply, EN 16931 category O) as a pending one-time charge, keyed by the dispute, so it is added once.
Being outside the scope of VAT it never joins a cycle invoice (BR-O-11): right after the account's next cycle
invoice it is billed on a fee-only document of its own (activities.dunning_fee_invoice.issue_pending_fee_invoice,
BT-120 "Nicht steuerbarer Schadensersatz ...", sent with that cycle invoice). A dispute closed `won` restores the payment (the money is allocated again); `lost` keeps it
reversed. The fee stays either way (Stripe keeps its dispute fee). Statuses only move forward
(domain.payments.advance_dispute_status), so duplicate and out-of-order webhooks change nothing twice;
a `closed` that arrives before `created` records the chargeback and, when won, restores it at once.

An early fraud inquiry (Stripe statuses `warning_needs_response`, `warning_under_review`) is no chargeback: no
money has left. It is recorded (status `inquiry`, not reversed, no fee) so finance sees it; `warning_closed`
closes it (status `inquiryClosed`) with no effect. When the issuer escalates it, the same dispute moves on to
`needs_response` (or later): then, and only then, the money is taken back and the fee added. A chargeback
opened as a new dispute after a closed inquiry is recorded as any other dispute."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, select

from domain.money import from_minor, to_minor
from domain.payments import DisputeOutcome, advance_dispute_status, is_inquiry
from persistence.tables import Payment, Refund
from services.hub_events import emit_refund_event
from services.pending_charges import CHARGEBACK_FEE, add_pending_charge
from services.query import new_id
from services.refunds import CHARGEBACK, GATEWAY, Notice, business_event, notify_account, put_back, refundable_cents, take_back

FEE_KIND = CHARGEBACK_FEE
# An early fraud inquiry (Stripe `warning_*`): recorded and shown, nothing taken back, no fee.
INQUIRY = "inquiry"
INQUIRY_CLOSED = "inquiryClosed"


def fee_key(reference: str) -> str:
    return f"chargeback-fee:{reference}"


def add_chargeback_fee(session: Session, refund: Refund, fee: Decimal, reference: str, at: datetime) -> None:
    """The fee as a pending one-time charge (category O: billed on a fee-only document), once per dispute (or bank return)."""
    if fee <= 0:
        return
    add_pending_charge(session, key=fee_key(reference), billing_account_id=refund.billing_account_id, amount=fee,
                       description=f"Chargeback fee (payment {refund.payment_id})", kind=FEE_KIND, vat_category="O", source=refund.id, at=at)
    refund.fee_cents = to_minor(fee)
    session.add(refund)


@dataclass(frozen=True)
class DisputeResult:
    result: str  # applied | unchanged | unmatched
    refund: Refund | None
    notices: tuple[Notice, ...] = ()


def apply_dispute(session: Session, outcome: DisputeOutcome, fee: Decimal, at: datetime, *, recorded_by: str = "stripe-webhook") -> DisputeResult:
    """Records what the gateway says about a dispute, in the caller's transaction."""
    payment = session.exec(select(Payment).where(Payment.gateway_payment_id == outcome.gateway_payment_id).with_for_update()).first() \
        if outcome.gateway_payment_id else None
    if payment is None:
        return DisputeResult("unmatched", None)
    row = session.exec(select(Refund).where(Refund.dispute_id == outcome.gateway_dispute_id).with_for_update()).first()
    notices: list[Notice | None] = []
    if row is None:
        inquiry = is_inquiry(outcome.status)
        row = Refund(id=new_id(), correlator_id=f"dispute:{outcome.gateway_dispute_id}", kind=CHARGEBACK, payment_id=payment.id,
                     billing_account_id=payment.billing_account_id, amount_cents=outcome.amount_minor if inquiry else 0,
                     currency=payment.currency, method=GATEWAY,
                     status=(INQUIRY_CLOSED if outcome.status == "warning_closed" else INQUIRY) if inquiry else "succeeded",
                     reason=outcome.reason, dispute_id=outcome.gateway_dispute_id, dispute_status=outcome.status,
                     recorded_by=recorded_by, created_at=at, updated_at=at)
        session.add(row)
        session.flush()
        if inquiry:
            business_event(session, row, "chargeback.inquiry",
                           f"Early fraud inquiry ({outcome.status}) on payment {payment.id} (dispute {outcome.gateway_dispute_id}, "
                           f"{outcome.reason or 'no reason given'}): nothing is taken back unless it becomes a dispute", at)
        else:
            notices.append(_charge_back(session, row, payment, outcome, fee, at))
        emit_refund_event(session, row, created=True, at=at)
        if outcome.status == "won":
            notices.append(_restore(session, row, at))
        return DisputeResult("applied", row, tuple(n for n in notices if n is not None))
    new_status = advance_dispute_status(row.dispute_status, outcome.status)
    if new_status is None:
        return DisputeResult("unchanged", row)
    escalated = is_inquiry(row.dispute_status) and not is_inquiry(new_status)
    row.dispute_status = new_status
    row.updated_at = at
    session.add(row)
    if escalated:  # the inquiry became a chargeback (the same dispute object): now the money goes back
        notices.append(_charge_back(session, row, payment, outcome, fee, at))
    if new_status == "warning_closed":
        row.status = INQUIRY_CLOSED
        business_event(session, row, "chargeback.inquiry_closed",
                       f"Inquiry {row.dispute_id} on payment {row.payment_id} closed without a dispute: nothing changes", at)
    elif new_status == "won":
        notices.append(_restore(session, row, at))
    elif new_status == "lost":
        business_event(session, row, "chargeback.lost", f"Dispute {row.dispute_id} lost: payment {row.payment_id} stays reversed", at)
    session.flush()
    emit_refund_event(session, row, created=False, at=at)
    return DisputeResult("applied", row, tuple(n for n in notices if n is not None))


def _charge_back(session: Session, row: Refund, payment: Payment, outcome: DisputeOutcome, fee: Decimal, at: datetime) -> Notice | None:
    """The chargeback's effect (a dispute opened, or an inquiry escalated): the money taken back from the payment
    (never more than it still holds), the fee for the next invoice, and the account's notice."""
    amount = min(outcome.amount_minor, refundable_cents(session, payment))
    row.amount_cents, row.status = amount, "succeeded"
    if amount > 0:
        row.reversal = take_back(session, payment, amount, at)
        row.reversed = True
    session.add(row)
    session.flush()
    add_chargeback_fee(session, row, fee, outcome.gateway_dispute_id, at)
    business_event(session, row, "chargeback.recorded",
                   f"Chargeback of {from_minor(amount)} {row.currency} on payment {payment.id} (dispute {outcome.gateway_dispute_id}, "
                   f"{outcome.reason or 'no reason given'}); fee {fee} {row.currency} billed on a fee invoice with the next cycle invoice", at)
    return notify_account(session, row, "reversed", at) if row.reversed else None


def _restore(session: Session, row: Refund, at: datetime) -> Notice | None:
    if not row.reversed:
        return None
    put_back(session, row, at)
    business_event(session, row, "chargeback.won", f"Dispute {row.dispute_id} won: payment {row.payment_id} is allocated again", at)
    return notify_account(session, row, "restored", at)
