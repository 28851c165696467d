"""TMF676 refunds: money o2c gives back from a payment, and the ledger effects shared with chargebacks.

Accounting rule (docs/payments.md): money taken back from a payment (a refund, a chargeback) comes first
from the payment's unallocated rest (account credit), then from the invoices it settled, the one due last
first; each such invoice gets that amount back as open debt (settled -> partiallyPaid, or -> sent when
nothing of it stays paid). `Payment.allocated_cents` counts what is used up, by invoices or by refunds, so
the ledger never hands refunded money out again. A refund that fails, and a dispute o2c wins, put the money
back: it becomes the payment's unallocated rest again and is allocated oldest due first (activities.ledger).

Every reversal and restoration writes a `payment.result` outbox message (status reversed / restored), the
path gateway payment results take, so the account's workflow re-reads its balance and an overdue reopened
debt can start dunning.

A refund of a card or SEPA payment goes through the gateway (idempotency key from the refund's id); a
refund of a bank transfer is booked by hand (status succeeded at once). Ledger entries that are no money
received (a dunning write-off, a credit note's credit; domain.payments.NOT_RECEIVED_METHODS) are refused
(409 payment_not_refundable). A chargeback recorded by hand is for payments outside the gateway only (a
bank transfer, a SEPA return the bank reports): the gateway reports its own (409 chargeback_reported_by_gateway)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from activities.invoice_issuer import move_invoice
from activities.ledger import allocate_payments, open_invoices
from adapters.payments.port import GatewayError, GatewayRequestRejected, IdempotencyConflict, PaymentGateway, PaymentNotFound
from domain.allocation import OpenItem, reverse
from domain.money import from_minor
from domain.payments import RefundOutcome, RefundRequest, advance_refund_status, is_received_money
from persistence.tables import BillingAccount, BusinessEvent, Invoice, OutboxMessage, Payment, PaymentAllocation, Refund
from services.audit import Actor, record_audit, snapshot
from services.errors import Conflict, Invalid, NotFound, field_error
from services.hub_events import emit_bill_state_event, emit_refund_event
from services.query import Page, new_id, paginate, run_tx, utcnow
from services.stripe_webhooks import PAYMENT_RESULT_TOPIC, deliver_payment_result
from services.workflows import LazyWorkflows

log = logging.getLogger(__name__)

GATEWAY = "gateway"
MANUAL = "manual"
GATEWAY_METHODS = frozenset({"card", "sepa_debit"})
REFUND = "refund"
CHARGEBACK = "chargeback"
# The state a bill goes back to when nothing of it stays paid: it had been sent to the customer.
REOPENED_STATE = "sent"


@dataclass(frozen=True)
class RefundOrder:
    key: str  # Idempotency-Key header or correlatorId
    payment_id: str
    billing_account_id: str
    amount_cents: int
    currency: str
    reason: str
    recorded_by: str
    kind: str = REFUND  # refund | chargeback (a bank's return recorded by staff, e.g. a SEPA return)
    fee_cents: int = 0  # chargeback: the fee passed on to the next invoice
    actor: Actor | None = None
    request_id: str | None = None

    @property
    def request_hash(self) -> str:
        body = [self.kind, self.payment_id, self.billing_account_id, self.amount_cents, self.currency, self.reason, self.fee_cents]
        return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Notice:
    """An outbox message written in the transaction, to deliver to the account's workflow after it."""

    message_id: int
    payload: dict[str, Any]


# --- ledger effects (shared with services.disputes) -------------------------------------------------


def refundable_cents(session: Session, payment: Payment) -> int:
    """What is still on the payment: its amount minus what refunds and chargebacks currently hold."""
    held = session.exec(select(Refund).where(Refund.payment_id == payment.id, Refund.reversed == True)).all()  # noqa: E712
    return payment.amount_cents - sum(r.amount_cents for r in held)


def _reopen(session: Session, invoice: Invoice, amount_cents: int, at: datetime) -> None:
    paid = invoice.paid_cents - amount_cents
    before = invoice.state
    move_invoice(invoice, paid_cents=paid, state="partiallyPaid" if paid > 0 else REOPENED_STATE)
    session.add(invoice)
    session.flush()
    if invoice.state != before:
        emit_bill_state_event(session, invoice, at)


def take_back(session: Session, payment: Payment, amount_cents: int, at: datetime) -> dict[str, Any]:
    """Takes `amount_cents` off the payment (domain.allocation.reverse): its credit first, then the invoices
    it settled, latest due first, which reopen. Returns the reversal as stored on the refund."""
    allocations = list(session.exec(select(PaymentAllocation).where(PaymentAllocation.payment_id == payment.id)))
    invoices = {a.invoice_id: session.get(Invoice, a.invoice_id) for a in allocations}
    items = [OpenItem(invoice_id=a.invoice_id, due_at=invoices[a.invoice_id].due_at, open_cents=a.amount_cents) for a in allocations]
    reversal = reverse(amount_cents, payment.amount_cents - payment.allocated_cents, items)
    payment.allocated_cents += reversal.credit_cents  # the invoices' part stays used up: it moves to the refund
    session.add(payment)
    by_invoice = {a.invoice_id: a for a in allocations}
    for taken in reversal.invoices:
        allocation = by_invoice[taken.invoice_id]
        allocation.amount_cents -= taken.amount_cents
        if allocation.amount_cents == 0:
            session.delete(allocation)
        else:
            session.add(allocation)
        _reopen(session, invoices[taken.invoice_id], taken.amount_cents, at)
    return {"creditCents": reversal.credit_cents,
            "invoices": [{"invoiceId": a.invoice_id, "amountCents": a.amount_cents} for a in reversal.invoices]}


def put_back(session: Session, refund: Refund, at: datetime) -> None:
    """Undoes a reversal (a failed refund, a won dispute): the money is the payment's unallocated rest
    again, and the account's payments are allocated to open invoices, oldest due first."""
    if not refund.reversed:
        return
    payment = session.get(Payment, refund.payment_id)
    payment.allocated_cents -= refund.amount_cents
    session.add(payment)
    refund.reversed = False
    session.add(refund)
    session.flush()
    before = {i.id: i.state for i in open_invoices(session, payment.billing_account_id)}
    allocate_payments(session, payment.billing_account_id)
    for invoice_id, state in before.items():
        invoice = session.get(Invoice, invoice_id)
        if invoice.state != state:
            emit_bill_state_event(session, invoice, at)


def notify_account(session: Session, refund: Refund, what: str, at: datetime) -> Notice | None:
    """The `payment.result` message that tells the account's workflow its balance changed (what: reversed |
    restored); written once per refund and change."""
    payload = {"billingAccountId": refund.billing_account_id, "paymentId": refund.payment_id, "status": what,
               "amountCents": 0, "source": refund.kind, "refundId": refund.id}
    key = f"{PAYMENT_RESULT_TOPIC}:{refund.payment_id}:{what}:{refund.id}"
    if session.exec(select(OutboxMessage).where(OutboxMessage.key == key)).first() is not None:
        return None
    message = OutboxMessage(key=key, topic=PAYMENT_RESULT_TOPIC, payload=payload, created_at=at)
    session.add(message)
    session.flush()
    return Notice(message.id, payload)


def business_event(session: Session, refund: Refund, kind: str, message: str, at: datetime) -> None:
    account = session.get(BillingAccount, refund.billing_account_id)
    session.add(BusinessEvent(customer_id=account.customer_id if account else None, billing_account_id=refund.billing_account_id,
                              kind=kind, message=message,
                              data={"refundId": refund.id, "paymentId": refund.payment_id, "status": refund.status,
                                    "disputeId": refund.dispute_id, "reversal": refund.reversal},
                              at=at))


# --- refunds ---------------------------------------------------------------------------------------


def _check(session: Session, order: RefundOrder) -> Payment:
    payment = session.exec(select(Payment).where(Payment.id == order.payment_id).with_for_update()).first()
    if payment is None:
        raise Invalid([field_error("payment.id", "unknown_payment", f"no payment {order.payment_id!r}")])
    errors = []
    if payment.billing_account_id != order.billing_account_id:
        errors.append(field_error("account.id", "payment_account_mismatch", "the payment belongs to another billing account"))
    if payment.currency != order.currency:
        errors.append(field_error("totalAmount.unit", "currency_mismatch", f"the payment is in {payment.currency}"))
    if errors:
        raise Invalid(errors)
    if payment.status != "succeeded":
        raise Conflict(f"payment {payment.id} is {payment.status}: only a succeeded payment can be refunded", code="payment_not_refundable")
    if not is_received_money(payment.method):
        raise Conflict(f"payment {payment.id} is a {payment.method} ledger entry, no money received: nothing can be given back from it",
                       code="payment_not_refundable")
    if order.kind == CHARGEBACK and payment.gateway_payment_id is not None:
        # Stripe reports its disputes itself (services.disputes); recorded by hand too, it would be counted twice.
        raise Conflict(f"payment {payment.id} was taken through the gateway, which reports its chargebacks (disputes) itself; "
                       "record chargebacks by hand only for bank transfers and bank returns outside the gateway",
                       code="chargeback_reported_by_gateway")
    left = refundable_cents(session, payment)
    if order.amount_cents > left:
        raise Conflict(f"payment {payment.id} has {from_minor(left)} {payment.currency} left to refund, not {from_minor(order.amount_cents)}",
                       code="refund_exceeds_payment")
    return payment


def _known(session: Session, order: RefundOrder) -> Refund | None:
    known = session.exec(select(Refund).where(Refund.correlator_id == order.key)).first()
    if known is not None and known.request_hash != order.request_hash:
        raise Conflict(f"key {order.key!r} already made refund {known.id} for another request", code="idempotency_key_reused")
    return known


def record_refund(session: Session, order: RefundOrder, at: datetime | None = None) -> tuple[Refund, bool, Notice | None]:
    """(refund, created, notice). The same key with the same request returns the first refund; with another
    request it is refused (409 idempotency_key_reused). 422 unknown_payment / payment_account_mismatch /
    currency_mismatch; 409 payment_not_refundable, refund_exceeds_payment."""
    known = _known(session, order)
    if known is not None:
        return known, False, None
    payment = _check(session, order)
    # Looked up again under the payment's lock: a request with the same key that held the lock first has committed.
    known = _known(session, order)
    if known is not None:
        return known, False, None
    now = at or utcnow()
    by_gateway = order.kind == REFUND and payment.method in GATEWAY_METHODS and payment.gateway_payment_id is not None
    row = Refund(id=new_id(), correlator_id=order.key, request_hash=order.request_hash, kind=order.kind, payment_id=payment.id,
                 billing_account_id=payment.billing_account_id, amount_cents=order.amount_cents, currency=payment.currency,
                 method=GATEWAY if by_gateway else MANUAL, status="pending" if by_gateway else "succeeded", reason=order.reason,
                 recorded_by=order.recorded_by, created_at=now, updated_at=now)
    row.reversal = take_back(session, payment, order.amount_cents, now)
    row.reversed = True
    session.add(row)
    session.flush()
    if order.kind == CHARGEBACK and order.fee_cents > 0:
        from services.disputes import add_chargeback_fee

        add_chargeback_fee(session, row, from_minor(order.fee_cents), row.id, now)
    emit_refund_event(session, row, created=True, at=now)
    what = "Chargeback" if order.kind == CHARGEBACK else "Refund"
    business_event(session, row, f"{order.kind}.recorded",
                   f"{what} of {from_minor(row.amount_cents)} {row.currency} from payment {payment.id} recorded by {order.recorded_by}: {order.reason}",
                   now)
    if order.actor is not None:
        account = session.get(BillingAccount, row.billing_account_id)
        record_audit(session, order.actor, f"{order.kind}.create", "refund", row.id, order.reason, None, snapshot(row),
                     customer_id=account.customer_id if account else None, request_id=order.request_id)
    return row, True, notify_account(session, row, "reversed", now)


def apply_refund_outcome(session: Session, refund_id: str, outcome: RefundOutcome, at: datetime | None = None
                         ) -> tuple[Refund, bool, Notice | None]:
    """Moves a refund forward to what the gateway says (never backwards). A failed or canceled refund puts
    the money back on the payment. (refund, changed, notice)."""
    row = session.exec(select(Refund).where(Refund.id == refund_id).with_for_update()).first()
    if row is None:
        raise NotFound("refund", refund_id)
    now = at or utcnow()
    changed = False
    if row.gateway_refund_id is None and outcome.gateway_refund_id:
        row.gateway_refund_id = outcome.gateway_refund_id
        changed = True
    new_status = advance_refund_status(row.status, outcome.status)
    notice = None
    if new_status is not None:
        row.status = new_status
        row.failure_reason = outcome.failure_reason
        changed = True
        if new_status in ("failed", "canceled"):
            put_back(session, row, now)
            notice = notify_account(session, row, "restored", now)
            business_event(session, row, "refund.failed",
                           f"Refund {row.id} of {from_minor(row.amount_cents)} {row.currency} {new_status}"
                           + (f" ({outcome.failure_reason})" if outcome.failure_reason else "") + ": the money is back on the payment", now)
    if changed:
        row.updated_at = now
        session.add(row)
        session.flush()
        if new_status is not None:
            emit_refund_event(session, row, created=False, at=now)
    return row, changed, notice


def _refund_request(session: Session, refund_id: str, remake: bool = False) -> RefundRequest | str | None:
    """What to ask the gateway about a refund: the request to send (not sent, or its answer lost, or `remake`),
    the gateway refund id to re-read (sent, still pending), or None (nothing: manual or final)."""
    row = session.get(Refund, refund_id)
    if row is None or row.method != GATEWAY or row.status != "pending":
        return None
    if row.gateway_refund_id is not None and not remake:
        return row.gateway_refund_id
    payment = session.get(Payment, row.payment_id)
    return RefundRequest(refund_id=row.id, gateway_payment_id=payment.gateway_payment_id, amount_minor=row.amount_cents,
                         currency=row.currency, payment_method_kind=payment.method if payment.method in GATEWAY_METHODS else None,
                         reason=row.reason or "")


@dataclass(frozen=True)
class FollowUp:
    """What asking the gateway about one refund did: the refund as it is now (None: there was nothing to ask,
    it is manual, final or unknown), whether the gateway answered, and the account's notice to deliver."""

    refund: Refund | None
    answered: bool = False
    notice: Notice | None = None


async def _send_again(gateway: PaymentGateway, request: RefundRequest) -> RefundOutcome:
    """A refund sent before whose answer was lost (a repeated POST, the hourly poll): looked for at the gateway
    first, by the o2c refund id in its metadata, and sent again only when the gateway holds none. Past the
    gateway's idempotency window (24 h at Stripe) the same key alone would make a second refund, or be refused
    because the first one used up the payment."""
    found = await gateway.find_refund(request.gateway_payment_id, request.refund_id)
    return found if found is not None else await gateway.refund(request)


async def follow_up(db_url: str, gateway: PaymentGateway, refund_id: str, *, remake_unknown: bool = False,
                    first_send: bool = False) -> FollowUp:
    """Asks the gateway where a pending gateway refund stands and applies the answer (apply_refund_outcome, the
    webhook's forward-only rule). Not sent yet (or its answer lost): looked for at the gateway, sent when it is
    not there (`_send_again`; `first_send`: the request that recorded the refund sends it straight away). Only a
    first send maps a refusal to `failed`: a refusal of a re-send may be the gateway refusing a refund it made
    already, so the refund stays pending then. Sent: re-reads it. `remake_unknown` is for the sandbox only,
    whose refunds live in the memory of the process that made them: a refund it does not know is made again
    under the same key (same id), then read. An unreachable gateway leaves the refund pending (answered False)."""
    request = await run_tx(db_url, _refund_request, refund_id)
    if request is None:
        return FollowUp(None)
    outcome: RefundOutcome | None = None
    try:
        if isinstance(request, str):
            try:
                outcome = await gateway.retrieve_refund(request)  # asked again: report where it stands now
            except PaymentNotFound:
                if not remake_unknown:
                    raise
                remade = await run_tx(db_url, _refund_request, refund_id, True)
                if isinstance(remade, RefundRequest):  # else it moved on meanwhile (a webhook): just read it
                    await _send_again(gateway, remade)
                outcome = await gateway.retrieve_refund(request)
        else:
            outcome = await gateway.refund(request) if first_send else await _send_again(gateway, request)
    except (GatewayRequestRejected, IdempotencyConflict) as exc:
        if isinstance(request, str):
            log.warning("refund %s: re-reading %s failed (%s); it stays pending", refund_id, request, exc)
        elif not first_send:
            log.warning("refund %s: the gateway refused it when sent again (%s); it stays pending for finance to check", refund_id, exc)
        else:
            outcome = RefundOutcome(status="failed", gateway_refund_id="", amount_minor=request.amount_minor, currency=request.currency,
                                    failure_reason=f"refused by the gateway: {exc}"[:500])
    except GatewayError as exc:
        log.warning("refund %s: the gateway could not be asked (%s): it stays pending", refund_id, exc)
    if outcome is None:
        return FollowUp(await run_tx(db_url, get_refund, refund_id))
    row, _changed, notice = await run_tx(db_url, apply_refund_outcome, refund_id, outcome)
    return FollowUp(row, True, notice)


async def submit_refund(db_url: str, gateway: PaymentGateway, workflows: LazyWorkflows, order: RefundOrder) -> tuple[Refund, bool]:
    """Records the refund (its ledger effect at once), sends a gateway refund to the gateway, records what
    the gateway answered, and tells the account's workflow. A gateway that cannot be reached leaves the
    refund pending; the same request again (same key) looks for it at the gateway and sends it again only when
    the gateway has none, and for a refund the gateway holds as pending it re-reads where it stands (so does the
    hourly poll, activities.refund_poll)."""
    row, created, notice = await run_tx(db_url, record_refund, order)
    followed = await follow_up(db_url, gateway, row.id, first_send=created)
    for n in (notice, followed.notice):
        if n is not None:
            await deliver_payment_result(db_url, workflows, n.message_id, n.payload)
    return followed.refund or row, created


def pending_refunds_to_poll(session: Session, pending_since: datetime, billing_account_ids: list[str] | None = None,
                            limit: int = 1000) -> list[str]:
    """Gateway refunds pending since before `pending_since`, oldest first: those the hourly poll re-reads."""
    statement = (select(Refund.id).where(Refund.method == GATEWAY, Refund.status == "pending", Refund.created_at < pending_since)
                 .order_by(col(Refund.created_at), Refund.id).limit(limit))
    if billing_account_ids is not None:
        statement = statement.where(col(Refund.billing_account_id).in_(billing_account_ids))
    return list(session.exec(statement))


def money_back_of(session: Session, payment_ids: list[str]) -> dict[str, list[Refund]]:
    """The refunds and chargebacks of each payment, oldest first (payments without any are left out)."""
    found: dict[str, list[Refund]] = {}
    if not payment_ids:
        return found
    statement = select(Refund).where(col(Refund.payment_id).in_(payment_ids)).order_by(col(Refund.created_at), Refund.id)
    for row in session.exec(statement):
        found.setdefault(row.payment_id, []).append(row)
    return found


def get_refund(session: Session, refund_id: str) -> Refund:
    row = session.get(Refund, refund_id)
    if row is None:
        raise NotFound("refund", refund_id)
    return row


def list_refunds(session: Session, *, billing_account_id: str | None, payment_id: str | None, limit: int, offset: int) -> Page[Refund]:
    statement = select(Refund).order_by(col(Refund.created_at).desc(), Refund.id)
    if billing_account_id is not None:
        statement = statement.where(Refund.billing_account_id == billing_account_id)
    if payment_id is not None:
        statement = statement.where(Refund.payment_id == payment_id)
    return paginate(session, statement, limit, offset)
