"""TMF635 usage rated by the rating engine: tariff de-mobile-2026 (catalog/tariffs.yaml) for mobile-s.

Prices used below (net EUR): German mobile calls 60/1 (first minute whole, then per second),
peak Mon-Fri 08:00-19:00 0.09/min, off-peak 0.05/min, in the bundle (mobile-s: 100 min = 6000 s);
roaming from world1 (CH) 1.49/min in 60 s steps, never in the bundle. February 2026: the 9th is a
Monday; accounts are in Europe/Berlin with cycle day 1, so the period starts 2026-01-31T23:00Z.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from decimal import Decimal

import yaml
from sqlmodel import select

from config.catalog_loader import load_catalog
from config.settings import Settings
from config.tariff_loader import DEFAULT_TARIFFS_PATH
from domain.tariff import TariffBook, parse_tariff_book
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, UsageRecord
from services.usage_rerate import rerate_period
from tests.api.conftest import CRM, REJECTED_PATH, SUPPORT, USAGE_PATH
from tests.api.test_usage import rated, record, subscriber

PERIOD = datetime(2026, 1, 31, 23, tzinfo=timezone.utc)
CATALOG = load_catalog(Settings().catalog_path)


def counter(db_url: str, product_id: str) -> AllowanceCounter:
    with session_scope(db_url) as session:
        return session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)).one()


def stored(db_url: str, record_id: str) -> UsageRecord:
    with session_scope(db_url) as session:
        row = session.get(UsageRecord, record_id)
        assert row is not None
        return row


def book_with_peak_price(version: str, peak_per_minute: str) -> TariffBook:
    """The shipped book plus a corrected de-mobile-2026 version with another German mobile peak price."""
    data = yaml.safe_load(DEFAULT_TARIFFS_PATH.read_text(encoding="utf-8"))
    corrected = copy.deepcopy(data["tariffs"][0])
    corrected["version"] = version
    for interval in corrected["voice"]["de_mobile"]["peak"]["intervals"]:
        interval["price_per_unit"] = peak_per_minute
    data["tariffs"].append(corrected)
    return parse_tariff_book(data)


async def post(client, body) -> dict:
    response = await client.post(USAGE_PATH, headers=CRM, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_call_from_peak_into_off_peak_is_priced_per_increment_and_names_its_tariff(client, db_url):
    _, msisdn, product_id = await subscriber(client, db_url)
    await post(client, record(msisdn, duration=6000, when="2026-02-09T10:00:00+01:00"))  # the whole allowance
    usage = await post(client, record(msisdn, duration=120, when="2026-02-10T18:59:00+01:00"))
    line = rated(usage)
    # 18:59:00-19:00:00 is the first (60 s) increment, peak: 0.09. The per-second increments from
    # 19:00:00 on are off-peak: 60 s at 0.05/min = 0.05. Total 0.14.
    assert line["taxExcludedRatingAmount"]["value"] == "0.14"
    assert line["@o2cBand"] == "peak"  # the band the call started in
    assert [(p["band"], p["units"], p["fromAllowance"], p["amountMicros"]) for p in line["@o2cParts"]] == [
        ("peak", 60, False, 90_000), ("offpeak", 60, False, 50_000)]
    assert line["@o2cTariff"] == {"id": "de-mobile-2026", "version": "1"}
    assert (line["@o2cDestinationName"], line["@o2cZone"]) == ("Germany mobile", "home")
    row = stored(db_url, usage["id"])
    assert (row.tariff_id, row.tariff_version, row.destination, row.band, row.amount_micros) == ("de-mobile-2026", "1", "4915112345678", "peak", 140_000)
    assert counter(db_url, product_id).voice_s == 6000  # nothing more from the allowance


async def test_unanswered_call_is_stored_free_and_uses_no_allowance(client, db_url):
    _, msisdn, product_id = await subscriber(client, db_url)
    body = record(msisdn, when="2026-02-10T10:00:00+01:00")
    body["usageCharacteristic"].append({"name": "disposition", "value": "NO ANSWER"})  # no duration: it never connected
    usage = await post(client, body)
    line = rated(usage)
    assert line["taxExcludedRatingAmount"]["value"] == "0.00"
    assert (line["@o2cUnits"], line["@o2cChargeableUnits"], line["@o2cParts"]) == (0, 0, [])
    assert stored(db_url, usage["id"]).disposition == "NO ANSWER"
    assert counter(db_url, product_id).voice_s == 0


async def test_allowance_running_out_mid_call(client, db_url):
    _, msisdn, product_id = await subscriber(client, db_url)
    # One batch, listed latest first: rated in time order all the same.
    running_out = record(msisdn, duration=90, when="2026-02-09T12:00:00+01:00")
    summary = await post(client, [running_out, record(msisdn, duration=5970, when="2026-02-09T10:00:00+01:00")])
    assert summary["accepted"] == 2
    line = rated((await client.get(f"{USAGE_PATH}/{running_out['id']}", headers=CRM)).json())
    # 30 s were left: the first 60 s increment is half free, half charged; the next 30 per-second
    # increments are charged. 60 s at 0.09/min (peak) = 0.09. Billing units: 90 s = 2 started
    # minutes, 1 chargeable (60 s), 1 from the allowance.
    assert line["taxExcludedRatingAmount"]["value"] == "0.09"
    assert (line["@o2cUnits"], line["@o2cAllowanceUnits"], line["@o2cChargeableUnits"]) == (2, 1, 1)
    assert [(p["units"], p["fromAllowance"], p["amountMicros"]) for p in line["@o2cParts"]] == [(30, True, 0), (60, False, 90_000)]
    used = counter(db_url, product_id)
    assert (used.voice_s, used.voice_minutes, used.needs_rerate) == (6000, 100, False)


async def test_roaming_usage_is_rated_in_its_zone(client, db_url):
    _, msisdn, _ = await subscriber(client, db_url)
    in_france = record(msisdn, "data", volume=25_000_000)
    in_france["usageCharacteristic"].append({"name": "roamingCountry", "value": "FR"})
    in_switzerland = record(msisdn, duration=61)
    in_switzerland["usageCharacteristic"].append({"name": "roamingCountry", "value": "ch"})
    france = rated(await post(client, in_france))
    switzerland = rated(await post(client, in_switzerland))
    # France is roam-like-at-home: the home allowance covers the data.
    assert (france["@o2cZone"], france["taxExcludedRatingAmount"]["value"], france["@o2cChargeableUnits"]) == ("eu", "0.00", 0)
    # Switzerland is world1: 1.49/min in 60 s steps, outside the bundle: 61 s = 2 min = 2.98.
    assert (switzerland["@o2cZone"], switzerland["taxExcludedRatingAmount"]["value"]) == ("world1", "2.98")
    assert stored(db_url, in_switzerland["id"]).roaming_country == "CH"


async def test_called_number_is_required_when_the_tariff_prices_destinations_differently(client, db_url):
    _, msisdn, _ = await subscriber(client, db_url)  # mobile-s: de-mobile-2026
    response = await client.post(USAGE_PATH, headers=CRM, json=record(msisdn, duration=60, destination=None))
    assert response.status_code == 422
    assert response.json()["code"] == "missing_destination"
    kept = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"reasonCode": "missing_destination"})).json()
    assert kept

    # mobile-l names no tariff: its catalog rates price every destination alike, so none is needed.
    _, other, _ = await subscriber(client, db_url, offering_id="mobile-l")
    line = rated(await post(client, record(other, duration=60, destination=None)))
    assert line["@o2cTariff"] == {"id": "rates-mobile-l", "version": "1"}


async def test_late_usage_flags_the_period_and_rerating_puts_it_right_once(client, db_url):
    _, msisdn, product_id = await subscriber(client, db_url)
    later = record(msisdn, duration=6000, when="2026-02-11T10:00:00+01:00")
    assert rated(await post(client, later))["taxExcludedRatingAmount"]["value"] == "0.00"  # the whole allowance
    early = record(msisdn, duration=120, when="2026-02-10T10:00:00+01:00")  # arrives late
    assert rated(await post(client, early))["taxExcludedRatingAmount"]["value"] == "0.18"  # 2 min peak, nothing left
    assert counter(db_url, product_id).needs_rerate

    # In time order the early call is free and the later one pays for its last 120 s (0.18).
    with session_scope(db_url) as session:
        report = rerate_period(session, product_id, PERIOD, book_with_peak_price("2", "0.09"), catalog=CATALOG)
    # v2 has the same prices as v1 here; both records move to it.
    assert sorted(d.record_id for d in report.applied) == sorted([early["id"], later["id"]])
    assert report.applied_delta == 0
    assert (stored(db_url, early["id"]).amount_micros, stored(db_url, later["id"]).amount_micros) == (0, 180_000)
    assert stored(db_url, early["id"]).status == "rerated"
    state = counter(db_url, product_id)
    assert (state.needs_rerate, state.voice_s) == (False, 6000)


async def test_tariff_correction_rerates_unbilled_records_idempotently_and_reports_billed_ones(client, db_url):
    _, msisdn, product_id = await subscriber(client, db_url)
    # 6060 s peak: 6000 s free, the last 60 s charged at 0.09 = 0.09.
    call = record(msisdn, duration=6060, when="2026-02-10T10:00:00+01:00")
    text = record(msisdn, "sms", when="2026-02-12T10:00:00+01:00", messages=1)
    await post(client, [call, text])
    assert stored(db_url, call["id"]).amount_micros == 90_000

    corrected = book_with_peak_price("2", "0.08")  # the peak price was wrong: 0.08
    with session_scope(db_url) as session:
        first = rerate_period(session, product_id, PERIOD, corrected, catalog=CATALOG)
    row = stored(db_url, call["id"])
    # 60 s at 0.08/min = 0.08: 0.01 less.
    assert (row.amount_micros, row.tariff_version, row.status) == (80_000, "2", "rerated")
    assert first.applied_delta == Decimal("-0.01")
    assert stored(db_url, text["id"]).tariff_version == "2"  # same price, re-rated with the version in force

    with session_scope(db_url) as session:
        again = rerate_period(session, product_id, PERIOD, corrected, catalog=CATALOG)
    assert again.applied == [] and again.billed_deltas == []
    assert stored(db_url, call["id"]).amount_micros == 80_000

    # Once billed, a record is not changed: the difference is reported for a credit note.
    with session_scope(db_url) as session:
        billed = session.get(UsageRecord, call["id"])
        billed.invoice_id, billed.status = "inv-test", "billed"
        session.add(billed)
    cheaper = book_with_peak_price("3", "0.07")
    with session_scope(db_url) as session:
        report = rerate_period(session, product_id, PERIOD, cheaper, catalog=CATALOG)
    assert [(d.record_id, d.delta) for d in report.billed_deltas] == [(call["id"], Decimal("-0.01"))]
    row = stored(db_url, call["id"])
    assert (row.amount_micros, row.tariff_version, row.status) == (80_000, "2", "billed")
