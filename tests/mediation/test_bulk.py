"""The importer's bulk path (mediation.bulk): the same outcome as the TMF635 API for the same records,
duplicates found in memory and by the database, counters used by someone else meanwhile, the
spending-limit hook per batch, and values that need escaping in COPY's text format.

Every test writes files with fresh MSISDNs and record ids, so tests sharing a database stay apart.
"""
from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from mediation import bulk, parse_file
from mediation.importer import usage_in
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, BillingAccount, OutboxMessage, Product, RejectedUsage
from services.rated_record import allowance_base_units
from services.usage_ingest import ParsedUsage, ingest
from services.usage_recycle import recycle
from tests.mediation.test_importer import (
    CATALOG, NOW, PGW_HEADER, PROFILES, UTC, asterisk_line, pgw_line, rejected_of, run_import, subscriber, uid, usage_of, write,
)

COMPARED = ("usage_type", "event_time", "quantity", "status", "units", "allowance_units", "chargeable_units", "amount_micros",
            "catalog_version", "period_start", "tariff_id", "tariff_version", "destination", "destination_name", "roaming_country",
            "zone", "band", "parts", "disposition")
COUNTER = ("voice_minutes", "sms", "data_mb", "voice_s", "data_bytes", "eu_roaming_data_bytes", "last_event_time", "needs_rerate",
           "usage_micros", "roaming_data_micros")


def counter_of(db_url: str, product_id: str) -> dict[datetime, dict]:
    with session_scope(db_url) as session:
        rows = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)).all()
        return {row.period_start: {name: getattr(row, name) for name in COUNTER} for row in rows}


def calm_end() -> datetime:
    """An instant with the day before it inside one billing period (bill-cycle day 1, Berlin, as
    tests.support.records sets accounts up), so a test's usage shares one counter whatever day the
    tests run: an hour ago, or an hour before this period began if it began less than 26 hours ago."""
    berlin = ZoneInfo("Europe/Berlin")
    local = NOW.astimezone(berlin)
    period_start = datetime(local.year, local.month, 1, tzinfo=berlin).astimezone(UTC)
    end = NOW - timedelta(hours=1)
    return end if end - timedelta(hours=25) >= period_start else period_start - timedelta(hours=1)


def mixed_lines(msisdn: str, rng: random.Random, start: datetime) -> tuple[list[str], list[str]]:
    """A month's worth of one subscriber's voice and data, in time order: more than the plan's 100
    minutes and 5 GB, so allowances run out inside a call and a session; every hour of the day,
    weekends, destinations at home and abroad, a 0900 call (capped), an extension (no called number),
    roaming in the EU, in Switzerland and under an MCC o2c does not know."""
    destinations = ["4915112345678", "4930123456", "4917612345678", "49900123456", "4420712345678", "12125550100", "33612345678", "1001"]
    voice, data = [], []
    at = start
    charging = rng.randrange(2**31)
    for n in range(40):
        at += timedelta(hours=7, minutes=rng.randrange(60), seconds=rng.randrange(60))
        if at > NOW - timedelta(hours=1):
            break
        dst = destinations[n % len(destinations)]
        billsec = rng.choice((0, 1, 59, 61, 300, 420, 3600)) if n % 9 else 0
        disposition = "ANSWERED" if n % 11 else "NO ANSWER"
        voice.append(asterisk_line(msisdn, uid(), at, billsec if disposition == "ANSWERED" else 0, disposition).replace("4930123456", dst, 1))
        plmn = "262-01" if n % 5 else rng.choice(("208-01", "214-07", "228-01", "999-99"))
        line = pgw_line(msisdn, charging + n, at + timedelta(minutes=3), rng.randrange(10**6, 3 * 10**8), rng.randrange(10**6, 6 * 10**8),
                        rating_group=10 + n % 3)
        data.append(line.replace("262-01", plmn))
    return voice, data


def read_events(path, timezone: str) -> list:
    with parse_file(path, timezone=timezone) as cdrs:
        return [item for item in cdrs]


@pytest.mark.parametrize("batch_size", [3, 50_000])
def test_a_file_gives_the_records_counters_and_rejections_the_api_gives_for_the_same_usage(db_url, tmp_path, batch_size):
    rng = random.Random(batch_size)
    by_file, by_api = subscriber(db_url), subscriber(db_url)
    start = NOW - timedelta(days=12)
    voice, data = mixed_lines(by_file.msisdn, rng, start)
    voice_path, data_path = write(tmp_path, "Master.csv", voice), write(tmp_path, "pgw.csv", [PGW_HEADER, *data])
    source_voice, source_data = f"v{uid()[:8]}", f"d{uid()[:8]}"

    reports = [run_import(db_url, voice_path, source=source_voice, timezone="Europe/Berlin", batch_size=batch_size),
               run_import(db_url, data_path, source=source_data, batch_size=batch_size)]

    # The same usage through services.usage_ingest.ingest (as the TMF635 API and recycling use it),
    # for a subscriber with the same plan, in one batch: answered calls only, as the importer takes them.
    parsed = []
    for path, source, zone in ((voice_path, source_voice, "Europe/Berlin"), (data_path, source_data, "UTC")):
        for event in read_events(path, zone):
            if event.disposition == "ANSWERED":
                record_id = f"api-{source}:{event.record_id}"
                usage = dataclasses.replace(usage_in(record_id, event), msisdn=by_api.msisdn)
                parsed.append(ParsedUsage(record_id, {"line": event.line_no}, usage=usage))
    with session_scope(db_url) as session:
        api = ingest(session, parsed, CATALOG, PROFILES, now=NOW)

    files = usage_of(db_url, by_file.msisdn)
    apis = usage_of(db_url, by_api.msisdn)
    assert sum(r.accepted for r in reports) == len(files) == api.accepted > 40
    assert sum(r.rejected_rating for r in reports) == api.rejected >= 3  # the extension, the unknown MCC, ...
    assert {f"api-{key}" for key in files} == set(apis)
    for key, record in files.items():
        twin = apis[f"api-{key}"]
        assert {n: getattr(record, n) for n in COMPARED} == {n: getattr(twin, n) for n in COMPARED}, key
        assert (record.msisdn, record.product_id, record.billing_account_id) == (by_file.msisdn, by_file.product_id, by_file.account_id)
    amounts = [r.amount_micros for r in files.values()]
    assert sum(amounts) > 0 and any(len(r.parts) > 1 for r in files.values())  # charged, and a record split at the allowance
    assert any(r.allowance_units for r in files.values()) and any(r.zone not in (None, "home") for r in files.values())
    # The counters end the same: allowances used in event-time order, batch by batch. (Only the
    # re-rate flag differs: the data file came after the voice file, with earlier events, which
    # flags the period; voice and data draw on separate allowances, so no record changed.)
    file_counters, api_counters = sorted(counter_of(db_url, by_file.product_id).items()), sorted(counter_of(db_url, by_api.product_id).items())
    for counters in (file_counters, api_counters):
        for _, counter in counters:
            counter.pop("needs_rerate")
    assert file_counters == api_counters
    # The same records rejected for the same reasons.
    rejected = [(r.record_id.split(":", 1)[1], r.reason_code, r.reason) for sha in (reports[0].sha256, reports[1].sha256)
                for r in rejected_of(db_url, sha) if r.record_id]
    with session_scope(db_url) as session:
        api_rejected = [(r.record_id.split(":", 1)[1], r.reason_code, r.reason.replace(by_api.msisdn, by_file.msisdn))
                        for r in session.exec(select(RejectedUsage).where(col(RejectedUsage.record_id).in_([p.record_id for p in parsed])))]
    assert sorted(rejected) == sorted(api_rejected)


def test_a_duplicate_beyond_the_previous_batch_is_found_by_the_database_and_not_charged(db_url, tmp_path, caplog):
    sub = subscriber(db_url)
    end = calm_end()
    first = asterisk_line(sub.msisdn, uid(), end - timedelta(hours=9), 120)
    stored_by_api = uid()
    lines = [first, *(asterisk_line(sub.msisdn, uid(), end - timedelta(hours=8 - n), 60) for n in range(4)),
             first,  # the switch wrote the first call again, three batches later
             asterisk_line(sub.msisdn, stored_by_api, end - timedelta(hours=2), 600),
             asterisk_line(sub.msisdn, uid(), end - timedelta(hours=1), 60)]
    # The TMF635 API stored one of the calls first (the same record id: the switch's and the API's).
    events = [e for e in read_events(write(tmp_path, "probe.csv", [lines[6]]), "UTC")]
    with session_scope(db_url) as session:
        ingest(session, [ParsedUsage(f"asterisk:{stored_by_api}", {}, usage=usage_in(f"asterisk:{stored_by_api}", events[0]))],
               CATALOG, PROFILES, now=NOW)

    with caplog.at_level("INFO", logger="mediation.bulk"):
        report = run_import(db_url, write(tmp_path, "Master.csv", lines), batch_size=2)

    assert (report.lines, report.accepted, report.duplicates) == (8, 6, 2)
    assert sum("were stored already" in message for message in caplog.messages) == 2  # found when the database refused them
    stored = usage_of(db_url, sub.msisdn)
    assert len(stored) == 7
    # Nothing drawn twice: the counter is exactly what the stored records drew (2 + 4 x 1 + 10 + 1 minutes).
    [counter] = counter_of(db_url, sub.product_id).values()
    assert counter["voice_s"] == sum(allowance_base_units(r.parts) for r in stored.values()) == 17 * 60


def test_a_counter_used_by_someone_else_during_the_import_is_read_again_and_nothing_is_drawn_twice(db_url, tmp_path, monkeypatch, caplog):
    sub = subscriber(db_url)
    end = calm_end()
    # 90 of the plan's 100 minutes in the file, in three batches; meanwhile the API stores a 30-minute call.
    lines = [asterisk_line(sub.msisdn, uid(), end - timedelta(hours=20 - n), 600) for n in range(9)]
    api_call = asterisk_line(sub.msisdn, uid(), end - timedelta(hours=5), 1800)
    [event] = read_events(write(tmp_path, "api.csv", [api_call]), "UTC")
    real_write = bulk.write_batch
    written = 0

    def api_usage_before_the_second_batch(*args, **kwargs):
        nonlocal written
        written += 1
        if written == 2:
            with session_scope(db_url) as session:
                assert ingest(session, [ParsedUsage("api:1", {}, usage=usage_in(f"api:{uid()}", event))], CATALOG, PROFILES, now=NOW).accepted == 1
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bulk, "write_batch", api_usage_before_the_second_batch)
    with caplog.at_level("INFO", logger="mediation.bulk"):
        report = run_import(db_url, write(tmp_path, "Master.csv", lines), batch_size=3)

    assert (report.accepted, written) == (9, 4)  # three batches and the final (empty) one
    assert any("used by another writer meanwhile" in message for message in caplog.messages)
    stored = usage_of(db_url, sub.msisdn)
    drawn = sum(allowance_base_units(r.parts) for r in stored.values())
    [counter] = counter_of(db_url, sub.product_id).values()
    assert counter["voice_s"] == drawn == 100 * 60  # the allowance, used once: 90 + 30 minutes asked for
    charged = sum(r.chargeable_units for r in stored.values())
    assert charged == 20  # minutes beyond the allowance
    assert counter["needs_rerate"] is True  # the API call is later than file calls rated after it: re-rate puts it right


def test_a_rejected_line_whose_record_is_stored_already_is_a_duplicate(db_url, tmp_path):
    sub = subscriber(db_url)
    call_id = uid()
    at = NOW - timedelta(days=3)
    line = asterisk_line(sub.msisdn, call_id, at, 60)
    assert run_import(db_url, write(tmp_path, "a.csv", [line])).accepted == 1
    with session_scope(db_url) as session:  # the product ends (back-dated): the call would now be outside the subscription
        product = session.get(Product, sub.product_id)
        product.termination_date = at - timedelta(days=1)
        session.add(product)

    again = run_import(db_url, write(tmp_path, "b.csv", [line, asterisk_line(sub.msisdn, uid(), at, 60)]))

    assert (again.duplicates, again.rejected_rating) == (1, 1)
    assert [r.reason_code for r in rejected_of(db_url, again.sha256)] == ["outside_subscription"]


def test_each_batch_tells_the_spending_monitor_which_accounts_and_periods_received_usage(db_url, tmp_path, monkeypatch):
    limited, unlimited = subscriber(db_url), subscriber(db_url)
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, limited.account_id)
        account.spending_limit_cents = 100  # one euro
        session.add(account)
    end = calm_end()
    lines = [asterisk_line(s.msisdn, uid(), end - timedelta(hours=h), 600).replace("4930123456", "49900123456", 1)  # 0900: charged
             for h in (6, 5, 4, 3) for s in (limited, unlimited)]
    calls = []
    real_hook = bulk.record_spending_crossings

    def spy(session, accounts, touched, now):
        calls.append(({a: accounts[a].spending_limit_cents for a in accounts}, set(touched)))
        return real_hook(session, accounts, touched, now)

    monkeypatch.setattr(bulk, "record_spending_crossings", spy)
    report = run_import(db_url, write(tmp_path, "Master.csv", lines), batch_size=4)

    assert report.accepted == 8 and len(calls) == 3  # two batches of four lines, and the final (empty) one
    period = {s.account_id: next(iter(counter_of(db_url, s.product_id))) for s in (limited, unlimited)}
    for accounts, touched in calls[:2]:
        assert accounts == {limited.account_id: 100}  # only accounts with a limit matter to the monitor
        assert touched == {(limited.account_id, period[limited.account_id]), (unlimited.account_id, period[unlimited.account_id])}
    assert calls[2] == ({}, set())
    with session_scope(db_url) as session:
        messages = session.exec(select(OutboxMessage).where(col(OutboxMessage.key).startswith(f"spending:{limited.account_id}:"))).all()
    assert sorted(m.payload["thresholdPercent"] for m in messages) == [80, 100]


def test_values_that_need_escaping_in_copy_text_are_stored_exactly(db_url, tmp_path):
    sub = subscriber(db_url)
    odd_ids = ["a\\b", "tab\there", "quote\"d", "ümlaut-€", "back\\\\slash\\N"]
    lines = [asterisk_line(sub.msisdn, "x", NOW - timedelta(hours=n + 1), 60).replace('"x"', '"' + odd.replace('"', '""') + '"')
             for n, odd in enumerate(odd_ids)]

    report = run_import(db_url, write(tmp_path, "Master.csv", lines), source="ast-1")

    assert report.accepted == len(odd_ids)
    assert set(usage_of(db_url, sub.msisdn)) == {f"ast-1:{odd}" for odd in odd_ids}


def test_event_times_are_stored_exactly_to_the_second_or_to_the_microsecond(db_url, tmp_path):
    # The COPY text spells whole-second times from a per-minute memo and others with isoformat().
    sub = subscriber(db_url)
    starts = [NOW - timedelta(hours=2, minutes=59, seconds=59), (NOW - timedelta(hours=3)).replace(microsecond=250_001),
              NOW - timedelta(hours=4), (NOW - timedelta(hours=5)).replace(second=0)]
    lines = [pgw_line(sub.msisdn, 7_000 + n, start, 1_000, 1_000).replace(start.strftime("%Y-%m-%dT%H:%M:%SZ"), start.isoformat())
             for n, start in enumerate(starts)]

    report = run_import(db_url, write(tmp_path, "pgw.csv", [PGW_HEADER, *lines]), source=f"d{uid()[:8]}")

    assert report.accepted == len(starts)
    assert sorted(record.event_time for record in usage_of(db_url, sub.msisdn).values()) == sorted(starts)


def test_a_pgw_line_rejected_for_an_unknown_number_is_recycled_once_the_product_exists(db_url, tmp_path):
    msisdn = f"49171{random.randrange(10**7, 10**8)}"
    charging_id = random.randrange(2**32)
    path = write(tmp_path, "pgw.csv", [PGW_HEADER, pgw_line(msisdn, charging_id, NOW - timedelta(hours=2), 1_000, 2_000_000)])
    report = run_import(db_url, path)
    [rejected] = rejected_of(db_url, report.sha256)
    assert rejected.reason_code == "unknown_subscriber"
    assert rejected.payload["header"] == PGW_HEADER.split(",")  # kept, so the line can be read again

    sub = subscriber(db_url, msisdn=msisdn)
    with session_scope(db_url) as session:
        result = recycle(session, [rejected.id], CATALOG, PROFILES, "test", NOW)
    assert [r.status for r in result.results] == ["accepted"]
    assert set(usage_of(db_url, sub.msisdn)) == {f"pgw:{charging_id}:pgw01.fra.example.net:1:10"}


def test_batches_grow_from_small_and_shrink_towards_the_end_of_the_file():
    left = [1_000_000]
    sizes = bulk._Sizes(100_000, lambda: left[0])
    taken = []
    while left[0] > 0:
        size = min(sizes.next(), left[0])
        taken.append(size)
        left[0] -= size
    assert taken[:4] == [10_000, 20_000, 40_000, 80_000] and max(taken) == 100_000
    assert taken[-1] <= 20_000 and sum(taken) == 1_000_000
    assert bulk._Sizes(3, None).next() == 3
