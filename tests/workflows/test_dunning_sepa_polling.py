"""A SEPA debit made by a dunning retry stays `processing` for days; its webhook may never come. The episode looks
it up at the gateway once a day for up to 14 days (patch `dunning-sepa-polling`), as the billing-account workflow
does for its own charges. Real durations of consumer-de under time skipping, the real activities on `db_url`,
the OSS simulator over HTTP, the SMTP sink and the sandbox gateway (its SEPA test IBANs)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.worker import Worker

from activities.dunning import DunningActivities
from adapters.notify.email import SmtpNotifier
from adapters.oss.http_client import HttpOssClient
from adapters.payments.sandbox import SandboxGateway
from config.dunning_loader import load_dunning_config
from persistence.tables import DunningAction, Payment
from tests.support.billing import advance_to, eventually, events, open_account, pin_clock
from tests.workflows.test_dunning_workflow import add_invoice, days_after, dunning_mails, replays, rows, start_episode
from worker import activities_of
from workflows.dunning import PATCH_SEPA_POLLING, DunningWorkflow

DAY = timedelta(days=1)
SEPA_SETTLES = "sepa:DE89370400440532013000"
SEPA_BOUNCES = "sepa:DE62370400440532013001"


@asynccontextmanager
async def worker_with(ts_env, settings, gateway: SandboxGateway) -> AsyncIterator[None]:
    activities = DunningActivities(settings, load_dunning_config(), gateway, HttpOssClient(settings.oss_base_url),
                                   SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.mail_from))
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[DunningWorkflow], activities=activities_of(activities),
                          activity_executor=executor, graceful_shutdown_timeout=timedelta(seconds=5)):
            yield


def debits(db_url: str, account) -> list[Payment]:
    return sorted(rows(db_url, Payment, Payment.billing_account_id == account.account_id), key=lambda p: p.attempt)


async def test_a_retry_debit_settled_without_a_webhook_is_found_by_the_daily_poll_and_ends_the_episode(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=SEPA_SETTLES)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    gateway = SandboxGateway(sepa_settle_delay_s=0)  # settled at the gateway at once; no webhook ever comes
    async with worker_with(ts_env, settings, gateway):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 3 * DAY + timedelta(hours=12))
        assert [(p.attempt, p.status) for p in await eventually(lambda: debits(db_url, account))] == [(1, "processing")]
        outcome = await handle.result()
        await replays(handle)
        history = await handle.fetch_history()

    assert outcome.outcome == "settled" and days_after(due, outcome.ended_at) == 4
    assert outcome.reason == f"the debit o2c-charge-{invoice_id}-1 was found settled"
    assert [(p.attempt, p.status, p.method) for p in debits(db_url, account)] == [(1, "succeeded", "sepa_debit")]
    assert gateway.charges_created == 1
    assert dunning_mails(mail_sink, account) == []  # the reminder of day 5 never went out
    story = [(e.kind, days_after(due, e.at)) for e in events(db_url, account.account_id) if e.kind.startswith("dunning.payment_retry")]
    assert story == [("dunning.payment_retry.processing", 3), ("dunning.payment_retry.succeeded", 4)]
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert len(markers) == 1 and PATCH_SEPA_POLLING in str(markers[0])  # the change is patched (workflow.patched records a marker)


async def test_a_bounced_retry_debit_is_dropped_and_the_next_retry_charges_again(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=SEPA_BOUNCES)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    gateway = SandboxGateway(sepa_settle_delay_s=0)
    async with worker_with(ts_env, settings, gateway):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 7 * DAY + timedelta(hours=12))
        await eventually(lambda: len(debits(db_url, account)) == 2)
        await handle.terminate(reason="test finished")

    # Day 3: attempt 1 processing, found failed on day 4; day 7: the scheduled retry charges again (attempt 2).
    assert [(p.attempt, days_after(due, p.created_at)) for p in debits(db_url, account)] == [(1, 3), (2, 7)]
    assert debits(db_url, account)[0].status == "declined"
    story = [(e.kind, days_after(due, e.at)) for e in events(db_url, account.account_id) if e.kind.startswith("dunning.payment_retry")]
    assert story[:3] == [("dunning.payment_retry.processing", 3), ("dunning.payment_retry.declined", 4), ("dunning.payment_retry.processing", 7)]


async def test_a_retry_debit_still_processing_after_14_days_is_no_longer_polled(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=SEPA_SETTLES)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    gateway = SandboxGateway(sepa_settle_delay_s=10**9)  # never settles within the test
    async with worker_with(ts_env, settings, gateway):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 19 * DAY)
        overdue = await eventually(lambda: [a for a in rows(db_url, DunningAction, DunningAction.episode_id == handle.id)
                                            if a.kind == "payment_check"])
        await handle.terminate(reason="test finished")

    assert [(a.status, days_after(due, a.at)) for a in overdue] == [("failed", 17)]
    assert "still processing after 14 days" in overdue[0].reason
    # One debit only: the in-flight invoice is never charged again while its debit is open.
    assert [(p.attempt, p.status) for p in debits(db_url, account)] == [(1, "processing")]
    assert gateway.charges_created == 1
