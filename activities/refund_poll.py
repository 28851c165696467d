"""The hourly refund poll's activities: find the gateway refunds pending for a while, ask the gateway where
each stands, and write the run's report.

Webhooks move a pending refund (a SEPA refund stays pending for days); this is the fallback when one is lost,
and the only way for the sandbox, which sends none. The answer is applied by services.refunds.follow_up with
the webhook's own forward-only rule (services.refunds.apply_refund_outcome), so a poll and a webhook that
report the same thing, in any order, end in the same state."""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlmodel import Session
from temporalio import activity

from adapters.payments.port import PaymentGateway
from adapters.payments.sandbox import SandboxGateway
from adapters.temporal.client import WorkflowGateway
from persistence.db import session_scope
from persistence.tables import BusinessEvent
from services import refunds
from services.query import run_tx
from services.stripe_webhooks import deliver_payment_result
from services.workflows import LazyWorkflows

# What one poll of a refund found: the gateway says it succeeded, failed or was canceled (the money is back
# on the payment), it is still pending, the gateway did not answer, or there was nothing to ask (it moved on).
POLL_RESULTS = ("succeeded", "failed", "canceled", "pending", "unanswered", "skipped")


class RefundPollReport(BaseModel):
    as_of: datetime
    checked: int
    succeeded: int = 0
    returned: int = 0  # failed or canceled: the money is back on the payment
    still_pending: int = 0
    unanswered: int = 0  # the gateway could not be asked; the next run asks again
    errors: list[str] = []  # "<refund id>: <error>"


class RefundPollActivities:
    def __init__(self, db_url: str, gateway: PaymentGateway, *, limit: int = 1000) -> None:
        self.db_url = db_url
        self.gateway = gateway
        self.limit = limit
        # The sandbox keeps refunds in the memory of the process that made them (the API's, not the worker's).
        self.remake_unknown = isinstance(gateway, SandboxGateway)

    @activity.defn(name="find_pending_refunds")
    def find_pending_refunds(self, as_of: datetime, pending_for_s: float, billing_account_ids: list[str] | None = None) -> list[str]:
        """Gateway refunds created more than `pending_for_s` before `as_of` and still pending, oldest first."""
        with session_scope(self.db_url) as session:
            return refunds.pending_refunds_to_poll(session, as_of - timedelta(seconds=pending_for_s), billing_account_ids, self.limit)

    @activity.defn(name="poll_refund")
    async def poll_refund(self, refund_id: str) -> str:
        """Asks the gateway about one refund and applies its answer; tells the account's workflow when money came
        back (the outbox relay does, when Temporal cannot be reached). One of POLL_RESULTS."""
        followed = await refunds.follow_up(self.db_url, self.gateway, refund_id, remake_unknown=self.remake_unknown)
        if followed.notice is not None:
            workflows = LazyWorkflows(gateway=WorkflowGateway(activity.client(), activity.info().task_queue))
            await deliver_payment_result(self.db_url, workflows, followed.notice.message_id, followed.notice.payload)
        if followed.refund is None:
            return "skipped"
        if not followed.answered:
            return "unanswered"
        return followed.refund.status

    @activity.defn(name="record_refund_poll_report")
    async def record_refund_poll_report(self, report: RefundPollReport) -> None:
        """A business event for a run that found something (an hourly "nothing pending" would only be noise)."""
        if report.checked == 0:
            return
        await run_tx(self.db_url, _record_report, report)


def _record_report(session: Session, report: RefundPollReport) -> None:
    session.add(BusinessEvent(kind="refund_poll.checked", at=report.as_of, data=report.model_dump(mode="json"),
                              message=(f"Refund poll: {report.checked} pending gateway refunds re-read, {report.succeeded} succeeded, "
                                       f"{report.returned} failed (money back on the payment), {report.still_pending} still pending, "
                                       f"{report.unanswered} unanswered, {len(report.errors)} errors")))
