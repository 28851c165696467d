"""BillRunCheckWorkflow: the nightly safety net of the bill run, started by a Temporal Schedule.

It finds every account whose closed cycle has no invoice, issues and sends the missing invoices
through the same activities the account's workflow uses (idempotent per account and period), and
reports how many it found and fixed."""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.bill_run import BillRunActivities, BillRunReport, MissingInvoice
    from activities.billing import BillingActivities

BILL_RUN_CHECK_WORKFLOW = "BillRunCheckWorkflow"
BILL_RUN_SCHEDULE_ID = "nightly-bill-run-check"

_DB_CALL = {"start_to_close_timeout": timedelta(minutes=5), "retry_policy": RetryPolicy(maximum_attempts=5)}


class BillRunCheckInput(BaseModel):
    as_of: datetime | None = None  # default: the workflow's start time
    account_ids: list[str] | None = None  # default: every account


@workflow.defn(name=BILL_RUN_CHECK_WORKFLOW)
class BillRunCheckWorkflow:
    @workflow.run
    async def run(self, params: BillRunCheckInput) -> BillRunReport:
        as_of = params.as_of or workflow.now()
        checked, missing = await workflow.execute_activity_method(
            BillRunActivities.find_missing_cycle_invoices, args=[as_of, params.account_ids], **_DB_CALL)
        repaired: list[MissingInvoice] = []
        nothing_to_bill = 0
        failed: list[str] = []
        for item in missing:
            label = f"{item.billing_account_id} {item.period.start.isoformat()}"
            try:
                issued = await workflow.execute_activity_method(
                    BillingActivities.issue_cycle_invoice, args=[item.billing_account_id, item.cycle, item.period, item.payment_terms_s], **_DB_CALL)
                if issued is None:
                    # Nothing to charge (no fee, no usage): no invoice is the right outcome, not a defect.
                    nothing_to_bill += 1
                    continue
                if issued.number is not None:  # an onHold draft is sent once staff approve it
                    await workflow.execute_activity_method(BillingActivities.send_invoice, issued.invoice_id, **_DB_CALL)
            except ActivityError as error:
                failed.append(f"{label}: {error.cause or error}")
                continue
            repaired.append(item)
        report = BillRunReport(as_of=as_of, accounts_checked=checked, found=len(missing), repaired=len(repaired),
                               nothing_to_bill=nothing_to_bill, failed=failed)
        await workflow.execute_activity_method(BillRunActivities.record_bill_run_report, args=[report, repaired], **_DB_CALL)
        return report
