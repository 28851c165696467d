"""TrafficRetentionWorkflow: the nightly erasure of traffic data past its retention, started by a Temporal
Schedule (adapters.temporal.schedules.ensure_traffic_retention_schedule). `o2c erase-traffic-data` does the
same once without Temporal. The rules are in domain.traffic_retention and services.traffic_retention."""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.traffic_retention import TrafficRetentionActivities
    from services.traffic_retention import TrafficRetentionReport

TRAFFIC_RETENTION_WORKFLOW = "TrafficRetentionWorkflow"
TRAFFIC_RETENTION_SCHEDULE_ID = "nightly-traffic-data-retention"

# One call does a bounded number of chunks (activities.traffic_retention.CHUNKS_PER_CALL) in well under this.
_ERASE_CALL = {"start_to_close_timeout": timedelta(minutes=10), "retry_policy": RetryPolicy(maximum_attempts=10)}
_DB_CALL = {"start_to_close_timeout": timedelta(minutes=1), "retry_policy": RetryPolicy(maximum_attempts=5)}
# A backlog of years is many calls; the history stays small by continuing as new now and then.
_CALLS_PER_RUN = 200


class TrafficRetentionInput(BaseModel):
    as_of: datetime | None = None  # default: the workflow's start time
    run_id: str | None = None  # set when continuing as new


@workflow.defn(name=TRAFFIC_RETENTION_WORKFLOW)
class TrafficRetentionWorkflow:
    @workflow.run
    async def run(self, params: TrafficRetentionInput) -> TrafficRetentionReport:
        as_of = params.as_of or workflow.now()
        # The run id names the run's row: a retried call and a continued workflow go on with the same run.
        run_id = params.run_id or f"retention-{workflow.info().workflow_id}-{as_of:%Y%m%dT%H%M%S}"
        for _ in range(_CALLS_PER_RUN):
            report = await workflow.execute_activity_method(TrafficRetentionActivities.erase_expired_traffic_data, args=[as_of, run_id],
                                                            **_ERASE_CALL)
            if report.done:
                await workflow.execute_activity_method(TrafficRetentionActivities.record_traffic_retention_run, report, **_DB_CALL)
                return report
        workflow.continue_as_new(TrafficRetentionInput(as_of=as_of, run_id=run_id))
