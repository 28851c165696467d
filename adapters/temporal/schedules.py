"""The Temporal Schedules o2c keeps: the nightly bill-run check, the nightly OSS reconciliation, the hourly refund poll
and the nightly traffic data retention run."""
from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleIntervalSpec, ScheduleSpec

from workflows.bill_run import BILL_RUN_CHECK_WORKFLOW, BILL_RUN_SCHEDULE_ID, BillRunCheckInput
from workflows.service_state import OSS_RECONCILIATION_SCHEDULE_ID, OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput
from workflows.refund_poll import REFUND_POLL_SCHEDULE_ID, REFUND_POLL_WORKFLOW, RefundPollInput
from workflows.traffic_retention import TRAFFIC_RETENTION_SCHEDULE_ID, TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput


async def ensure_bill_run_schedule(client: Client, task_queue: str, *, cron: str = "30 2 * * *", timezone: str = "Europe/Berlin") -> bool:
    """Creates the nightly check's schedule unless it exists (every worker calls this at start).
    Returns whether it was created. 02:30 local time: after the midnight cycle ends and their settle time."""
    try:
        await client.create_schedule(
            BILL_RUN_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(BILL_RUN_CHECK_WORKFLOW, BillRunCheckInput(), id=f"{BILL_RUN_SCHEDULE_ID}-run", task_queue=task_queue),
                spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
            ),
        )
    except ScheduleAlreadyRunningError:
        return False
    return True


async def ensure_oss_reconciliation_schedule(client: Client, task_queue: str, *, cron: str = "30 3 * * *", timezone: str = "Europe/Berlin") -> bool:
    """Creates the nightly OSS reconciliation's schedule unless it exists (every worker calls this at start).
    Returns whether it was created. 03:30 local time: after the bill-run check, in the quiet hours."""
    try:
        await client.create_schedule(
            OSS_RECONCILIATION_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput(), id=f"{OSS_RECONCILIATION_SCHEDULE_ID}-run",
                                                   task_queue=task_queue),
                spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
            ),
        )
    except ScheduleAlreadyRunningError:
        return False
    return True


async def ensure_refund_poll_schedule(client: Client, task_queue: str, *, every: timedelta = timedelta(hours=1)) -> bool:
    """Creates the refund poll's schedule unless it exists (every worker calls this at start): every hour,
    the gateway refunds still pending are re-read (webhooks first; this catches what they missed, and the
    sandbox's, which sends none). Returns whether it was created."""
    try:
        await client.create_schedule(
            REFUND_POLL_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(REFUND_POLL_WORKFLOW, RefundPollInput(), id=f"{REFUND_POLL_SCHEDULE_ID}-run", task_queue=task_queue),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
            ),
        )
    except ScheduleAlreadyRunningError:
        return False
    return True


async def ensure_traffic_retention_schedule(client: Client, task_queue: str, *, cron: str = "15 4 * * *", timezone: str = "Europe/Berlin") -> bool:
    """Creates the nightly traffic data retention run's schedule unless it exists (every worker calls this at
    start). Returns whether it was created. 04:15 local time: after the bill-run check and the OSS reconciliation."""
    try:
        await client.create_schedule(
            TRAFFIC_RETENTION_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput(), id=f"{TRAFFIC_RETENTION_SCHEDULE_ID}-run",
                                                   task_queue=task_queue),
                spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
            ),
        )
    except ScheduleAlreadyRunningError:
        return False
    return True
