"""TMF676 manual payments (bank transfers booked by finance staff).

`correlatorId` is the idempotency key: the same id with the same content is the same payment, the
same id with other content is refused. A stored payment is never dropped: if the account's billing
workflow does not run yet, or Temporal is down, the payment stays recorded and the workflow
allocates it when it next looks at the account's payments."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, col, select
from temporalio.service import RPCError

from domain.money import from_minor
from domain.payments import advance_payment_status

from persistence.tables import BillingAccount, BusinessEvent, Invoice, Payment
from services.hub_events import PAYMENT_CREATE, PAYMENT_STATE_CHANGE, emit_event
from services.errors import Conflict, Invalid, NotFound, Unavailable, field_error
from services.query import Page, new_id, paginate, run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import PaymentReceived

log = logging.getLogger(__name__)

BANK_TRANSFER = "bank_transfer"


@dataclass(frozen=True)
class ManualPayment:
    correlator_id: str
    billing_account_id: str
    amount_cents: int
    currency: str
    description: str | None
    invoice_id: str | None
    recorded_by: str


def emit_payment_event(session: Session, row: Payment, *, created: bool, at) -> str:
    """TMF676 PaymentCreateEvent (a new payment) or PaymentStateChangeEvent (its status moved), in the
    caller's transaction, after the change."""
    from api import tmf

    return emit_event(session, event_type=PAYMENT_CREATE if created else PAYMENT_STATE_CHANGE, resource_type="payment", resource_id=row.id,
                      resource=tmf.payment(row), at=at)


def advance_payment(session: Session, row: Payment, observed: str, *, at, decline_code: str | None = None) -> bool:
    """Moves a stored payment forward to `observed` (never backwards: domain.payments.advance_payment_status),
    emitting PaymentStateChangeEvent. False when the observation is stale or changes nothing."""
    new_status = advance_payment_status(row.status, observed)
    if new_status is None:
        return False
    row.status = new_status
    if decline_code is not None or new_status == "succeeded":
        row.decline_code = decline_code
    session.add(row)
    session.flush()
    emit_payment_event(session, row, created=False, at=at)
    return True


def _same(row: Payment, request: ManualPayment) -> bool:
    return (row.billing_account_id, row.amount_cents, row.currency, row.method, row.description, row.invoice_id) == (
        request.billing_account_id,
        request.amount_cents,
        request.currency,
        BANK_TRANSFER,
        request.description,
        request.invoice_id,
    )


def record_manual_payment(session: Session, request: ManualPayment) -> tuple[Payment, bool]:
    existing = session.exec(select(Payment).where(Payment.correlator_id == request.correlator_id)).first()
    if existing is not None:
        if not _same(existing, request):
            raise Conflict(
                f"correlatorId {request.correlator_id!r} already identifies payment {existing.id} with different content",
                code="correlator_id_reused",
            )
        return existing, False
    errors = []
    account = session.get(BillingAccount, request.billing_account_id)
    if account is None:
        errors.append(field_error("account.id", "unknown_billing_account", f"no billing account {request.billing_account_id!r}"))
    if request.invoice_id is not None:
        invoice = session.get(Invoice, request.invoice_id)
        if invoice is None:
            errors.append(field_error("paymentItem[0].item.id", "unknown_bill", f"no customerBill {request.invoice_id!r}"))
        elif invoice.billing_account_id != request.billing_account_id:
            errors.append(field_error("paymentItem[0].item.id", "bill_account_mismatch", "the bill belongs to another billing account"))
    if errors:
        raise Invalid(errors)
    assert account is not None
    now = utcnow()
    row = Payment(
        id=new_id(),
        correlator_id=request.correlator_id,
        billing_account_id=request.billing_account_id,
        invoice_id=request.invoice_id,
        amount_cents=request.amount_cents,
        currency=request.currency,
        method=BANK_TRANSFER,
        status="succeeded",
        description=request.description,
        recorded_by=request.recorded_by,
        created_at=now,
    )
    session.add(row)
    session.flush()
    emit_payment_event(session, row, created=True, at=now)
    session.add(
        BusinessEvent(
            customer_id=account.customer_id,
            billing_account_id=account.id,
            kind="payment_recorded",
            message=f"Bank transfer of {from_minor(request.amount_cents)} {request.currency} recorded by {request.recorded_by}",
            data={"paymentId": row.id, "correlatorId": request.correlator_id},
            at=now,
        )
    )
    return row, True


async def submit_manual_payment(db_url: str, workflows: LazyWorkflows, request: ManualPayment) -> tuple[Payment, bool]:
    payment, created = await run_tx(db_url, record_manual_payment, request)
    if created:
        signal = PaymentReceived(payment_id=payment.id, amount_cents=payment.amount_cents, source=BANK_TRANSFER)
        try:
            await workflows.call(lambda gateway: gateway.payment_received(payment.billing_account_id, signal))
        except Unavailable as exc:
            log.warning("payment %s stored; the account workflow was not told (%s); it is allocated later", payment.id, exc.message)
        except RPCError as exc:
            # The payment is booked either way; answering an error would only make the client retry.
            if is_not_found(exc):
                log.info("payment %s stored; billing account %s has no running workflow yet", payment.id, payment.billing_account_id)
            else:
                log.warning("payment %s stored; signalling its account workflow failed: %s", payment.id, exc)
    return payment, created


def get_payment(session: Session, payment_id: str) -> Payment:
    row = session.get(Payment, payment_id)
    if row is None:
        raise NotFound("payment", payment_id)
    return row


def list_payments(session: Session, *, billing_account_id: str | None, limit: int, offset: int) -> Page[Payment]:
    statement = select(Payment).order_by(col(Payment.created_at).desc(), Payment.id)
    if billing_account_id is not None:
        statement = statement.where(Payment.billing_account_id == billing_account_id)
    return paginate(session, statement, limit, offset)
