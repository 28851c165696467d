"""The Temporal Schedules o2c keeps: the nightly bill-run check, the nightly OSS reconciliation, the hourly refund poll
and the nightly traffic data retention run. Every worker calls each `ensure_*` at start; each returns whether it
created the schedule (False: it exists already)."""
from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleIntervalSpec, ScheduleSpec

from workflows.bill_run import BILL_RUN_CHECK_WORKFLOW, BILL_RUN_SCHEDULE_ID, BillRunCheckInput
from workflows.service_state import OSS_RECONCILIATION_SCHEDULE_ID, OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput
from workflows.refund_poll import REFUND_POLL_SCHEDULE_ID, REFUND_POLL_WORKFLOW, RefundPollInput
from workflows.traffic_retention import TRAFFIC_RETENTION_SCHEDULE_ID, TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput


async def _create_once(client: Client, schedule_id: str, workflow: str, params: BaseModel, task_queue: str, spec: ScheduleSpec) -> bool:
    """The schedule `schedule_id` starting `workflow(params)` (run id `<schedule_id>-run`) on `spec`, unless it exists."""
    try:
        await client.create_schedule(
            schedule_id,
            Schedule(action=ScheduleActionStartWorkflow(workflow, params, id=f"{schedule_id}-run", task_queue=task_queue), spec=spec),
        )
    except ScheduleAlreadyRunningError:
        return False
    return True


async def ensure_bill_run_schedule(client: Client, task_queue: str, *, cron: str = "30 2 * * *", timezone: str = "Europe/Berlin") -> bool:
    """The nightly bill-run check. 02:30 local time: after the midnight cycle ends and their settle time."""
    return await _create_once(client, BILL_RUN_SCHEDULE_ID, BILL_RUN_CHECK_WORKFLOW, BillRunCheckInput(), task_queue,
                              ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone))


async def ensure_oss_reconciliation_schedule(client: Client, task_queue: str, *, cron: str = "30 3 * * *", timezone: str = "Europe/Berlin") -> bool:
    """The nightly OSS reconciliation. 03:30 local time: after the bill-run check, in the quiet hours."""
    return await _create_once(client, OSS_RECONCILIATION_SCHEDULE_ID, OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput(), task_queue,
                              ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone))


async def ensure_refund_poll_schedule(client: Client, task_queue: str, *, every: timedelta = timedelta(hours=1)) -> bool:
    """The refund poll, every hour: the gateway refunds still pending are re-read (webhooks first; this catches what
    they missed, and the sandbox's, which sends none)."""
    return await _create_once(client, REFUND_POLL_SCHEDULE_ID, REFUND_POLL_WORKFLOW, RefundPollInput(), task_queue,
                              ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]))


async def ensure_traffic_retention_schedule(client: Client, task_queue: str, *, cron: str = "15 4 * * *", timezone: str = "Europe/Berlin") -> bool:
    """The nightly traffic data retention run. 04:15 local time: after the bill-run check and the OSS reconciliation."""
    return await _create_once(client, TRAFFIC_RETENTION_SCHEDULE_ID, TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput(), task_queue,
                              ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone))
