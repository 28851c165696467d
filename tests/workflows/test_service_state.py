"""Staff suspend / restore of a service end to end (API -> ServiceStateWorkflow -> real OSS simulator -> database),
the rule between a manual suspension and dunning's bars, and the nightly OSS reconciliation."""
from __future__ import annotations

import uuid
from datetime import timedelta
from contextlib import asynccontextmanager

import httpx
from sqlmodel import select

from activities.dunning import BarringRequest
from activities.service_state import OssReconciliationReport
from adapters.oss.http_client import HttpOssClient
from adapters.temporal.client import WorkflowGateway
from api import app as api_app
from api.routers import products as products_router
from persistence.db import session_scope
from persistence.tables import AuditLog, ManualSuspension, ProductStatusChange
from tests.support.billing import barring, eventually, events, open_account, products
from worker import build_activities
from workflows.service_state import OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput

SUPPORT = {"X-API-Key": "dev-support-key"}
PRODUCT = "/tmf-api/productInventory/v4/product"


@asynccontextmanager
async def api(client, settings):
    app = api_app.create_app(settings, workflows=WorkflowGateway(client, settings.task_queue))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o2c.test") as http:
        yield http


def _activity(settings, name: str):
    """A bound activity method of the real activities (called directly, as a workflow would)."""
    return next(a for a in build_activities(settings) if getattr(a, "__temporal_activity_definition").name == name)


def _history(db_url, product_id):
    with session_scope(db_url) as session:
        return [(r.from_status, r.to_status, r.source, r.actor) for r in
                session.exec(select(ProductStatusChange).where(ProductStatusChange.product_id == product_id).order_by(ProductStatusChange.id))]


def _hold(db_url, product_id):
    with session_scope(db_url) as session:
        row = session.get(ManualSuspension, product_id)
        return None if row is None else (row.underlying_barring, row.underlying_reason)


async def _patch(http, product_id, status, reason="customer reported the phone stolen"):
    return await http.patch(f"{PRODUCT}/{product_id}", json={"status": status, "statusReason": reason}, headers=SUPPORT)


async def test_support_suspends_and_restores_a_service_with_history_audit_and_events(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    async with running_worker(settings) as client, api(client, settings) as http:
        response = await _patch(http, product.product_id, "suspended")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "suspended"
        assert response.json()["statusReason"] == "suspended by staff: customer reported the phone stolen"
        assert await barring(oss_http, product.msisdn) == "full"
        # Suspending again is a no-op: same answer, no second change.
        again = await _patch(http, product.product_id, "suspended", "twice")
        assert again.status_code == 200 and again.json()["status"] == "suspended"

        restored = await _patch(http, product.product_id, "active", "phone found again")
        assert restored.status_code == 200, restored.text
        assert restored.json()["status"] == "active" and restored.json()["statusReason"] is None
        assert await barring(oss_http, product.msisdn) == "none"

    history = _history(db_url, product.product_id)
    assert [h[:3] for h in history] == [("active", "suspended", "manual"), ("suspended", "active", "manual")]
    assert all(h[3] not in ("", "system") for h in history)  # who did it
    kinds = [e.kind for e in events(db_url, account.account_id)]
    assert kinds.count("service.suspended_by_staff") == 1 and kinds.count("service.restored_by_staff") == 1
    with session_scope(db_url) as session:
        entries = list(session.exec(select(AuditLog).where(AuditLog.resource_id == product.product_id, AuditLog.action.in_(["product.suspend", "product.restore"]))
                                    .order_by(AuditLog.id)))
        assert [(e.action, e.reason, e.actor_role, e.before["status"], e.after["status"]) for e in entries] == [
            ("product.suspend", "customer reported the phone stolen", "support", "active", "suspended"),
            ("product.restore", "phone found again", "support", "suspended", "active"),
        ]


async def test_a_suspension_waits_out_an_oss_outage(running_worker, make_settings, db_url, oss_http, monkeypatch, ts_env):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    await oss_http.post("/sim/rules", json={"match": {"msisdn": product.msisdn}, "behaviour": "unavailable"})
    monkeypatch.setattr(products_router, "SERVICE_STATE_WAIT_S", 1.0)
    async with running_worker(settings) as client, api(client, settings) as http:
        response = await _patch(http, product.product_id, "suspended")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "active"  # not yet: the OSS has not confirmed
        # A second request while the first is still retrying is refused, not queued behind it.
        busy = await _patch(http, product.product_id, "suspended")
        assert busy.status_code == 409 and busy.json()["code"] == "service_state_change_in_progress"
        await oss_http.delete("/sim/rules")
        # Skip the retry backoff (at most 5 minutes): the next attempt goes through.
        await ts_env.sleep(timedelta(minutes=6))
        await eventually(lambda: products(db_url, account.account_id)[0].status == "suspended")
        assert await barring(oss_http, product.msisdn) == "full"


async def test_dunning_neither_lifts_nor_weakens_a_manual_suspension_and_restore_keeps_dunnings_bar(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"])
    manual, other = account.products
    dunning_bar = _activity(settings, "dunning_set_barring")

    def bar(scope, step):
        return BarringRequest(episode_id="ep-1", billing_account_id=account.account_id, barring=scope, key=f"ep-1:{step}", reason=f"test {step}")

    async with running_worker(settings) as client, api(client, settings) as http:
        assert (await _patch(http, manual.product_id, "suspended")).status_code == 200
        # Dunning bars outgoing: the other line is barred, the manually suspended one stays fully barred.
        await dunning_bar(bar("outgoing", "l2"))
        assert await barring(oss_http, manual.msisdn) == "full" and await barring(oss_http, other.msisdn) == "outgoing"
        assert _hold(db_url, manual.product_id) == ("outgoing", "barred for arrears (outgoing)")
        # The episode ends and lifts every bar: not the manual suspension.
        await dunning_bar(bar("none", "lift-1"))
        assert await barring(oss_http, other.msisdn) == "none"
        assert await barring(oss_http, manual.msisdn) == "full"
        by_id = {p.id: p for p in products(db_url, account.account_id)}
        assert by_id[manual.product_id].status == "suspended" and by_id[manual.product_id].status_reason.startswith("suspended by staff")
        assert _hold(db_url, manual.product_id) == ("none", None)
        # A new episode bars fully; restoring the manual suspension leaves dunning's bar in place.
        await dunning_bar(bar("full", "l3"))
        restored = await _patch(http, manual.product_id, "active", "customer cleared")
        assert restored.status_code == 200
        assert restored.json()["status"] == "suspended" and restored.json()["statusReason"] == "barred for arrears (full)"
        assert await barring(oss_http, manual.msisdn) == "full"
        assert _hold(db_url, manual.product_id) is None
        # Now only dunning bars it: restoring through this API is refused, and the episode's lift restores it.
        refused = await _patch(http, manual.product_id, "active", "again")
        assert refused.status_code == 409 and refused.json()["code"] == "not_manually_suspended"
        await dunning_bar(bar("none", "lift-2"))
        assert await barring(oss_http, manual.msisdn) == "none"
        assert {p.status for p in products(db_url, account.account_id)} == {"active"}
    sources = [h[2] for h in _history(db_url, manual.product_id)]
    assert sources == ["manual", "manual", "dunning"]  # the underlying bars while held changed no status


async def test_a_dunning_bar_under_a_later_manual_suspension_comes_back_on_restore(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    dunning_bar = _activity(settings, "dunning_set_barring")
    await dunning_bar(BarringRequest(episode_id="ep-2", billing_account_id=account.account_id, barring="outgoing", key="ep-2:l2", reason="level 2"))
    async with running_worker(settings) as client, api(client, settings) as http:
        assert (await _patch(http, product.product_id, "suspended")).json()["status"] == "suspended"
        assert await barring(oss_http, product.msisdn) == "full"
        assert _hold(db_url, product.product_id) == ("outgoing", "barred for arrears (outgoing)")
        restored = (await _patch(http, product.product_id, "active", "done")).json()
        assert (restored["status"], restored["statusReason"]) == ("suspended", "barred for arrears (outgoing)")
        assert await barring(oss_http, product.msisdn) == "outgoing"


async def test_nightly_reconciliation_reports_and_repairs_drift_and_a_second_run_finds_nothing(running_worker, make_settings, db_url, oss_http, oss_sim):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"])
    drifted, suspended = account.products
    oss = HttpOssClient(oss_sim.url)
    async with running_worker(settings) as client, api(client, settings) as http:
        assert (await _patch(http, suspended.product_id, "suspended")).status_code == 200
        # Someone in the network operations centre bars one line and unbars the other, outside o2c.
        await oss.set_barring(external_id=f"noc:{uuid.uuid4()}", msisdn=drifted.msisdn, barring="full")
        await oss.set_barring(external_id=f"noc:{uuid.uuid4()}", msisdn=suspended.msisdn, barring="none")
        await eventually(lambda: _both_drifted(oss_http, drifted.msisdn, suspended.msisdn))

        def run(repair: bool = True):
            return client.execute_workflow(OSS_RECONCILIATION_WORKFLOW, OssReconciliationInput(repair=repair), id=f"oss-reconciliation-{uuid.uuid4()}",
                                           task_queue=settings.task_queue, result_type=OssReconciliationReport)

        # Report only: the differences are found and left alone.
        looked = await run(repair=False)
        assert sorted((d.msisdn, d.repaired) for d in looked.drifts if d.msisdn in account.msisdns) == sorted((m, False) for m in account.msisdns)
        assert await barring(oss_http, drifted.msisdn) == "full"

        report = await run()
        mine = {d.msisdn: d for d in report.drifts if d.msisdn in account.msisdns}
        assert {m: (d.expected, d.actual, d.repaired) for m, d in mine.items()} == {
            drifted.msisdn: ("none", "full", True), suspended.msisdn: ("full", "none", True)}
        assert report.checked >= 2 and report.repaired >= 2
        assert await barring(oss_http, drifted.msisdn) == "none"
        assert await barring(oss_http, suspended.msisdn) == "full"
        drift_events = [e for e in events(db_url, account.account_id) if e.kind == "service.oss_drift"]
        assert sorted((e.data["msisdn"], e.data["repaired"]) for e in drift_events) == sorted(
            [(m, False) for m in account.msisdns] + [(m, True) for m in account.msisdns])

        second = await run()
        assert [d for d in second.drifts if d.msisdn in account.msisdns] == []


async def _both_drifted(oss_http, barred, unbarred) -> bool:
    return await barring(oss_http, barred) == "full" and await barring(oss_http, unbarred) == "none"


async def test_the_nightly_reconciliation_schedule_is_created_once(temporal_cli):
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from adapters.temporal.schedules import ensure_oss_reconciliation_schedule
    from workflows.service_state import OSS_RECONCILIATION_SCHEDULE_ID

    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_cli, data_converter=pydantic_data_converter,
                                                dev_server_log_level="error")
    try:
        assert await ensure_oss_reconciliation_schedule(env.client, "o2c") is True
        assert await ensure_oss_reconciliation_schedule(env.client, "o2c") is False
        described = await env.client.get_schedule_handle(OSS_RECONCILIATION_SCHEDULE_ID).describe()
        [calendar] = described.schedule.spec.calendars  # 03:30 every day, Berlin time
        assert [(r.start, r.end) for r in calendar.hour] == [(3, 3)] and [(r.start, r.end) for r in calendar.minute] == [(30, 30)]
        assert described.schedule.spec.time_zone_name == "Europe/Berlin"
        assert described.schedule.action.workflow == OSS_RECONCILIATION_WORKFLOW
        assert described.schedule.action.task_queue == "o2c"
    finally:
        await env.shutdown()


async def test_the_expected_lines_are_read_page_by_page(make_settings, db_url, oss_http):
    settings = make_settings()
    await open_account(db_url, oss_http, ["mobile-s", "mobile-s", "mobile-l"])
    expected = _activity(settings, "oss_reconciliation_expected")
    everything = expected(None, 100_000)
    pages, after = [], None
    while page := expected(after, 2):
        assert len(page) <= 2
        pages += page
        after = page[-1].product_id
    assert pages == everything and len(everything) >= 3
    assert [line.product_id for line in everything] == sorted(line.product_id for line in everything)


async def test_a_spending_cap_bars_around_a_manual_suspension_and_its_history_says_spending(running_worker, make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"])
    held, free = account.products
    cap = _activity(settings, "set_service_barring")
    async with running_worker(settings) as client, api(client, settings) as http:
        assert (await _patch(http, held.product_id, "suspended")).status_code == 200
        await cap(account.account_id, "outgoing", "spending:test", "spending")
        assert await barring(oss_http, free.msisdn) == "outgoing" and await barring(oss_http, held.msisdn) == "full"
        assert _hold(db_url, held.product_id) == ("outgoing", "outgoing use barred: spending limit reached")
        restored = (await _patch(http, held.product_id, "active", "cleared")).json()
        assert (restored["status"], restored["statusReason"]) == ("suspended", "outgoing use barred: spending limit reached")
        assert await barring(oss_http, held.msisdn) == "outgoing"
        await cap(account.account_id, "none", "spending-lifted:test", "spending")
        assert {p.status for p in products(db_url, account.account_id)} == {"active"}
        assert await barring(oss_http, held.msisdn) == "none"
    assert [h[:3] for h in _history(db_url, free.product_id)] == [("active", "suspended", "spending"), ("suspended", "active", "spending")]
    assert [h[2] for h in _history(db_url, held.product_id)] == ["manual", "manual", "spending"]
