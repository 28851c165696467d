"""RefundPollWorkflow: the hourly fallback for pending gateway refunds, started by a Temporal Schedule
(adapters.temporal.schedules.ensure_refund_poll_schedule) or once by `o2c poll-refunds`.

It re-reads every gateway refund pending longer than `pending_for_s` (webhooks had their chance) and applies
what the gateway says with the webhook's forward-only rule; a failed refund puts the money back on the
payment. It reports how many it re-read and what became of them."""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.refund_poll import POLL_RESULTS, RefundPollActivities, RefundPollReport

REFUND_POLL_WORKFLOW = "RefundPollWorkflow"
REFUND_POLL_SCHEDULE_ID = "hourly-refund-poll"

_DB_CALL = {"start_to_close_timeout": timedelta(minutes=5), "retry_policy": RetryPolicy(maximum_attempts=5)}
# One gateway question: an unreachable gateway is an answer ("unanswered"), so retries are for the database.
_GATEWAY_CALL = {"start_to_close_timeout": timedelta(minutes=2), "retry_policy": RetryPolicy(maximum_attempts=3)}


class RefundPollInput(BaseModel):
    as_of: datetime | None = None  # default: the workflow's start time
    pending_for_s: float = 30 * 60  # re-read refunds pending longer than this (webhooks usually come in seconds)
    billing_account_ids: list[str] | None = None  # default: every account


@workflow.defn(name=REFUND_POLL_WORKFLOW)
class RefundPollWorkflow:
    @workflow.run
    async def run(self, params: RefundPollInput) -> RefundPollReport:
        as_of = params.as_of or workflow.now()
        pending = await workflow.execute_activity_method(
            RefundPollActivities.find_pending_refunds, args=[as_of, params.pending_for_s, params.billing_account_ids], **_DB_CALL)
        counts = dict.fromkeys(POLL_RESULTS, 0)
        errors: list[str] = []
        for refund_id in pending:
            try:
                result = await workflow.execute_activity_method(RefundPollActivities.poll_refund, refund_id, **_GATEWAY_CALL)
            except ActivityError as error:
                errors.append(f"{refund_id}: {error.cause or error}")
                continue
            counts[result] = counts.get(result, 0) + 1
        report = RefundPollReport(as_of=as_of, checked=len(pending), succeeded=counts["succeeded"],
                                  returned=counts["failed"] + counts["canceled"], still_pending=counts["pending"],
                                  unanswered=counts["unanswered"], errors=errors)
        await workflow.execute_activity_method(RefundPollActivities.record_refund_poll_report, report, **_DB_CALL)
        return report
