"""The workflow the killed-worker test runs in the real worker process: the billing workflow's payment steps
(charge_invoice, attempt 1, then apply_payments), the real activities, with a short activity timeout so the
test does not wait out the production 60 s before Temporal retries an activity whose worker died."""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.messages import BalanceView, ChargeOutcome

PROBE_WORKFLOW = "ChargeProbeWorkflow"
ACTIVITY_TIMEOUT = timedelta(seconds=4)


@workflow.defn(name=PROBE_WORKFLOW)
class ChargeProbeWorkflow:
    @workflow.run
    async def run(self, invoice_id: str, billing_account_id: str) -> dict:
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=1))
        outcome = await workflow.execute_activity("charge_invoice", args=[invoice_id, 1], start_to_close_timeout=ACTIVITY_TIMEOUT,
                                                  retry_policy=retry, result_type=ChargeOutcome)
        balance = await workflow.execute_activity("apply_payments", billing_account_id, start_to_close_timeout=ACTIVITY_TIMEOUT,
                                                  retry_policy=retry, result_type=BalanceView)
        return {"status": outcome.status, "paymentId": outcome.payment_id, "balance": balance.model_dump(mode="json")}
