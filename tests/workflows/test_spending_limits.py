"""Spending limits on the billing-account workflow: each threshold told once per cycle, a hard cap bars
outgoing use through the OSS until the next cycle, and a dunning suspension is not lifted by it."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from adapters.temporal.client import WorkflowGateway
from tests.support.billing import advance_to, barring, eventually, events, local_midnight, mails_to, open_account, pin_clock, products, start_billing
from workflows.messages import SpendingThresholdCrossed


def _crossing(period_start, percent: int, hard_cap: bool) -> SpendingThresholdCrossed:
    return SpendingThresholdCrossed(period_start=period_start, threshold_percent=percent, usage_cost=Decimal("40.00") * percent / 80,
                                    limit=Decimal("50.00"), hard_cap=hard_cap)


def _spending_events(db_url, account_id):
    return [e for e in events(db_url, account_id) if e.kind == "spending.threshold"]


async def test_each_threshold_is_told_once_and_a_hard_cap_bars_until_the_next_cycle(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    msisdn = account.products[0].msisdn
    period_start = local_midnight(date(start.year, 11, 15))  # the cycle running on 1 December
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        await start_billing(client, settings.task_queue, account)
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 80, hard_cap=True))
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 80, hard_cap=True))  # a repeat
        await eventually(lambda: len(_spending_events(db_url, account.account_id)) == 1)
        assert await barring(oss_http, msisdn) == "none"

        await gateway.spending_threshold(account.account_id, _crossing(period_start, 100, hard_cap=True))
        await eventually(lambda: products(db_url, account.account_id)[0].status == "suspended")
        assert await barring(oss_http, msisdn) == "outgoing"
        assert [e.data["percent"] for e in _spending_events(db_url, account.account_id)] == [80, 100]

        # The cycle closes on 15 December: the new cycle starts with the cap lifted.
        await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
        await eventually(lambda: products(db_url, account.account_id)[0].status == "active")
        assert await barring(oss_http, msisdn) == "none"
    subjects = [m["Subject"] for m in mails_to(mail_sink, account.email) if "spending limit" in m["Subject"]]
    assert subjects == ["You have used 80 % of your spending limit", "You have used 100 % of your spending limit"]


async def test_a_soft_limit_notifies_without_barring(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    period_start = local_midnight(date(start.year, 11, 15))
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        await WorkflowGateway(client, settings.task_queue).spending_threshold(account.account_id, _crossing(period_start, 100, hard_cap=False))
        await eventually(lambda: len(_spending_events(db_url, account.account_id)) == 1)
    assert products(db_url, account.account_id)[0].status == "active"
    assert await barring(oss_http, account.products[0].msisdn) == "none"


async def test_a_crossing_from_an_earlier_cycle_is_ignored(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        gateway = WorkflowGateway(client, settings.task_queue)
        # A late signal about the cycle before the current one, then one about the current cycle.
        await gateway.spending_threshold(account.account_id, _crossing(local_midnight(date(start.year, 10, 15)), 100, hard_cap=True))
        await gateway.spending_threshold(account.account_id, _crossing(local_midnight(date(start.year, 11, 15)), 80, hard_cap=True))
        await eventually(lambda: len(_spending_events(db_url, account.account_id)) == 1)
    assert [e.data["percent"] for e in _spending_events(db_url, account.account_id)] == [80]
    assert products(db_url, account.account_id)[0].status == "active"
