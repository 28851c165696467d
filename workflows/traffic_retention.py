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

# A backlog (the first run on an old database) is erased in chunks; a run cut short is finished by the retry.
_ERASE_CALL = {"start_to_close_timeout": timedelta(hours=1), "retry_policy": RetryPolicy(maximum_attempts=5)}


class TrafficRetentionInput(BaseModel):
    as_of: datetime | None = None  # default: the workflow's start time


@workflow.defn(name=TRAFFIC_RETENTION_WORKFLOW)
class TrafficRetentionWorkflow:
    @workflow.run
    async def run(self, params: TrafficRetentionInput) -> TrafficRetentionReport:
        as_of = params.as_of or workflow.now()
        return await workflow.execute_activity_method(TrafficRetentionActivities.erase_expired_traffic_data, as_of, **_ERASE_CALL)
