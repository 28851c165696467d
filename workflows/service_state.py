"""Service state workflows.

ServiceStateWorkflow (id `service-state-<product>`): one staff suspend or restore of a product. The OSS
call and the record of it run in one activity retried for as long as the OSS is away, so a request the API
accepted is carried out even across worker restarts; an OSS refusal ends it (recorded for staff).

OssReconciliationWorkflow: the nightly comparison of o2c's view (each live product's expected barring)
with the OSS's service inventory. It reports every difference and repairs it by re-issuing the barring
o2c's view says, keyed by the run, so a retried repair is one OSS order."""
from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.service_state import (
        RECONCILE_BATCH,
        RECONCILE_PAGE,
        LineDrift,
        OssReconciliationReport,
        ServiceStateActivities,
        ServiceStateRequest,
        ServiceStateResult,
    )

SERVICE_STATE_WORKFLOW = "ServiceStateWorkflow"
OSS_RECONCILIATION_WORKFLOW = "OssReconciliationWorkflow"
OSS_RECONCILIATION_SCHEDULE_ID = "nightly-oss-reconciliation"

# No attempt limit: a suspension, and above all a restoration, must happen however long the OSS is away.
_OSS_CALL = {
    "start_to_close_timeout": timedelta(minutes=2),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5),
                                non_retryable_error_types=["OssRejected", "NotFound"]),
}
_DB_CALL = {"start_to_close_timeout": timedelta(minutes=5), "retry_policy": RetryPolicy(maximum_attempts=5)}
_RECONCILE_OSS = {"start_to_close_timeout": timedelta(minutes=10), "retry_policy": RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(minutes=2))}


def service_state_workflow_id(product_id: str) -> str:
    return f"service-state-{product_id}"


@workflow.defn(name=SERVICE_STATE_WORKFLOW)
class ServiceStateWorkflow:
    @workflow.run
    async def run(self, req: ServiceStateRequest) -> ServiceStateResult:
        return await workflow.execute_activity_method(ServiceStateActivities.apply, req, **_OSS_CALL)


class OssReconciliationInput(BaseModel):
    repair: bool = True


@workflow.defn(name=OSS_RECONCILIATION_WORKFLOW)
class OssReconciliationWorkflow:
    @workflow.run
    async def run(self, params: OssReconciliationInput) -> OssReconciliationReport:
        as_of = workflow.now()
        drifts: list[LineDrift] = []
        checked_lines = 0
        after: str | None = None
        while True:
            lines = await workflow.execute_activity_method(ServiceStateActivities.expected_lines, args=[after, RECONCILE_PAGE], **_DB_CALL)
            for start in range(0, len(lines), RECONCILE_BATCH):
                drifts += await workflow.execute_activity_method(ServiceStateActivities.compare, lines[start:start + RECONCILE_BATCH], **_RECONCILE_OSS)
            checked_lines += len(lines)
            if len(lines) < RECONCILE_PAGE:
                break
            after = lines[-1].product_id
        checked: list[LineDrift] = []
        for drift in drifts:
            if params.repair:
                try:
                    drift = await workflow.execute_activity_method(ServiceStateActivities.repair, args=[drift, workflow.info().run_id], **_RECONCILE_OSS)
                except ActivityError as error:
                    drift = drift.model_copy(update={"note": f"repair failed: {error.cause or error}"})
            checked.append(drift)
        repaired = sum(1 for d in checked if d.repaired)
        report = OssReconciliationReport(as_of=as_of, checked=checked_lines, drifts=checked, repaired=repaired, unrepaired=len(checked) - repaired)
        await workflow.execute_activity_method(ServiceStateActivities.record_report, report, **_DB_CALL)
        return report
