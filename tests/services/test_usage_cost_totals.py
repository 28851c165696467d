"""The running usage cost on the allowance counters (usage_micros, roaming_data_micros) and the EU
roaming data cap.

The cost moves in the transaction that stores or re-rates usage, by the API and by CDR files, so it
always equals the sum over the period's usage_record rows; its roaming part counts only data rated
in zones outside roam-like-at-home. The roaming data cap (domain.spending.EU_ROAMING_DATA_CAP,
EUR 50) reports 80 % and 100 % once each, under its own keys, for every account that has not opted out.
"""
from __future__ import annotations

import copy
import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import yaml
from sqlalchemy import func
from sqlmodel import col, select

from config.tariff_loader import DEFAULT_TARIFFS_PATH
from domain.spending import EU_ROAMING_DATA_CAP, SpendingLimit
from domain.tariff import TariffBook, parse_tariff_book
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, BillingAccount, OutboxMessage, Product, UsageRecord
from services.billing_accounts import set_spending_limit
from services.spending_monitor import SPENDING_TOPIC
from services.usage_ingest import ingest, parse_tmf_usage
from services.usage_rerate import rerate_period
from tests.mediation.test_bulk import mixed_lines
from tests.mediation.test_importer import CATALOG, NOW, PGW_HEADER, PROFILES, run_import, subscriber, uid, write
from tests.services.test_spending_limits_outbox import call, new_account

UTC = timezone.utc
CAPPED = ("world1", "world2")  # de-mobile-2026's zones outside roam-like-at-home


def totals(db_url: str, account_id: str) -> dict[datetime, tuple[int, int]]:
    """The running cost per period: the account's products' counters, added up."""
    with session_scope(db_url) as session:
        found: dict[datetime, tuple[int, int]] = {}
        rows = session.exec(select(AllowanceCounter).join(Product, col(Product.id) == col(AllowanceCounter.product_id))
                            .where(Product.billing_account_id == account_id)).all()
        for row in rows:
            amount, roaming = found.get(row.period_start, (0, 0))
            found[row.period_start] = (amount + row.usage_micros, roaming + row.roaming_data_micros)
        return found


def sums(db_url: str, account_id: str) -> dict[datetime, tuple[int, int]]:
    """What the totals must be: summed over the stored usage."""
    with session_scope(db_url) as session:
        found: dict[datetime, tuple[int, int]] = {}
        for record in session.exec(select(UsageRecord).where(UsageRecord.billing_account_id == account_id)):
            amount, roaming = found.get(record.period_start, (0, 0))
            capped = record.usage_type == "data" and record.zone in CAPPED
            found[record.period_start] = (amount + record.amount_micros, roaming + (record.amount_micros if capped else 0))
        return found


def book_with_world1_data_price(price: str) -> TariffBook:
    """The shipped book plus a corrected de-mobile-2026 (version 2) with another data price in world zone 1."""
    data = yaml.safe_load(DEFAULT_TARIFFS_PATH.read_text(encoding="utf-8"))
    corrected = copy.deepcopy(data["tariffs"][0])
    corrected["version"] = "2"
    [zone] = [z for z in corrected["roaming"]["zones"] if z["id"] == "world1"]
    zone["data"]["price"] = price
    data["tariffs"].append(corrected)
    return parse_tariff_book(data)


def test_the_totals_follow_the_usage_stored_by_files_and_the_api_and_re_rating(db_url, tmp_path):
    rng = random.Random(7)
    sub = subscriber(db_url)
    voice, data = mixed_lines(sub.msisdn, rng, NOW - timedelta(days=12))
    run_import(db_url, write(tmp_path, "Master.csv", voice), source=f"v{uid()[:8]}", timezone="Europe/Berlin", batch_size=5)
    run_import(db_url, write(tmp_path, "pgw.csv", [PGW_HEADER, *data]), source=f"d{uid()[:8]}", batch_size=7)
    expected = sums(db_url, sub.account_id)
    assert totals(db_url, sub.account_id) == expected
    assert all(amount > 0 for amount, _ in expected.values())
    assert any(roaming > 0 for _, roaming in expected.values())  # Switzerland (world1) is in the file
    [(period, (amount, roaming))] = expected.items()
    assert roaming < amount

    # Data usage by the API into the same period adds to the same row.
    with session_scope(db_url) as session:
        report = ingest(session, [parse_tmf_usage({
            "id": f"api-{uid()}", "usageType": "data", "usageDate": (NOW - timedelta(hours=2)).isoformat(),
            "usageCharacteristic": [{"name": "msisdn", "value": sub.msisdn}, {"name": "volume", "value": 3_000_000},
                                    {"name": "roamingCountry", "value": "CH"}]})], CATALOG, PROFILES, now=NOW)
    assert [r.status for r in report.results] == ["accepted"]
    after_api = totals(db_url, sub.account_id)
    assert after_api == sums(db_url, sub.account_id)
    assert after_api[period][1] > roaming and after_api[period][0] - amount == after_api[period][1] - roaming

    # A tariff correction doubles world1's data price: re-rating moves the totals with the records.
    with session_scope(db_url) as session:
        rerated = rerate_period(session, sub.product_id, period, book_with_world1_data_price("1.98"), catalog=CATALOG)
    assert rerated.applied
    corrected = totals(db_url, sub.account_id)
    assert corrected == sums(db_url, sub.account_id)
    assert corrected[period][1] == 2 * after_api[period][1]


def data_roaming(msisdn: str, country: str, megabytes: int, record_id: str | None = None) -> dict:
    return {"id": record_id or f"r-{uuid.uuid4()}", "usageType": "data", "usageDate": "2026-02-10T10:00:00+01:00",
            "usageCharacteristic": [{"name": "msisdn", "value": f"+{msisdn}"}, {"name": "volume", "value": megabytes * 1_000_000},
                                    {"name": "roamingCountry", "value": country}]}


def ingest_records(db_url: str, *records: dict) -> None:
    with session_scope(db_url) as session:
        report = ingest(session, [parse_tmf_usage(r) for r in records], CATALOG, PROFILES, now=datetime(2026, 2, 11, tzinfo=UTC))
    assert {r.status for r in report.results} <= {"accepted", "duplicate"}, [r.reason for r in report.results]


def outbox(db_url: str, account_id: str) -> list[tuple[str, dict]]:
    with session_scope(db_url) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.topic == SPENDING_TOPIC).order_by(col(OutboxMessage.id)))
        return [(m.key, m.payload) for m in rows if m.payload["billingAccountId"] == account_id]


def roaming_cost(db_url: str, account_id: str) -> Decimal:
    with session_scope(db_url) as session:
        micros = session.exec(select(func.sum(UsageRecord.amount_micros)).where(
            UsageRecord.billing_account_id == account_id, UsageRecord.usage_type == "data", col(UsageRecord.zone).in_(CAPPED))).one()
    return Decimal(micros or 0) / 1_000_000


def test_the_roaming_data_cap_reports_80_and_100_percent_of_roaming_data_outside_the_eu_once_each(db_url):
    account_id, msisdn = new_account(db_url)  # no spending limit of its own
    # Large EU roaming data (roam like at home) and expensive calls to the USA count for nothing here.
    ingest_records(db_url, data_roaming(msisdn, "FR", 3_000), call(msisdn, f"c-{uuid.uuid4()}", minutes=300))
    ingest_records(db_url, data_roaming(msisdn, "CH", 30))
    assert Decimal(0) < roaming_cost(db_url, account_id) < EU_ROAMING_DATA_CAP.amount * Decimal("0.8")
    assert outbox(db_url, account_id) == []

    ingest_records(db_url, data_roaming(msisdn, "CH", 12))
    cost = roaming_cost(db_url, account_id)
    assert EU_ROAMING_DATA_CAP.amount * Decimal("0.8") <= cost < EU_ROAMING_DATA_CAP.amount
    [(key, eighty)] = outbox(db_url, account_id)
    assert key.startswith(f"roaming-data:{account_id}:")
    assert eighty["kind"] == "roamingData" and eighty["thresholdPercent"] == 80 and eighty["hardCap"] is False
    assert Decimal(eighty["usageCost"]) == cost and Decimal(eighty["limit"]) == Decimal("50.00")

    late = data_roaming(msisdn, "US", 10)
    ingest_records(db_url, late)
    ingest_records(db_url, late)  # a duplicate: counted once, reported once
    found = [payload for _, payload in outbox(db_url, account_id)]
    assert [(p["kind"], p["thresholdPercent"]) for p in found] == [("roamingData", 80), ("roamingData", 100)]
    assert Decimal(found[1]["usageCost"]) == roaming_cost(db_url, account_id) >= EU_ROAMING_DATA_CAP.amount

    ingest_records(db_url, data_roaming(msisdn, "CH", 5))  # past 100 %: nothing new
    assert len(outbox(db_url, account_id)) == 2


def test_an_account_that_opted_out_of_the_roaming_cap_is_not_told(db_url):
    account_id, msisdn = new_account(db_url)
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        account.roaming_data_cap_opt_out = True
        session.add(account)
    ingest_records(db_url, data_roaming(msisdn, "CH", 80))
    assert roaming_cost(db_url, account_id) > EU_ROAMING_DATA_CAP.amount
    assert outbox(db_url, account_id) == []


def test_the_spending_limit_and_the_roaming_cap_are_reported_apart(db_url):
    account_id, msisdn = new_account(db_url)
    with session_scope(db_url) as session:
        set_spending_limit(session, account_id, SpendingLimit(amount=Decimal("60.00"), hard_cap=True))
    ingest_records(db_url, data_roaming(msisdn, "CH", 62))  # about 61 EUR: past both limits' 100 %
    found = sorted((p["kind"], p["thresholdPercent"], p["limit"]) for _, p in outbox(db_url, account_id))
    assert found == [("roamingData", 80, "50.00"), ("roamingData", 100, "50.00"), ("spending", 80, "60.00"), ("spending", 100, "60.00")]
    [(amount, roaming)] = totals(db_url, account_id).values()
    assert amount == roaming > 60_000_000
