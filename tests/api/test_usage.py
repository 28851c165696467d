"""TMF635 usage: validation, de-duplication, guiding, allowance-aware rating, rejected records."""
from __future__ import annotations

import time
import uuid
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import select

from persistence.db import session_scope
from persistence.tables import AllowanceCounter, UsageRecord
from tests.api.conftest import (
    CRM,
    REJECTED_PATH,
    SUPPORT,
    USAGE_PATH,
    insert_product,
    make_account,
    new_msisdn,
    utc,
)


# mobile-s is rated with tariff de-mobile-2026 (catalog/tariffs.yaml): voice and SMS need the called
# number, so records call a German mobile number unless a test says otherwise.
GERMAN_MOBILE = "+4915112345678"


def record(msisdn: str, usage_type: str = "voice", when: str = "2026-02-10T10:00:00+01:00", record_id: str | None = None,
           destination: str | None = GERMAN_MOBILE, **quantity) -> dict:
    characteristics = [{"name": "msisdn", "value": f"+{msisdn}"}] + [{"name": k, "value": v} for k, v in quantity.items()]
    if usage_type in ("voice", "sms") and destination is not None:
        characteristics.append({"name": "destination", "value": destination})
    return {"id": record_id or f"cdr-{uuid.uuid4()}", "usageType": usage_type, "usageDate": when, "usageCharacteristic": characteristics}


def rated(usage: dict) -> dict:
    return usage["ratedProductUsage"][0]


async def subscriber(client, db_url, offering_id: str = "mobile-s") -> tuple[dict, str, str]:
    """An account (Europe/Berlin, cycle day 1) with one active product since December 2025."""
    account = await make_account(client)
    msisdn = new_msisdn()
    product_id = insert_product(db_url, account, msisdn, offering_id=offering_id, start=utc(2025, 12, 1))
    return account, msisdn, product_id


async def test_single_record_is_rated_and_a_repeat_is_a_no_op(client, db_url):
    account, msisdn, product_id = await subscriber(client, db_url)
    body = record(msisdn, duration=61)
    response = await client.post(USAGE_PATH, headers=CRM, json=body)
    assert response.status_code == 201, response.text
    usage = response.json()
    assert usage["id"] == body["id"]
    assert usage["@type"] == "Usage"
    assert usage["status"] == "rated"
    assert usage["usageDate"] == "2026-02-10T09:00:00Z"
    assert {c["name"]: c["value"] for c in usage["usageCharacteristic"]} == {
        "msisdn": msisdn, "duration": 61, "destination": GERMAN_MOBILE[1:], "disposition": "ANSWERED"}
    line = rated(usage)
    assert line["isBilled"] is False
    assert line["productRef"]["id"] == product_id
    assert line["taxExcludedRatingAmount"] == {"unit": "EUR", "value": "0.00"}
    # 61 s = 2 started minutes on the invoice (the tariff bills 60 s, then per second: 61 s from the allowance).
    assert (line["@o2cUnits"], line["@o2cAllowanceUnits"], line["@o2cChargeableUnits"]) == (2, 2, 0)
    assert usage["billingAccount"]["id"] == account["id"]
    assert usage["billingPeriodStart"] == "2026-01-31T23:00:00Z"  # 1 February, Berlin midnight

    repeat = await client.post(USAGE_PATH, headers=CRM, json=body)
    assert repeat.status_code == 200
    assert repeat.json() == usage
    assert (await client.get(f"{USAGE_PATH}/{body['id']}", headers=SUPPORT)).json() == usage
    with session_scope(db_url) as session:
        counter = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)).one()
    assert counter.voice_minutes == 2  # charged once, not twice


async def test_allowance_straddle_splits_free_and_charged_units(client, db_url):
    _, msisdn, _ = await subscriber(client, db_url)  # mobile-s: 100 SMS included, then 0.09 each
    first = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "sms", messages=99))
    assert rated(first.json())["taxExcludedRatingAmount"]["value"] == "0.00"
    straddle = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "sms", messages=3))
    line = rated(straddle.json())
    assert (line["@o2cAllowanceUnits"], line["@o2cChargeableUnits"]) == (1, 2)
    assert line["taxExcludedRatingAmount"] == {"unit": "EUR", "value": "0.18"}
    assert line["usageRatingTag"] == "usage"

    # The next period (1 March in Berlin is 28 Feb 23:00 UTC) starts with a fresh allowance.
    march = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "sms", when="2026-02-28T23:30:00Z", messages=5))
    assert march.json()["billingPeriodStart"] == "2026-02-28T23:00:00Z"
    assert rated(march.json())["taxExcludedRatingAmount"]["value"] == "0.00"


async def test_batch_rates_in_usage_order_and_reports_each_record(client, db_url):
    _, msisdn, _ = await subscriber(client, db_url)
    stored = record(msisdn, duration=60, when="2026-02-01T08:00:00+01:00")
    assert (await client.post(USAGE_PATH, headers=CRM, json=stored)).status_code == 201

    late = record(msisdn, duration=99 * 60, when="2026-02-20T12:00:00+01:00")  # listed first, happened last
    early = record(msisdn, duration=180, when="2026-02-05T12:00:00+01:00")
    unknown = record(new_msisdn(), duration=60)
    before_start = record(msisdn, duration=60, when="2025-11-15T12:00:00+01:00")
    naive = record(msisdn, duration=60, when="2026-02-10T10:00:00")
    no_id = record(msisdn, duration=60)
    del no_id["id"]
    batch = [late, stored, early, dict(late), unknown, before_start, naive, no_id, "not an object"]

    response = await client.post(USAGE_PATH, headers=CRM, json=batch)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == (2, 2, 5)
    statuses = [(r["id"], r["status"], r.get("reasonCode")) for r in summary["results"]]
    assert statuses == [
        (late["id"], "accepted", None),
        (stored["id"], "duplicate", None),
        (early["id"], "accepted", None),
        (late["id"], "duplicate", None),
        (unknown["id"], "rejected", "unknown_subscriber"),
        (before_start["id"], "rejected", "outside_subscription"),
        (naive["id"], "rejected", "invalid_record"),
        (None, "rejected", "invalid_record"),
        (None, "rejected", "invalid_record"),
    ]
    assert "usageDate" in summary["results"][6]["reason"]

    # 60 s (stored) + 180 s (early) were used before the late 99-minute call (5940 s, Friday 12:00,
    # peak): 6000 - 240 = 5760 s free, 180 s charged at the peak 0.09/min = 0.27; in started
    # minutes 99 units, 3 chargeable, 96 from the allowance.
    late_rated = rated((await client.get(f"{USAGE_PATH}/{late['id']}", headers=CRM)).json())
    assert (late_rated["@o2cAllowanceUnits"], late_rated["@o2cChargeableUnits"]) == (96, 3)
    assert late_rated["taxExcludedRatingAmount"]["value"] == "0.27"
    assert rated((await client.get(f"{USAGE_PATH}/{early['id']}", headers=CRM)).json())["@o2cChargeableUnits"] == 0

    # Every rejected record is kept with its reason and the payload as received.
    rejected = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": unknown["id"]})).json()
    assert [(r["reasonCode"], r["payload"]) for r in rejected] == [("unknown_subscriber", unknown)]
    naive_kept = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": naive["id"]})).json()
    assert naive_kept[0]["reasonCode"] == "invalid_record" and naive_kept[0]["payload"] == naive
    outside = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": before_start["id"]})).json()
    assert outside[0]["reasonCode"] == "outside_subscription"


async def test_invalid_single_record_is_422_and_kept(client, db_url):
    _, msisdn, _ = await subscriber(client, db_url)
    bad = record(msisdn, "data", when="yesterday", volume=-5)
    bad["usageCharacteristic"][0]["value"] = "012345"
    bad["usageType"] = "fax"
    response = await client.post(USAGE_PATH, headers=CRM, json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_record"
    assert {e["field"]: e["code"] for e in body["errors"]} == {
        "usageType": "unknown_usage_type",
        "usageDate": "invalid_datetime",
        "usageCharacteristic[0].value": "invalid_msisdn",
    }
    kept = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": bad["id"]})).json()
    assert len(kept) == 1 and kept[0]["payload"] == bad

    voice_without_duration = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn))
    assert {e["code"] for e in voice_without_duration.json()["errors"]} == {"missing_duration"}
    float_volume = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "data", volume=1.5))
    assert {e["code"] for e in float_volume.json()["errors"]} == {"invalid_quantity"}

    unknown = await client.post(USAGE_PATH, headers=CRM, json=record(new_msisdn(), duration=5))
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_subscriber"

    # rejectedUsage is for support and admin only.
    assert (await client.get(REJECTED_PATH, headers=CRM)).status_code == 403


async def test_number_recycled_to_another_product_is_guided_by_time(client, db_url):
    msisdn = new_msisdn()
    old_account = await make_account(client)
    new_account = await make_account(client)
    old = insert_product(db_url, old_account, msisdn, start=utc(2025, 12, 1), end=utc(2026, 2, 1))
    new = insert_product(db_url, new_account, msisdn, offering_id="mobile-l", start=utc(2026, 2, 1))
    january = (await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "data", when="2026-01-31T23:59:59Z", volume=1))).json()
    february = (await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, "data", when="2026-02-01T00:00:00Z", volume=1))).json()
    assert rated(january)["productRef"]["id"] == old
    assert rated(february)["productRef"]["id"] == new
    assert february["billingAccount"]["id"] == new_account["id"]

    by_account = await client.get(USAGE_PATH, headers=SUPPORT, params={"billingAccount.id": old_account["id"]})
    assert [u["id"] for u in by_account.json()] == [january["id"]]
    by_msisdn = await client.get(USAGE_PATH, headers=SUPPORT, params={"usageCharacteristic.msisdn": f"+{msisdn}"})
    assert {u["id"] for u in by_msisdn.json()} == {january["id"], february["id"]}
    assert by_msisdn.headers["X-Total-Count"] == "2"
    assert (await client.get(USAGE_PATH, headers=SUPPORT, params={"msisdn": msisdn, "status": "billed"})).json() == []


async def test_large_batch_in_one_request(client, db_url):
    account, msisdn, product_id = await subscriber(client, db_url)
    batch = [record(msisdn, "sms", when=f"2026-02-{1 + i % 27:02d}T12:00:00+01:00", messages=1) for i in range(2000)]
    started = time.monotonic()
    response = await client.post(USAGE_PATH, headers=CRM, json=batch)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["accepted"] == 2000
    assert elapsed < 10, f"2000 records took {elapsed:.1f} s"
    with session_scope(db_url) as session:
        total = session.exec(select(func.sum(UsageRecord.amount_micros)).where(UsageRecord.product_id == product_id)).one()
    # 100 SMS included, 1900 at 0.09 (de-mobile-2026, SMS to a German mobile).
    assert Decimal(total) / 1_000_000 == Decimal("171.00")

    too_big = await client.post(USAGE_PATH, headers=CRM, json=[{}] * 10_001)
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "batch_too_large"
    malformed = await client.post(USAGE_PATH, headers={**CRM, "Content-Type": "application/json"}, content=b"[{")
    assert malformed.status_code == 400


async def test_concurrent_batches_share_one_allowance_and_never_double_charge(client, db_url):
    import asyncio

    _, msisdn, product_id = await subscriber(client, db_url)
    shared = [record(msisdn, "sms", messages=10) for _ in range(5)]  # sent by every batch
    batches = [shared + [record(msisdn, "sms", messages=10) for _ in range(5)] for _ in range(4)]
    responses = await asyncio.gather(*(client.post(USAGE_PATH, headers=CRM, json=b) for b in batches))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sum(r.json()["accepted"] for r in responses) == 25  # 5 shared + 4 x 5 own
    assert sum(r.json()["duplicates"] for r in responses) == 15
    with session_scope(db_url) as session:
        rows = session.exec(select(UsageRecord).where(UsageRecord.product_id == product_id)).all()
        counter = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)).one()
    assert len(rows) == 25
    assert counter.sms == 100
    # 250 messages, 100 of them included.
    assert sum(r.allowance_units for r in rows) == 100
    assert sum(r.chargeable_units for r in rows) == 150
    assert sum(r.amount_micros for r in rows) == 150 * 90_000


async def test_record_that_cannot_be_rated_is_kept_and_its_retry_is_judged_again(client, db_url):
    account = await make_account(client)
    msisdn = new_msisdn()
    insert_product(db_url, account, msisdn, offering_id="mobile-gone", start=utc(2025, 12, 1))  # not in the catalog
    body = record(msisdn, duration=60)
    response = await client.post(USAGE_PATH, headers=CRM, json=[body, body])
    summary = response.json()
    # The second copy is not a "duplicate" of something that was never stored: it is rejected too.
    assert [(r["status"], r["reasonCode"]) for r in summary["results"]] == [("rejected", "rating_failed")] * 2
    kept = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": body["id"], "reasonCode": "rating_failed"})).json()
    assert len(kept) == 2
    assert (await client.get(f"{USAGE_PATH}/{body['id']}", headers=SUPPORT)).status_code == 404
