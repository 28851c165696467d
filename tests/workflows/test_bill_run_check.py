"""The nightly bill-run check: it finds every cycle that ended without an invoice, issues and sends it
through the account workflow's own activities, reports what it found and fixed, and finds nothing
the second time. Its schedule is created once on the real dev server."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.bill_run import BillRunReport, closed_periods_to_check
from adapters.temporal.schedules import ensure_bill_run_schedule
from domain.billing_cycle import CycleSpec
from tests.support.billing import events, invoices, local_midnight, mails_to, open_account
from workflows.bill_run import BILL_RUN_CHECK_WORKFLOW, BILL_RUN_SCHEDULE_ID, BillRunCheckInput

UTC = timezone.utc


def test_only_cycles_past_their_settle_time_are_checked():
    spec = CycleSpec(kind="monthly", bill_cycle_day=1, timezone="Europe/Berlin")
    # 00:30 Berlin on 1 November: October ended 30 minutes ago, inside the 1 h settle time.
    early = local_midnight(date(2026, 11, 1)) + timedelta(minutes=30)
    assert [p.start for p in closed_periods_to_check(spec, early, timedelta(hours=1), 2)] == [
        local_midnight(date(2026, 9, 1)), local_midnight(date(2026, 8, 1))]
    later = local_midnight(date(2026, 11, 1)) + timedelta(hours=2)
    assert closed_periods_to_check(spec, later, timedelta(hours=1), 1)[0].start == local_midnight(date(2026, 10, 1))


async def run_check(client: Client, task_queue: str, as_of: datetime, account_ids: list[str]) -> BillRunReport:
    # Scoped to the test's accounts: the database is shared with other tests' accounts.
    return await client.execute_workflow(BILL_RUN_CHECK_WORKFLOW, BillRunCheckInput(as_of=as_of, account_ids=account_ids),
                                         id=f"bill-run-check-{uuid.uuid4()}",
                                         task_queue=task_queue, result_type=BillRunReport)


async def test_missing_cycle_invoices_are_issued_sent_and_reported_once(db_url, oss_http, make_settings, running_worker, mail_sink):
    settings = make_settings()
    # Billing started on 10 September; no workflow ever ran for the account (it was lost), so the
    # September and October cycles (cycle day 1, Berlin) ended without an invoice. August was before billing.
    lost = await open_account(db_url, oss_http, ["mobile-s"], activated_at=local_midnight(date(2026, 9, 10)))
    as_of = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    async with running_worker(settings) as client:
        report = await run_check(client, settings.task_queue, as_of, [lost.account_id])
        mine = invoices(db_url, lost.account_id)
        assert [i.period_start for i in mine] == [local_midnight(date(2026, 9, 1)), local_midnight(date(2026, 10, 1))]
        assert all(i.number is not None and i.kind == "cycle" for i in mine)
        assert (report.accounts_checked, report.found, report.repaired, report.nothing_to_bill, report.failed) == (1, 2, 2, 0, [])
        assert len(mails_to(mail_sink, lost.email)) == 2
        repaired = [e for e in events(db_url, lost.account_id) if e.kind == "bill_run.repaired"]
        assert [e.data["periodStart"] for e in repaired] == [local_midnight(date(2026, 9, 1)).isoformat(), local_midnight(date(2026, 10, 1)).isoformat()]

        again = await run_check(client, settings.task_queue, as_of, [lost.account_id])
        assert (again.found, again.repaired) == (0, 0)
        assert len(invoices(db_url, lost.account_id)) == 2
        assert len(mails_to(mail_sink, lost.email)) == 2


async def test_the_nightly_schedule_is_created_once(temporal_cli):
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_cli, data_converter=pydantic_data_converter,
                                                dev_server_log_level="error")
    try:
        assert await ensure_bill_run_schedule(env.client, "o2c") is True
        assert await ensure_bill_run_schedule(env.client, "o2c") is False
        described = await env.client.get_schedule_handle(BILL_RUN_SCHEDULE_ID).describe()
        # The server keeps the cron expression as a calendar: 02:30 every day.
        [calendar] = described.schedule.spec.calendars
        assert [(r.start, r.end) for r in calendar.hour] == [(2, 2)] and [(r.start, r.end) for r in calendar.minute] == [(30, 30)]
        assert described.schedule.spec.time_zone_name == "Europe/Berlin"
        assert described.schedule.action.workflow == BILL_RUN_CHECK_WORKFLOW
    finally:
        await env.shutdown()
