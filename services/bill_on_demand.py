"""TMF678 customerBillOnDemand: an off-cycle bill for a billing account (e.g. at termination).

The request is stored `inProgress` and handed to the account's workflow, which issues the invoice for
everything not yet billed up to then (serialised with its cycle closes, so nothing is billed twice),
e-mails and collects it, and sets the request `done` with its customerBill (or `rejected` when there
was nothing to bill). The Idempotency-Key header makes a POST repeatable: the same key and body return
the same request (and hand it to the workflow again if that failed before), another body is a 409."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlmodel import Session, col, select
from temporalio.service import RPCError

from persistence.tables import BillingAccount, BillOnDemand, BusinessEvent
from services.errors import Conflict, Invalid, NotFound, Unavailable, field_error
from services.query import Page, new_id, paginate, run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import SIGNAL_BILL_ON_DEMAND, BillOnDemandRequested, billing_account_workflow_id

IN_PROGRESS, DONE, REJECTED, FAILED = "inProgress", "done", "rejected", "terminatedWithError"


@dataclass(frozen=True)
class OnDemandOrder:
    billing_account_id: str
    name: str | None
    description: str | None
    idempotency_key: str | None
    requested_by: str

    @property
    def request_hash(self) -> str:
        body = {"account": self.billing_account_id, "name": self.name, "description": self.description}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def record_request(session: Session, order: OnDemandOrder) -> tuple[BillOnDemand, bool, bool]:
    """(request, created, to_signal): a new request, or a repeat whose earlier hand-over failed, is to be signalled."""
    if order.idempotency_key is not None:
        known = session.exec(select(BillOnDemand).where(BillOnDemand.idempotency_key == order.idempotency_key)).first()
        if known is not None:
            if known.request_hash != order.request_hash:
                raise Conflict(f"Idempotency-Key {order.idempotency_key!r} already names customerBillOnDemand {known.id} with another body",
                               code="idempotency_key_reused")
            if known.state == FAILED:
                known.state, known.state_reason, known.updated_at = IN_PROGRESS, None, utcnow()
                session.add(known)
                return known, False, True
            return known, False, False
    account = session.get(BillingAccount, order.billing_account_id)
    if account is None:
        raise Invalid([field_error("billingAccount.id", "unknown_billing_account", f"no billing account {order.billing_account_id!r}")])
    now = utcnow()
    row = BillOnDemand(id=new_id(), billing_account_id=account.id, name=order.name, description=order.description, state=IN_PROGRESS,
                       idempotency_key=order.idempotency_key, request_hash=order.request_hash, requested_by=order.requested_by,
                       created_at=now, updated_at=now)
    session.add(row)
    session.add(BusinessEvent(customer_id=account.customer_id, billing_account_id=account.id, kind="invoice.on_demand_requested",
                              message=f"Off-cycle bill requested by {order.requested_by}" + (f": {order.name}" if order.name else ""),
                              data={"customerBillOnDemandId": row.id}, at=now))
    return row, True, True


def _end(session: Session, request_id: str, state: str, reason: str) -> BillOnDemand:
    row = session.get(BillOnDemand, request_id)
    if row.state == IN_PROGRESS:
        row.state, row.state_reason, row.updated_at = state, reason, utcnow()
        session.add(row)
    return row


async def submit_bill_on_demand(db_url: str, workflows: LazyWorkflows, order: OnDemandOrder) -> tuple[BillOnDemand, bool]:
    """(request, created). Temporal unreachable: the request ends terminatedWithError and Unavailable is
    raised (503); repeating it with the same Idempotency-Key tries again."""
    row, created, to_signal = await run_tx(db_url, record_request, order)
    if not to_signal:
        return row, False
    handle_of = billing_account_workflow_id(row.billing_account_id)
    try:
        await workflows.call(lambda g: g.client.get_workflow_handle(handle_of).signal(SIGNAL_BILL_ON_DEMAND, BillOnDemandRequested(request_id=row.id)))
    except Unavailable:
        await run_tx(db_url, _end, row.id, FAILED, "temporal_unavailable: the request could not be handed to billing; repeat it with the same Idempotency-Key")
        raise
    except RPCError as exc:
        if not is_not_found(exc):
            raise
        # No billing workflow: no product of this account was ever activated, so nothing can be billed.
        row = await run_tx(db_url, _end, row.id, REJECTED, "nothing_to_bill: the billing account has no active billing (no product was ever activated)")
    return row, created


def get_request(session: Session, request_id: str) -> tuple[BillOnDemand, str | None]:
    row = session.get(BillOnDemand, request_id)
    if row is None:
        raise NotFound("customerBillOnDemand", request_id)
    account = session.get(BillingAccount, row.billing_account_id)
    return row, account.customer_id if account else None


def list_requests(session: Session, *, billing_account_id: str | None, limit: int, offset: int) -> Page[BillOnDemand]:
    statement = select(BillOnDemand).order_by(col(BillOnDemand.created_at).desc(), BillOnDemand.id)
    if billing_account_id is not None:
        statement = statement.where(BillOnDemand.billing_account_id == billing_account_id)
    return paginate(session, statement, limit, offset)
