"""The Temporal Schedules o2c keeps: today the nightly bill-run check."""
from __future__ import annotations

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleSpec

from workflows.bill_run import BILL_RUN_CHECK_WORKFLOW, BILL_RUN_SCHEDULE_ID, BillRunCheckInput


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
