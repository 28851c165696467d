"""Spending limits seen from ingestion: a crossed threshold is written to the outbox once, in the same
transaction as the usage, and the relay hands it to the billing-account workflow at least once."""
from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import func
from sqlmodel import col, select

from adapters.temporal.outbox_relay import OutboxRelay
from config.catalog_loader import load_catalog
from config.profiles import load_billing_profiles
from config.settings import REPO_ROOT
from domain.spending import SpendingLimit
from persistence.db import session_scope
from persistence.tables import BillingAccount, OutboxMessage, Product, UsageRecord
from services.billing_accounts import set_spending_limit
from services.spending_monitor import SPENDING_TOPIC
from services.usage_ingest import ingest, parse_tmf_usage
from tests.support.records import create_billing_account, create_customer

CATALOG = load_catalog(REPO_ROOT / "catalog" / "catalog.yaml")
PROFILES = load_billing_profiles()
UTC = timezone.utc
START = datetime(2026, 1, 1, tzinfo=UTC)
# A call to the USA is priced per minute outside any allowance (tariff de-mobile-2026).
USA = "+12125550123"


def new_account(db_url: str) -> tuple[str, str]:
    account_id = create_billing_account(db_url, create_customer(db_url))
    msisdn = f"49171{random.randrange(10**7, 10**8)}"
    with session_scope(db_url) as session:
        customer_id = session.get(BillingAccount, account_id).customer_id
        session.add(Product(id=str(uuid.uuid4()), customer_id=customer_id, billing_account_id=account_id, offering_id="mobile-s",
                            offering_version="1", catalog_version=CATALOG.version, name="mobile-s", msisdn=msisdn, status="active",
                            order_id=str(uuid.uuid4()), order_item_id="1", start_date=START, billing_start=START))
    return account_id, msisdn


def call(msisdn: str, record_id: str, minutes: int = 10) -> dict:
    return {"id": record_id, "usageType": "voice", "usageDate": "2026-02-10T10:00:00+01:00",
            "usageCharacteristic": [{"name": "msisdn", "value": f"+{msisdn}"}, {"name": "destination", "value": USA},
                                    {"name": "duration", "value": minutes * 60}]}


def ingest_calls(db_url: str, *records: dict) -> None:
    with session_scope(db_url) as session:
        report = ingest(session, [parse_tmf_usage(r) for r in records], CATALOG, PROFILES, now=datetime(2026, 2, 11, tzinfo=UTC))
    assert {r.status for r in report.results} <= {"accepted", "duplicate"}, [r.reason for r in report.results]


def messages(db_url: str, account_id: str) -> list[dict]:
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.topic == SPENDING_TOPIC).order_by(col(OutboxMessage.id)))
        return [m.payload for m in rows if m.payload["billingAccountId"] == account_id]


def cycle_cost(db_url: str, account_id: str) -> Decimal:
    with session_scope(db_url) as session:
        micros = session.exec(select(func.sum(UsageRecord.amount_micros)).where(UsageRecord.billing_account_id == account_id)).one()
    return Decimal(micros) / 1_000_000


def test_thresholds_are_written_once_each_as_the_cycle_cost_crosses_them(db_url):
    account_id, msisdn = new_account(db_url)
    ingest_calls(db_url, call(msisdn, f"a-{uuid.uuid4()}"))
    one_call = cycle_cost(db_url, account_id)
    assert one_call > 0
    assert messages(db_url, account_id) == []  # no limit yet: nothing to report

    # Limit = 2.4 calls: two calls are 83 % (past 80 %), the third is 125 % (past 100 %).
    limit = (one_call * Decimal("2.4")).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    with session_scope(db_url) as session:
        set_spending_limit(session, account_id, SpendingLimit(amount=limit, hard_cap=True))

    second = call(msisdn, f"b-{uuid.uuid4()}")
    ingest_calls(db_url, second)
    [eighty] = messages(db_url, account_id)
    assert eighty["thresholdPercent"] == 80
    assert Decimal(eighty["usageCost"]) == 2 * one_call
    assert Decimal(eighty["limit"]) == limit and eighty["hardCap"] is True

    ingest_calls(db_url, second)  # the same record again: a duplicate, nothing new to report
    assert len(messages(db_url, account_id)) == 1

    ingest_calls(db_url, call(msisdn, f"c-{uuid.uuid4()}"))
    found = messages(db_url, account_id)
    assert [m["thresholdPercent"] for m in found] == [80, 100]
    assert Decimal(found[1]["usageCost"]) == 3 * one_call

    ingest_calls(db_url, call(msisdn, f"d-{uuid.uuid4()}"))  # still past 100 %: each threshold once
    assert len(messages(db_url, account_id)) == 2


def test_an_account_without_limit_gets_no_messages(db_url):
    account_id, msisdn = new_account(db_url)
    ingest_calls(db_url, *(call(msisdn, f"x-{uuid.uuid4()}", minutes=120) for _ in range(3)))
    assert cycle_cost(db_url, account_id) > 10
    assert messages(db_url, account_id) == []


def test_the_relay_delivers_each_message_and_retries_a_failed_delivery_later(db_url):
    account_id, msisdn = new_account(db_url)
    with session_scope(db_url) as session:
        set_spending_limit(session, account_id, SpendingLimit(amount=Decimal("0.50")))
    ingest_calls(db_url, call(msisdn, f"r-{uuid.uuid4()}"))
    assert [m["thresholdPercent"] for m in messages(db_url, account_id)] == [80, 100]

    clock = [datetime(2026, 2, 11, 12, 0, tzinfo=UTC)]
    received: list[dict] = []
    fail = [True]

    async def handler(payload: dict) -> None:
        if payload["billingAccountId"] != account_id:
            return  # another test's message in the shared database
        if fail[0]:
            raise ConnectionError("temporal unreachable")
        received.append(payload)

    relay = OutboxRelay(db_url, {SPENDING_TOPIC: handler}, batch_size=10_000, clock=lambda: clock[0])
    asyncio.run(relay.deliver_due())
    assert received == []
    with session_scope(db_url) as session:
        mine = [m for m in session.exec(select(OutboxMessage)) if m.payload.get("billingAccountId") == account_id]
    assert all(m.attempts == 1 and m.delivered_at is None and "temporal unreachable" in m.last_error for m in mine)
    assert all(m.next_attempt_at == clock[0] + timedelta(seconds=2) for m in mine)

    fail[0] = False
    asyncio.run(relay.deliver_due())  # not due yet: the back-off holds it
    assert received == []

    clock[0] += timedelta(seconds=3)
    asyncio.run(relay.deliver_due())
    assert [p["thresholdPercent"] for p in received] == [80, 100]
    asyncio.run(relay.deliver_due())  # delivered once: not again
    assert len(received) == 2
