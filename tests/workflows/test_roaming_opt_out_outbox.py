"""An opt-out of the EU roaming data limit is never lost: it is written with an outbox message in the same transaction,
and the relay tells the account's workflow, which lifts this cycle's roaming data barring, even when Temporal was away
at the time (the message stays in the outbox and is delivered, with back-off, when the relay runs again)."""
from __future__ import annotations

import socket
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlmodel import select
from temporalio.client import Client, RetryConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from adapters.temporal.client import WorkflowGateway
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from persistence.db import session_scope
from persistence.tables import OutboxMessage
from services import billing_accounts
from services.billing_accounts import ROAMING_OPT_OUT_TOPIC
from tests.support.billing import eventually, events, local_midnight, open_account, pin_clock
from workflows.messages import SpendingThresholdCrossed

INVENTORY = "/tmf-api/serviceInventory/v4/service"


def _roaming_barred(document: dict) -> bool:
    return {c["name"]: c["value"] for c in document["serviceCharacteristic"]}["roamingDataBarred"]


async def _line_roaming_barred(oss_http, msisdn: str) -> bool:
    return _roaming_barred((await oss_http.get(f"{INVENTORY}/{msisdn}")).json())


def _kinds(db_url: str, account_id: str, kind: str) -> list:
    return [e for e in events(db_url, account_id) if e.kind == kind]


def _messages(db_url: str, account_id: str) -> list[OutboxMessage]:
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.topic == ROAMING_OPT_OUT_TOPIC).order_by(OutboxMessage.id))
        return [m for m in rows if m.payload["billingAccountId"] == account_id]


def _opt_out(db_url: str, account_id: str, opt_out: bool = True) -> bool:
    with session_scope(db_url) as session:
        return billing_accounts.set_roaming_data_cap_opt_out(session, account_id, opt_out)[1]


async def _unreachable_temporal() -> Client:
    """A client of a Temporal that is not there (nothing listens on the port): every call fails."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return await Client.connect(f"127.0.0.1:{port}", lazy=True, data_converter=pydantic_data_converter, retry_config=RetryConfig(max_retries=0),
                                connect_timeout=timedelta(seconds=1))


async def test_an_opt_out_while_temporal_is_away_lifts_the_roaming_barring_when_the_relay_runs_again(running_worker, make_settings, db_url,
                                                                                                     oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method="4242424242424242")
    msisdn = account.msisdns[0]
    async with running_worker(settings) as client:
        gateway = WorkflowGateway(client, settings.task_queue)
        await gateway.product_activated(account.account_id, account.customer_id, account.products[0])
        await gateway.spending_threshold(account.account_id, SpendingThresholdCrossed(
            period_start=local_midnight(date(start.year, 11, 15)), threshold_percent=100, usage_cost=Decimal("50.00"), limit=Decimal("50.00"),
            hard_cap=False, kind="roamingData"))
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_barred")) == 1)
        assert await _line_roaming_barred(oss_http, msisdn)

        assert _opt_out(db_url, account.account_id)  # committed while Temporal is away: nobody signals the workflow now
        [message] = _messages(db_url, account.account_id)
        assert message.delivered_at is None and message.payload["billingAccountId"] == account.account_id

        clock = [datetime.now(timezone.utc)]
        down = OutboxRelay(db_url, {ROAMING_OPT_OUT_TOPIC: workflow_handlers(WorkflowGateway(await _unreachable_temporal(), settings.task_queue))[
            ROAMING_OPT_OUT_TOPIC]}, clock=lambda: clock[0])
        assert await down.deliver_due() == 0  # Temporal is not there
        [message] = _messages(db_url, account.account_id)
        assert (message.delivered_at, message.attempts) == (None, 1) and message.last_error and message.next_attempt_at is not None
        assert await _line_roaming_barred(oss_http, msisdn)  # still barred: nothing reached the workflow

        up = OutboxRelay(db_url, {ROAMING_OPT_OUT_TOPIC: workflow_handlers(gateway)[ROAMING_OPT_OUT_TOPIC]}, clock=lambda: clock[0])
        await up.deliver_due()
        [message] = _messages(db_url, account.account_id)
        assert (message.delivered_at, message.attempts) == (None, 1)  # backing off: its next attempt is not due yet
        clock[0] += timedelta(seconds=5)
        assert await up.deliver_due() >= 1
        [message] = _messages(db_url, account.account_id)
        assert message.delivered_at is not None
        await eventually(lambda: len(_kinds(db_url, account.account_id, "service.roaming_data_restored")) == 1)
        assert not await _line_roaming_barred(oss_http, msisdn)
        [continued] = _kinds(db_url, account.account_id, "roaming_data_cap.continued")
        assert "opted out of the roaming data limit" in continued.message
        clock[0] += timedelta(minutes=30)
        await up.deliver_due()  # delivered once: not again
    [message] = _messages(db_url, account.account_id)
    assert message.delivered_at is not None and message.attempts == 2 and message.last_error is None


async def test_only_an_opt_out_writes_a_message_and_one_for_an_account_without_a_workflow_is_settled(running_worker, make_settings, db_url,
                                                                                                     oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])  # billing never started: no workflow, nothing barred
    assert _opt_out(db_url, account.account_id)
    assert not _opt_out(db_url, account.account_id)  # no change: no second message
    assert _opt_out(db_url, account.account_id, False)  # opting back in tells the workflow nothing
    [message] = _messages(db_url, account.account_id)
    assert message.payload["reason"] == "opted out of the roaming data limit" and message.key.endswith(message.payload["requestId"])
    async with running_worker(settings) as client:
        relay = OutboxRelay(db_url, {ROAMING_OPT_OUT_TOPIC: workflow_handlers(WorkflowGateway(client, settings.task_queue))[ROAMING_OPT_OUT_TOPIC]})
        assert await relay.deliver_due() >= 1  # not retried for ever: a workflow that starts later reads the opt-out itself
    [message] = _messages(db_url, account.account_id)
    assert message.delivered_at is not None and message.last_error is None
