"""The traffic data retention run as it is started in production: the nightly Temporal Schedule, the
TrafficRetentionWorkflow on a real worker and dev server, and `o2c erase-traffic-data` as its own process.
Each runs against a database of its own: a run without scope erases every due row of its database."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

from sqlmodel import select
from temporalio.client import Client
from temporalio.worker import Worker

from activities.traffic_retention import TrafficRetentionActivities
from adapters.temporal.schedules import ensure_traffic_retention_schedule
from persistence.db import migrate, session_scope
from persistence.tables import BillingAccount, BusinessEvent, Customer, Invoice, TrafficRetentionRun, UsageRecord
from services.billing_accounts import set_traffic_data_hold
from services.traffic_retention import TrafficRetentionReport, erase_expired_traffic_data
from tests.api.conftest import TASK_QUEUE
from worker import activities_of
from workflows.traffic_retention import (TRAFFIC_RETENTION_SCHEDULE_ID, TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput,
                                         TrafficRetentionWorkflow)

UTC = timezone.utc
AS_OF = datetime(2026, 11, 30, 3, 15, tzinfo=UTC)


def _database_with_old_usage(tmp_path) -> tuple[str, str]:
    """A fresh database holding one usage record billed on an invoice issued in January: (url, record id)."""
    url = f"sqlite:///{tmp_path / 'retention.db'}"
    migrate(url)
    invoice_id, record_id = str(uuid.uuid4()), f"ret-{uuid.uuid4().hex[:10]}"
    with session_scope(url) as session:
        session.add(Invoice(id=invoice_id, number="R-2026-000001", billing_account_id="ba-1", customer_id="c-1", state="settled",
                            period_start=datetime(2025, 12, 1, tzinfo=UTC), period_end=datetime(2026, 1, 1, tzinfo=UTC),
                            local_period_start=date(2025, 12, 1), local_period_end=date(2026, 1, 1), issued_at=datetime(2026, 1, 1, 6, tzinfo=UTC),
                            due_at=datetime(2026, 1, 15, tzinfo=UTC), net_cents=100, vat_cents=19, gross_cents=119, lines=[], vat_breakdown=[]))
        session.flush()
        session.add(UsageRecord(id=record_id, usage_type="voice", msisdn="4915112345678", product_id="p-1", billing_account_id="ba-1",
                                event_time=datetime(2025, 12, 24, 18, 3, tzinfo=UTC), quantity=61, status="billed", units=2, chargeable_units=2,
                                amount_micros=380_000, period_start=datetime(2025, 12, 1, tzinfo=UTC), invoice_id=invoice_id,
                                received_at=datetime(2025, 12, 24, 18, 5, tzinfo=UTC), destination="4989123456"))
    return url, record_id


def _destination(url: str, record_id: str) -> str | None:
    with session_scope(url) as session:
        return session.get(UsageRecord, record_id).destination


async def test_the_nightly_schedule_is_created_once(temporal_client: Client) -> None:
    handle = temporal_client.get_schedule_handle(TRAFFIC_RETENTION_SCHEDULE_ID)
    try:
        await handle.delete()  # left by an earlier run on this dev server
    except Exception:  # noqa: BLE001 - not there: the normal case
        pass
    try:
        assert await ensure_traffic_retention_schedule(temporal_client, TASK_QUEUE) is True
        assert await ensure_traffic_retention_schedule(temporal_client, TASK_QUEUE) is False
        described = await handle.describe()
        [calendar] = described.schedule.spec.calendars  # the server keeps the cron as a calendar: 04:15 every day, Berlin time
        assert [(r.start, r.end) for r in calendar.hour] == [(4, 4)] and [(r.start, r.end) for r in calendar.minute] == [(15, 15)]
        assert described.schedule.spec.time_zone_name == "Europe/Berlin"
        assert (described.schedule.action.workflow, described.schedule.action.task_queue) == (TRAFFIC_RETENTION_WORKFLOW, TASK_QUEUE)
    finally:
        await handle.delete()


async def test_the_workflow_erases_due_traffic_data_and_records_the_run(temporal_client: Client, tmp_path) -> None:
    url, record_id = _database_with_old_usage(tmp_path)
    queue = f"retention-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(temporal_client, task_queue=queue, workflows=[TrafficRetentionWorkflow],
                          activities=activities_of(TrafficRetentionActivities(url)), activity_executor=executor):
            report = await temporal_client.execute_workflow(TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput(as_of=AS_OF), id=f"retention-{uuid.uuid4()}",
                                                            task_queue=queue, result_type=TrafficRetentionReport)
            again = await temporal_client.execute_workflow(TRAFFIC_RETENTION_WORKFLOW, TrafficRetentionInput(as_of=AS_OF), id=f"retention-{uuid.uuid4()}",
                                                           task_queue=queue, result_type=TrafficRetentionReport)
    assert (report.usage_records_erased, report.billed_before) == (1, datetime(2026, 5, 30, 3, 15, tzinfo=UTC))
    assert again.usage_records_erased == 0
    assert _destination(url, record_id) is None
    with session_scope(url) as session:
        events = session.exec(select(BusinessEvent).where(BusinessEvent.kind == "traffic_data.erased")).all()
    # One event for the run that erased something; the empty second run adds none.
    assert [e.data["usage_records_erased"] for e in events] == [1]
    assert "1 usage records billed on or before 2026-05-30" in events[0].message


async def test_o2c_erase_traffic_data_counts_with_dry_run_then_erases(tmp_path) -> None:
    url, record_id = _database_with_old_usage(tmp_path)
    env = dict(os.environ, O2C_DATABASE_URL=url)

    async def run(*args: str) -> dict:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "o2c_cli.main", "erase-traffic-data", *args, env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        return json.loads(out)

    dry = await run("--dry-run")
    assert (dry["dry_run"], dry["usage_records_erased"]) == (True, 1)
    assert _destination(url, record_id) == "4989123456"
    done = await run()
    assert (done["dry_run"], done["usage_records_erased"]) == (False, 1)
    assert _destination(url, record_id) is None


def _billed_record(url: str, account_id: str, issued_at: datetime) -> str:
    invoice_id, record_id = str(uuid.uuid4()), f"ret-{uuid.uuid4().hex[:10]}"
    with session_scope(url) as session:
        session.add(Invoice(id=invoice_id, number=f"R-{uuid.uuid4().hex[:10]}", billing_account_id=account_id, customer_id="c-1", state="settled",
                            period_start=issued_at - timedelta(days=31), period_end=issued_at, local_period_start=date(2025, 1, 1),
                            local_period_end=date(2025, 2, 1), issued_at=issued_at, due_at=issued_at + timedelta(days=14), net_cents=1, vat_cents=0,
                            gross_cents=1, lines=[], vat_breakdown=[]))
        session.flush()
        session.add(UsageRecord(id=record_id, usage_type="sms", msisdn="4915112345678", product_id="p-1", billing_account_id=account_id,
                                event_time=issued_at - timedelta(days=3), quantity=1, status="billed", units=1, chargeable_units=1, amount_micros=90_000,
                                period_start=issued_at - timedelta(days=31), invoice_id=invoice_id, received_at=issued_at - timedelta(days=3),
                                destination="4917012345678"))
    return record_id


def test_each_run_walks_on_from_the_last_finished_one_and_revisits_accounts_it_had_to_keep(tmp_path) -> None:
    """Unscoped runs, as the schedule makes them: the second reads only invoices issued after the first one's cutoff,
    plus every invoice of an account the first one kept for a complaint (released since)."""
    url = f"sqlite:///{tmp_path / 'walk.db'}"
    migrate(url)
    with session_scope(url) as session:
        session.add(Customer(id="c-1", name="Erika Mustermann", address={}, created_at=AS_OF))
        session.flush()
        session.add(BillingAccount(id="ba-held", customer_id="c-1", name="held", timezone="Europe/Berlin", bill_cycle_day=1, billing_profile="standard",
                                   cycle_anchor=AS_OF, created_at=AS_OF, traffic_data_hold_reason="complaint", traffic_data_hold_since=AS_OF))
    old = _billed_record(url, "ba-1", datetime(2026, 1, 2, tzinfo=UTC))
    held = _billed_record(url, "ba-held", datetime(2026, 1, 2, tzinfo=UTC))

    first = erase_expired_traffic_data(url, AS_OF)
    assert (first.usage_records_erased, first.held_accounts, first.done) == (1, ["ba-held"], True)
    assert (_destination(url, old), _destination(url, held)) == (None, "4917012345678")

    # The night after: one invoice issued just after the first run's cutoff is now due; the hold was released.
    next_day = AS_OF + timedelta(days=1)
    newly_due = _billed_record(url, "ba-1", first.billed_before + timedelta(hours=1))
    not_yet = _billed_record(url, "ba-1", next_day - timedelta(days=150))
    with session_scope(url) as session:
        set_traffic_data_hold(session, "ba-held", None)
    second = erase_expired_traffic_data(url, next_day)
    assert (second.usage_records_erased, second.held_accounts) == (2, [])
    assert (_destination(url, newly_due), _destination(url, held), _destination(url, not_yet)) == (None, None, "4917012345678")
    with session_scope(url) as session:
        runs = session.exec(select(TrafficRetentionRun).order_by(TrafficRetentionRun.as_of)).all()
    assert [(r.usage_records_erased, r.finished_at is not None) for r in runs] == [(1, True), (2, True)]
