"""The EU roaming data cap on the billing-account workflow: its 80 % and 100 % notices are told once each, apart
from the spending limit's notices of the same percentages, with their own text; at 100 % roaming data (and only
roaming data) is barred through the OSS, once a cycle, until the next cycle starts or the customer asks to continue;
an account that opted out is never barred. The OSS is the simulator process, read through its TMF638 inventory."""
from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.service_state import OssReconciliationReport
from adapters.oss.http_client import HttpOssClient
from adapters.temporal.client import WorkflowGateway
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from persistence.db import session_scope
from persistence.tables import BillingAccount
from services import billing_accounts
from services.errors import Conflict
from services.spending_monitor import SPENDING_TOPIC
from services.usage_ingest import ingest, parse_tmf_usage
from services.workflows import LazyWorkflows
from tests.mediation.test_importer import CATALOG, PROFILES
from tests.support.billing import advance_to, barring, eventually, events, local_midnight, mails_to, open_account, pin_clock, products, start_billing
from workflows.billing_account import BillingAccountWorkflow
from workflows.messages import SpendingThresholdCrossed
from workflows.service_state import OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput

INVENTORY = "/tmf-api/serviceInventory/v4/service"


def _crossing(period_start, percent: int, kind: str) -> SpendingThresholdCrossed:
    return SpendingThresholdCrossed(period_start=period_start, threshold_percent=percent, usage_cost=Decimal("40.00") * percent / 80,
                                    limit=Decimal("50.00"), hard_cap=False, kind=kind)


async def _line(oss_http, msisdn: str) -> tuple[str, str, bool]:
    """(state, barring, roaming data barred) as the OSS's TMF638 service inventory has the line."""
    document = (await oss_http.get(f"{INVENTORY}/{msisdn}")).json()
    values = {c["name"]: c["value"] for c in document["serviceCharacteristic"]}
    return document["state"], values["barring"], values["roamingDataBarred"]


def _kinds(db_url, account_id, kind: str) -> list:
    return [e for e in events(db_url, account_id) if e.kind == kind]


async def test_roaming_cap_notices_are_told_once_each_and_100_percent_bars_roaming_data_only(running_worker, make_settings, db_url, oss_http,
                                                                                              ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    msisdn = account.products[0].msisdn
    period_start = local_midnight(date(start.year, 11, 15))
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        await start_billing(client, settings.task_queue, account)
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 80, "spending"))
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 80, "roamingData"))  # same percent, other limit
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 80, "roamingData"))  # a repeat
        assert await _line(oss_http, msisdn) == ("active", "none", False)  # 80 % only tells
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 100, "roamingData"))
        await gateway.spending_threshold(account.account_id, _crossing(period_start, 100, "roamingData"))  # a repeat: barred once
        await eventually(lambda: len(_kinds(db_url, account.account_id, "spending.roaming_data")) == 2)
        await eventually(lambda: len(_kinds(db_url, account.account_id, "spending.threshold")) == 1)
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1)
        await eventually(lambda: len([m for m in mails_to(mail_sink, account.email) if "limit" in m["Subject"]]) == 3)
    roaming = _kinds(db_url, account.account_id, "spending.roaming_data")
    assert [e.data["percent"] for e in roaming] == [80, 100]
    assert roaming[1].message == "Roaming data limit 100 % reached: 50.00 of 50.00 EUR"
    # Only roaming data is barred: the line stays active without a barring, the product active (not a suspension).
    assert await _line(oss_http, msisdn) == ("active", "none", True)
    assert products(db_url, account.account_id)[0].status == "active"
    [barred] = _kinds(db_url, account.account_id, "service.roaming_data_barred")
    assert barred.data["msisdns"] == [msisdn] and barred.data["periodStart"] == period_start.isoformat()
    subjects = sorted(m["Subject"] for m in mails_to(mail_sink, account.email))
    assert [s for s in subjects if "limit" in s] == [
        "Roaming data outside the EU: 100 % of your 50.00 EUR limit used",
        "Roaming data outside the EU: 80 % of your 50.00 EUR limit used",
        "You have used 80 % of your spending limit",
    ]
    [hundred] = [m for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Roaming data outside the EU: 100 %")]
    assert "now stopped until your next billing cycle starts" in hundred.get_content()


def _usage(msisdn: str, at, *, country: str | None, megabytes: int) -> dict:
    characteristics = [{"name": "msisdn", "value": f"+{msisdn}"}, {"name": "volume", "value": megabytes * 1_000_000}]
    if country is not None:
        characteristics.append({"name": "roamingCountry", "value": country})
    return {"id": f"r-{uuid.uuid4()}", "usageType": "data", "usageDate": at.isoformat(), "usageCharacteristic": characteristics}


def _ingest(db_url: str, records: list[dict], now) -> None:
    with session_scope(db_url) as session:
        report = ingest(session, [parse_tmf_usage(r) for r in records], CATALOG, PROFILES, now=now)
    assert {r.status for r in report.results} == {"accepted"}, [r.reason for r in report.results]


async def test_roaming_usage_past_the_cap_bars_roaming_data_until_the_customer_asks_to_continue(running_worker, make_settings, db_url, oss_http,
                                                                                                 ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start - timedelta(days=20), bill_cycle_day=15,
                                 payment_method="4242424242424242")
    msisdn = account.products[0].msisdn
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        # Only the spending topic's handler: other tests' messages (e.g. opt-outs) stay put.
        relay = OutboxRelay(db_url, {SPENDING_TOPIC: workflow_handlers(gateway)[SPENDING_TOPIC]})
        await start_billing(client, settings.task_queue, account)
        # Switzerland is outside roam-like-at-home: 80 MB there cost more than 50 EUR; domestic data costs nothing towards the cap.
        _ingest(db_url, [_usage(msisdn, start - timedelta(hours=2), country=None, megabytes=500),
                         _usage(msisdn, start - timedelta(hours=1), country="CH", megabytes=80)], now=start)
        assert await relay.deliver_due() == 2  # 80 % and 100 %
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1)
        assert await _line(oss_http, msisdn) == ("active", "none", True)
        assert products(db_url, account.account_id)[0].status == "active"
        # Domestic usage is still taken (the network carries it: only roaming data is barred).
        _ingest(db_url, [_usage(msisdn, start + timedelta(minutes=5), country=None, megabytes=100)], now=start + timedelta(minutes=10))

        workflows = LazyWorkflows(gateway=gateway)
        row = await billing_accounts.continue_roaming_data(db_url, workflows, account.account_id, request_id="req-continue-1",
                                                           reason="customer called from Zurich")
        assert row.id == account.account_id
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_restored")) == 1)
        assert await _line(oss_http, msisdn) == ("active", "none", False)
        [continued] = _kinds(db_url, account.account_id, "roaming_data_cap.continued")
        assert "customer called from Zurich" in continued.message
        [requested] = _kinds(db_url, account.account_id, "roaming_data_cap.continue_requested")
        assert requested.data == {"requestId": "req-continue-1", "reason": "customer called from Zurich"}

        # More roaming data this cycle, and the 100 % crossing told again: not barred again in this cycle.
        _ingest(db_url, [_usage(msisdn, start + timedelta(minutes=20), country="CH", megabytes=10)], now=start + timedelta(minutes=30))
        await gateway.spending_threshold(account.account_id, _crossing(local_midnight(date(start.year, 11, 15)), 100, "roamingData"))
        await billing_accounts.continue_roaming_data(db_url, workflows, account.account_id, request_id="req-continue-2", reason="again")
        await eventually(lambda: len(_kinds(db_url, account.account_id, "roaming_data_cap.continue_requested")) == 2)
        await advance_to(ts_env, start + timedelta(days=1))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "roaming_data_cap.continued")) == 1)
        # The history (bar, continue, lift, a repeated crossing and request) replays on today's code: deterministic.
        history = await client.get_workflow_handle(account.workflow_id).fetch_history()
        assert any(e.marker_recorded_event_attributes.marker_name == "core_patch" for e in history.events if e.HasField("marker_recorded_event_attributes"))
        await Replayer(workflows=[BillingAccountWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
    assert len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1
    assert len(_kinds(db_url, account.account_id, "service.roaming_data_restored")) == 1
    assert await _line(oss_http, msisdn) == ("active", "none", False)


async def test_the_roaming_data_barring_is_lifted_when_the_next_cycle_starts(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    msisdn = account.products[0].msisdn
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        await start_billing(client, settings.task_queue, account)
        await gateway.spending_threshold(account.account_id, _crossing(local_midnight(date(start.year, 11, 15)), 100, "roamingData"))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1)
        assert await _line(oss_http, msisdn) == ("active", "none", True)

        # The cycle closes on 15 December: the new cycle starts with roaming data open again.
        await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_restored")) == 1)
        assert await _line(oss_http, msisdn) == ("active", "none", False)
        [restored] = _kinds(db_url, account.account_id, "service.roaming_data_restored")
        assert "a new cycle started" in restored.message

        # The new cycle's cut-off bars again.
        await gateway.spending_threshold(account.account_id, _crossing(local_midnight(date(start.year, 12, 15)), 100, "roamingData"))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 2)
        assert await _line(oss_http, msisdn) == ("active", "none", True)
    assert products(db_url, account.account_id)[0].status == "active"


async def test_an_account_that_opted_out_is_never_barred_and_opting_out_lifts_a_barring(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    opted = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    capped = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    with session_scope(db_url) as session:
        billing_accounts.set_roaming_data_cap_opt_out(session, opted.account_id, True)
    period_start = local_midnight(date(start.year, 11, 15))
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        workflows = LazyWorkflows(gateway=gateway)
        for account in (opted, capped):
            await start_billing(client, settings.task_queue, account)
            # A crossing written before the opt-out reaches the workflow after it.
            await gateway.spending_threshold(account.account_id, _crossing(period_start, 100, "roamingData"))
        await eventually(lambda: len(_kinds(db_url, opted.account_id, "service.roaming_data_not_barred")) == 1)
        await eventually(lambda: len(_kinds(db_url, capped.account_id, "service.roaming_data_barred")) == 1)
        assert await _line(oss_http, opted.msisdns[0]) == ("active", "none", False)
        assert await _line(oss_http, capped.msisdns[0]) == ("active", "none", True)
        # An opted-out account has nothing to continue.
        try:
            await billing_accounts.continue_roaming_data(db_url, workflows, opted.account_id, request_id="r", reason="x")
        except Conflict as refused:
            assert refused.code == "roaming_data_cap_opted_out"
        else:
            raise AssertionError("continuing an opted-out account's roaming data was accepted")

        # The barred account opts out (PATCH): its workflow lifts the barring.
        with session_scope(db_url) as session:
            _, changed = billing_accounts.set_roaming_data_cap_opt_out(session, capped.account_id, True)
        assert changed
        await billing_accounts.lift_roaming_data_after_opt_out(workflows, capped.account_id, "opt-out:req-1")
        await eventually(lambda: len(_kinds(db_url, capped.account_id, "service.roaming_data_restored")) == 1)
        assert await _line(oss_http, capped.msisdns[0]) == ("active", "none", False)
    assert _kinds(db_url, opted.account_id, "service.roaming_data_barred") == []
    with session_scope(db_url) as session:
        assert session.get(BillingAccount, capped.account_id).roaming_data_cap_opt_out is True
    assert await barring(oss_http, capped.msisdns[0]) == "none"


async def test_the_nightly_oss_reconciliation_keeps_a_roaming_data_barring(running_worker, make_settings, db_url, oss_http, oss_sim, ts_env):
    """The reconciliation compares the barring only: a roaming data barring is no drift, and repairing a line's barring
    drift leaves its roaming data barring in place."""
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    quiet, drifted = account.msisdns
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        await WorkflowGateway(client, settings.task_queue).spending_threshold(
            account.account_id, _crossing(local_midnight(date(start.year, 11, 15)), 100, "roamingData"))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1)
        # Someone in the network operations centre bars one line outside o2c.
        await HttpOssClient(oss_sim.url).set_barring(external_id=f"noc:{uuid.uuid4()}", msisdn=drifted, barring="full")
        report = await client.execute_workflow(OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput(repair=True), id=f"oss-reconciliation-{uuid.uuid4()}",
                                               task_queue=settings.task_queue, result_type=OssReconciliationReport)
    mine = {d.msisdn: (d.expected, d.actual, d.repaired) for d in report.drifts if d.msisdn in account.msisdns}
    assert mine == {drifted: ("none", "full", True)}
    assert await _line(oss_http, quiet) == ("active", "none", True)
    assert await _line(oss_http, drifted) == ("active", "none", True)
