"""CDR file import: rating, dedup across files and restarts, guiding, the rejected store, exactly once per file.

Every test writes files with fresh MSISDNs and record ids, so tests sharing a database stay apart.
"""
from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from config.catalog_loader import load_catalog
from config.profiles import load_billing_profiles
from config.settings import REPO_ROOT, get_settings
from mediation import RejectedLine, UsageEvent, bulk, importer, parse_file
from mediation.csvlines import line_text
from mediation.importer import FileReport, import_file
from o2c_cli.main import main
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, ImportedFile, Product, RejectedUsage, UsageRecord
from tests.support.records import create_billing_account, create_customer

DATA = Path(__file__).parent / "data"
CATALOG = load_catalog(REPO_ROOT / "catalog" / "catalog.yaml")
PROFILES = load_billing_profiles()
UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
PGW_HEADER = ("servedIMSI,servedMSISDN,chargingID,nodeID,recordSequenceNumber,recordOpeningTime,duration,ratingGroup,"
              "datavolumeFBCUplink,datavolumeFBCDownlink,servingNodePLMN,userLocationInformation")


# --- helpers (test_watch uses them too) ----------------------------------------------------------


@dataclass
class Subscriber:
    msisdn: str
    product_id: str
    account_id: str


def new_msisdn() -> str:
    return f"49171{random.randrange(10**7, 10**8)}"  # a German mobile number no other test uses


def subscriber(db_url: str, *, msisdn: str | None = None, start: datetime | None = None, end: datetime | None = None,
               offering_id: str = "mobile-s") -> Subscriber:
    """A customer, account and product holding `msisdn` from `start` (30 days ago) until `end`."""
    msisdn = msisdn or new_msisdn()
    customer_id = create_customer(db_url)
    account_id = create_billing_account(db_url, customer_id)
    product_id = str(uuid.uuid4())
    start = start or NOW - timedelta(days=30)
    with session_scope(db_url) as session:
        session.add(Product(id=product_id, customer_id=customer_id, billing_account_id=account_id, offering_id=offering_id,
                            offering_version="1", catalog_version=CATALOG.version, name=offering_id, msisdn=msisdn,
                            status="active" if end is None else "terminated", order_id=str(uuid.uuid4()), order_item_id="1",
                            start_date=start, termination_date=end, billing_start=start))
    return Subscriber(msisdn, product_id, account_id)


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def uid() -> str:
    return uuid.uuid4().hex


def asterisk_line(msisdn: str, uniqueid: str, start: datetime, billsec: int, disposition: str = "ANSWERED", channel: str = "PJSIP/a-1") -> str:
    answered = disposition == "ANSWERED"
    answer = f'"{stamp(start + timedelta(seconds=5))}"' if answered else ""
    end = start + timedelta(seconds=5 + billsec)
    return (f'"","{msisdn}","4930123456","from-internal","""Kunde"" <{msisdn}>","{channel}","PJSIP/telekom-1","Dial",'
            f'"PJSIP/4930123456@telekom,60","{stamp(start)}",{answer},"{stamp(end)}",{billsec + 5},{billsec},"{disposition}",'
            f'"DOCUMENTATION","{uniqueid}",""')


def freeswitch_line(msisdn: str, uuid_: str, start: datetime, billsec: int, cause: str = "NORMAL_CLEARING") -> str:
    answer = stamp(start + timedelta(seconds=3)) if billsec else ""
    end = stamp(start + timedelta(seconds=3 + billsec))
    return (f'"Kunde","{msisdn}","4930123456","default","{stamp(start)}","{answer}","{end}","{billsec + 3}","{billsec}",'
            f'"{cause}","{uuid_}","","","PCMA","PCMA"')


def pgw_line(msisdn: str, charging_id: int, start: datetime, up: int, down: int, rating_group: int = 10, sequence: str = "1") -> str:
    return f"262011234567890,{msisdn},{charging_id},pgw01.fra.example.net,{sequence},{start.strftime('%Y-%m-%dT%H:%M:%SZ')},600,{rating_group},{up},{down},262-01,"


def write(folder: Path, name: str, lines: list[str]) -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def run_import(db_url: str, path: Path, **options) -> FileReport:
    return import_file(db_url, path, catalog=CATALOG, profiles=PROFILES, **options)


def usage_of(db_url: str, msisdn: str) -> dict[str, UsageRecord]:
    with session_scope(db_url) as session:
        return {row.id: row for row in session.exec(select(UsageRecord).where(UsageRecord.msisdn == msisdn))}


def voice_minutes_used(db_url: str, product_id: str) -> int:
    with session_scope(db_url) as session:
        return sum(row.voice_minutes for row in session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)))


def rejected_of(db_url: str, sha256: str) -> list[RejectedUsage]:
    """The file's rejected lines, in line order."""
    with session_scope(db_url) as session:
        rows = [row for row in session.exec(select(RejectedUsage).order_by(col(RejectedUsage.id))) if row.payload.get("fileSha256") == sha256]
    return sorted(rows, key=lambda row: row.payload["lineNo"])


def imported_row(db_url: str, sha256: str) -> ImportedFile | None:
    with session_scope(db_url) as session:
        return session.get(ImportedFile, sha256)


def counts(report: FileReport | ImportedFile) -> dict[str, int]:
    return {name: getattr(report, name) for name in importer._COUNT_FIELDS}


# --- tests ---------------------------------------------------------------------------------------


def test_an_asterisk_file_is_rated_deduplicated_and_every_line_accounted_for(db_url, tmp_path):
    sub = subscriber(db_url)
    stranger = new_msisdn()
    ids = {n: uid() for n in range(1, 12)}
    lines = [
        asterisk_line(sub.msisdn, ids[1], NOW - timedelta(hours=5), 120),
        asterisk_line(sub.msisdn, ids[2], NOW - timedelta(hours=4), 61),
        asterisk_line(sub.msisdn, ids[3], NOW - timedelta(hours=3), 0, "NO ANSWER"),
        asterisk_line(sub.msisdn, ids[4], NOW - timedelta(hours=3), 0, "BUSY"),
        asterisk_line(sub.msisdn, ids[1], NOW - timedelta(hours=5), 120),  # the switch wrote line 1 twice
        asterisk_line(stranger, ids[6], NOW - timedelta(hours=2), 60),
        asterisk_line(sub.msisdn, ids[7], NOW - timedelta(days=100), 60),
        asterisk_line(sub.msisdn, ids[8], NOW + timedelta(days=1), 60),
        '"a","b","c"',
        "",
        asterisk_line(sub.msisdn, ids[11], NOW, 60).replace(stamp(NOW), "2024-02-30 10:00:00", 1),
    ]
    path = write(tmp_path, "Master.csv", lines)

    report = run_import(db_url, path)

    assert (report.status, report.format, report.error) == ("done", "asterisk", None)
    assert counts(report) == {"lines": 10, "accepted": 2, "duplicates": 1, "not_charged": 2,
                              "rejected_parse": 2, "rejected_window": 2, "rejected_rating": 1}
    stored = usage_of(db_url, sub.msisdn)
    assert set(stored) == {f"asterisk:{ids[1]}", f"asterisk:{ids[2]}"}  # unanswered calls are not usage
    first, second = stored[f"asterisk:{ids[1]}"], stored[f"asterisk:{ids[2]}"]
    assert (first.status, first.usage_type, first.quantity, first.units, first.product_id) == ("rated", "voice", 120, 2, sub.product_id)
    assert (second.quantity, second.units, second.amount_micros) == (61, 2, 0)  # inside the 100 free minutes
    assert first.event_time == NOW - timedelta(hours=5)
    assert voice_minutes_used(db_url, sub.product_id) == 4  # the duplicate was not charged
    assert usage_of(db_url, stranger) == {}

    rejected = rejected_of(db_url, report.sha256)
    assert [(r.payload["lineNo"], r.reason_code, r.record_id) for r in rejected] == [
        (6, "unknown_subscriber", f"asterisk:{ids[6]}"),
        (7, "out_of_window", f"asterisk:{ids[7]}"),
        (8, "out_of_window", f"asterisk:{ids[8]}"),
        (9, "wrong_column_count", None),
        (11, "invalid_timestamp", None),
    ]
    for row in rejected:  # each kept with its source line, whole
        assert row.payload["raw"] == lines[row.payload["lineNo"] - 1]
        assert (row.payload["format"], row.payload["source"], row.payload["sourceFile"]) == ("asterisk", "asterisk", "Master.csv")
        assert row.reason
    assert "more than 90 days before the import" in rejected[1].reason
    assert "in the future" in rejected[2].reason

    row = imported_row(db_url, report.sha256)
    assert (row.status, row.file_name, row.format, row.last_line_no) == ("done", "Master.csv", "asterisk", 11)
    assert counts(row) == counts(report) and row.finished_at is not None


def test_duplicates_across_files_and_restarts_are_counted_and_never_charged(db_url, tmp_path):
    sub = subscriber(db_url)
    calls = [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=h), 60) for h in (3, 2, 1)]

    first = run_import(db_url, write(tmp_path, "a.csv", calls[:2]))
    second = run_import(db_url, write(tmp_path, "b.csv", calls[1:]))
    # A new call after a "restart": nothing is kept in memory between calls, only in the database.
    restarted = run_import(db_url, write(tmp_path, "c.csv", list(reversed(calls))))

    assert (first.accepted, first.duplicates) == (2, 0)
    assert (second.accepted, second.duplicates) == (1, 1)
    assert (restarted.accepted, restarted.duplicates, restarted.status) == (0, 3, "done")
    assert len(usage_of(db_url, sub.msisdn)) == 3
    assert voice_minutes_used(db_url, sub.product_id) == 3


def test_a_stored_record_that_is_now_too_old_is_a_duplicate_not_a_rejection(db_url, tmp_path):
    sub = subscriber(db_url)
    call = asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60)
    assert run_import(db_url, write(tmp_path, "today.csv", [call])).accepted == 1

    later = run_import(db_url, write(tmp_path, "resent.csv", [call, ""]), now=NOW + timedelta(days=200))

    assert (later.duplicates, later.rejected_window) == (1, 0)
    assert rejected_of(db_url, later.sha256) == []


def test_the_same_file_twice_is_a_no_op(db_url, tmp_path):
    sub = subscriber(db_url)
    lines = [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60), asterisk_line(new_msisdn(), uid(), NOW, 60)]
    path = write(tmp_path, "Master.csv", lines)
    first = run_import(db_url, path)
    assert (first.accepted, first.rejected_rating) == (1, 1)

    again = run_import(db_url, path)
    renamed = tmp_path / "copy-of-Master.csv"
    renamed.write_bytes(path.read_bytes())
    copy = run_import(db_url, renamed, source="other-switch")

    for report in (again, copy):
        assert (report.status, report.sha256) == ("already_imported", first.sha256)
        assert counts(report) == dict.fromkeys(importer._COUNT_FIELDS, 0)
        assert "already imported" in report.summary()
    assert len(usage_of(db_url, sub.msisdn)) == 1
    assert len(rejected_of(db_url, first.sha256)) == 1  # not stored again


def test_record_ids_are_namespaced_by_source(db_url, tmp_path):
    # Two Asterisk servers can write the same uniqueid for different calls.
    sub = subscriber(db_url)
    uniqueid = f"{int(NOW.timestamp())}.{random.randrange(10**6)}"
    a = run_import(db_url, write(tmp_path, "a.csv", [asterisk_line(sub.msisdn, uniqueid, NOW - timedelta(hours=2), 60, channel="PJSIP/a-1")]), source="ast-fra1")
    b = run_import(db_url, write(tmp_path, "b.csv", [asterisk_line(sub.msisdn, uniqueid, NOW - timedelta(hours=1), 60, channel="PJSIP/b-1")]), source="ast-ber1")

    assert (a.accepted, b.accepted) == (1, 1)
    assert set(usage_of(db_url, sub.msisdn)) == {f"ast-fra1:{uniqueid}", f"ast-ber1:{uniqueid}"}


def test_events_outside_the_subscription_are_rejected_with_that_reason(db_url, tmp_path):
    sub = subscriber(db_url, start=NOW - timedelta(days=10), end=NOW - timedelta(days=2))
    before, during, after = uid(), uid(), uid()
    lines = [
        freeswitch_line(sub.msisdn, before, NOW - timedelta(days=20), 60),
        freeswitch_line(sub.msisdn, during, NOW - timedelta(days=5), 90),
        freeswitch_line(sub.msisdn, after, NOW - timedelta(days=1), 60),
        freeswitch_line(sub.msisdn, uid(), NOW - timedelta(days=5), 0, "USER_BUSY"),
    ]
    report = run_import(db_url, write(tmp_path, "fs.csv", lines))

    assert report.format == "freeswitch"
    assert (report.accepted, report.rejected_rating, report.not_charged) == (1, 2, 1)
    assert set(usage_of(db_url, sub.msisdn)) == {f"freeswitch:{during}"}
    rejected = rejected_of(db_url, report.sha256)
    assert [(r.record_id, r.reason_code) for r in rejected] == [
        (f"freeswitch:{before}", "outside_subscription"), (f"freeswitch:{after}", "outside_subscription")]
    assert all("had no active product" in r.reason for r in rejected)
    assert [r.payload["raw"] for r in rejected] == [lines[0], lines[2]]


def test_pgw_data_is_rated_on_bytes_up_plus_down_per_container(db_url, tmp_path):
    sub = subscriber(db_url)
    charging_id = random.randrange(2**32)
    at = NOW - timedelta(hours=1)
    lines = [PGW_HEADER,
             pgw_line(sub.msisdn, charging_id, at, 1_500_000, 48_000_000, rating_group=10),
             pgw_line(sub.msisdn, charging_id, at, 20_000, 350_000, rating_group=20),
             pgw_line(sub.msisdn, charging_id, at, 1_500_000, 48_000_000, rating_group=10)]  # the same container again

    report = run_import(db_url, write(tmp_path, "pgw.csv", lines))

    assert (report.format, report.lines, report.accepted, report.duplicates) == ("pgw", 3, 2, 1)  # the header is not a line
    stored = usage_of(db_url, sub.msisdn)
    key = f"pgw:{charging_id}:pgw01.fra.example.net:1"
    assert {k: (r.usage_type, r.quantity, r.units) for k, r in stored.items()} == {
        f"{key}:10": ("data", 49_500_000, 50), f"{key}:20": ("data", 370_000, 1)}
    with session_scope(db_url) as session:
        counters = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == sub.product_id)).all()
    # de-mobile-2026 bills data in 10 kB steps: 49,500,000 + 370,000 bytes are drawn from the
    # allowance exactly (the thin rates drew 50 + 1 started MB); the MB column is its started MB.
    assert sum(c.data_bytes for c in counters) == 49_870_000
    assert sum(c.data_mb for c in counters) == 50


@pytest.mark.parametrize("name", ["asterisk_master.csv", "freeswitch_master.csv", "pgw_data.csv"])
def test_every_line_of_the_fixture_files_is_accounted_for(db_url, name):
    path = DATA / name
    with parse_file(path) as cdrs:
        items = list(cdrs)
    events = [item for item in items if isinstance(item, UsageEvent)]
    answered = [event for event in events if event.disposition == "ANSWERED"]
    now = datetime(2024, 3, 2, 12, tzinfo=UTC)  # the fixtures are from March 2024
    in_window = [event for event in answered if now - timedelta(days=90) <= event.start <= now + timedelta(minutes=5)]
    for msisdn in {event.msisdn for event in events}:  # every number has a product, ended long ago for other tests' sake
        subscriber(db_url, msisdn=msisdn, start=datetime(2024, 1, 1, tzinfo=UTC), end=datetime(2024, 6, 1, tzinfo=UTC))
    source = f"fixture-{uid()[:8]}"

    report = run_import(db_url, path, source=source, now=now, batch_size=4)

    assert report.status == "done"
    assert report.lines == len(items)
    assert report.rejected_parse == sum(isinstance(item, RejectedLine) for item in items)
    assert report.not_charged == len(events) - len(answered)
    assert report.rejected_window == len(answered) - len(in_window)
    assert report.rejected_rating == 0
    assert report.accepted == len({event.record_id for event in in_window})
    assert report.duplicates == len(in_window) - report.accepted >= 1  # each fixture repeats a record

    raw_lines = path.read_bytes().splitlines(keepends=True)
    rejected = rejected_of(db_url, report.sha256)
    assert len(rejected) == report.rejected
    assert Counter(r.reason_code for r in rejected if r.record_id is None) == Counter(
        item.reason_code for item in items if isinstance(item, RejectedLine))
    for row in rejected:
        assert row.payload["raw"] == line_text(raw_lines[row.payload["lineNo"] - 1])
        assert row.payload["source"] == source


def test_an_import_cut_off_mid_file_resumes_after_the_last_committed_batch(db_url, tmp_path, monkeypatch):
    sub = subscriber(db_url)
    lines = [
        asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=6), 60),
        "not a CDR",
        asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=5), 60),
        asterisk_line(new_msisdn(), uid(), NOW - timedelta(hours=4), 60),
        asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=3), 60),
        asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=2), 60),
    ]
    path = write(tmp_path, "Master.csv", lines)
    real_write = bulk.write_batch
    batches = 0

    def crash_in_the_second_batch(*args, **kwargs):
        nonlocal batches
        batches += 1
        if batches == 2:
            raise ConnectionError("database went away")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bulk, "write_batch", crash_in_the_second_batch)
    with pytest.raises(ConnectionError):
        run_import(db_url, path, batch_size=2)
    monkeypatch.setattr(bulk, "write_batch", real_write)
    sha256 = importer.file_digest(str(path))[0]
    cut = imported_row(db_url, sha256)
    assert (cut.status, cut.last_line_no, cut.accepted, cut.rejected_parse) == ("processing", 2, 1, 1)

    # The rest must be read as the first part was: another source would give other record ids.
    refused = run_import(db_url, path, batch_size=2, source="another-name")
    assert refused.status == "failed" and "lines 1-2 of this file were imported with" in refused.error
    assert imported_row(db_url, sha256).status == "failed"

    resumed = run_import(db_url, path, batch_size=2)

    assert resumed.status == "done"
    assert counts(resumed) == {"lines": 4, "accepted": 3, "duplicates": 0, "not_charged": 0,
                               "rejected_parse": 0, "rejected_window": 0, "rejected_rating": 1}
    row = imported_row(db_url, sha256)
    assert (row.status, row.last_line_no, row.lines, row.accepted, row.rejected_parse, row.rejected_rating, row.error) == (
        "done", 6, 6, 4, 1, 1, None)
    assert len(usage_of(db_url, sub.msisdn)) == 4
    assert voice_minutes_used(db_url, sub.product_id) == 4
    assert [(r.payload["lineNo"], r.reason_code) for r in rejected_of(db_url, sha256)] == [(2, "wrong_column_count"), (4, "unknown_subscriber")]


def test_a_file_of_unknown_format_fails_and_can_be_imported_later_with_the_format_named(db_url, tmp_path):
    path = write(tmp_path, "export.csv", [f"date,from,to,seconds,{uid()}", "2024-03-01,4915112345678,4930123456,60"])

    failed = run_import(db_url, path)

    assert failed.status == "failed" and "cannot tell the CDR format" in failed.error
    assert "FAILED" in failed.summary()
    row = imported_row(db_url, failed.sha256)
    assert (row.status, row.error) == ("failed", failed.error)

    named = run_import(db_url, path, fmt="asterisk")  # failed is not final: the file can come again
    assert (named.status, named.lines, named.rejected_parse) == ("done", 2, 2)
    assert imported_row(db_url, failed.sha256).status == "done"


def test_a_pgw_file_without_the_required_columns_fails(db_url, tmp_path):
    report = run_import(db_url, write(tmp_path, "pgw.csv", ["servedMSISDN,chargingID,comment", f"4915112345678,1,{uid()}"]))
    assert report.status == "failed"
    assert "not a PGW data-record file" in report.error and "recordOpeningTime" in report.error
    assert imported_row(db_url, report.sha256).status == "failed"


def test_files_without_records_import_as_nothing_and_are_not_remembered(db_url, tmp_path):
    for content in (b"", b"\n\r\n  \n", f"{PGW_HEADER}\n".encode()):
        path = tmp_path / f"empty-{len(content)}.csv"
        path.write_bytes(content)
        for _ in range(2):  # every empty file has the same hash; none may block the next
            report = run_import(db_url, path)
            assert (report.status, report.format, report.lines) == ("done", "pgw" if content.startswith(b"served") else None, 0)
        assert imported_row(db_url, report.sha256) is None


def test_an_unreadable_file_fails(db_url, tmp_path):
    report = run_import(db_url, tmp_path / "missing.csv")
    assert report.status == "failed" and "cannot read the file" in report.error and report.sha256 is None


@pytest.mark.parametrize("options, message", [
    ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"source": "a b"}, "source name"),
    ({"fmt": "cisco"}, "unknown CDR format"),
    ({"batch_size": 0}, "batch size"),
    ({"country_code": "049"}, "country code"),
])
def test_bad_options_raise_before_the_file_is_touched(db_url, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        run_import(db_url, tmp_path / "never-read.csv", **options)


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def o2c_env(db_url, monkeypatch):
    """`o2c` commands against the test database."""
    monkeypatch.setenv("O2C_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_o2c(*argv: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return exited.value.code


def test_import_cdrs_command_prints_a_line_per_file_and_fails_if_any_file_failed(o2c_env, db_url, tmp_path, capsys):
    sub = subscriber(db_url)
    good = write(tmp_path, "Master.csv", [asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 60),
                                          asterisk_line(sub.msisdn, uid(), NOW - timedelta(hours=1), 0, "NO ANSWER")])
    bad = write(tmp_path, "notes.txt", [f"hello {uid()}"])

    assert run_o2c("import-cdrs", str(good), str(bad), "--source", "ast-fra1", "--timezone", "Europe/Berlin") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("Master.csv: asterisk, 2 lines: 1 accepted, 0 duplicates, 1 not charged (unanswered), "
                      "0 rejected (0 unreadable, 0 out of window, 0 not guided or rated)")
    assert out[1].startswith("notes.txt: FAILED: cannot tell the CDR format")
    assert out[2] == "total: 2 files (1 failed), 2 lines: 1 accepted, 0 duplicates, 1 not charged, 0 rejected"
    [record] = usage_of(db_url, sub.msisdn).values()
    assert record.id.startswith("ast-fra1:")
    # The switch wrote Berlin wall-clock time.
    written = datetime.strptime(stamp(NOW - timedelta(hours=1)), "%Y-%m-%d %H:%M:%S")
    assert record.event_time == written.replace(tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)

    assert run_o2c("import-cdrs", str(good)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Master.csv: already imported")
    assert out[1] == "total: 1 files (0 failed), 0 lines: 0 accepted, 0 duplicates, 0 not charged, 0 rejected"


def test_import_cdrs_command_refuses_bad_options(o2c_env, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["import-cdrs", str(tmp_path / "x.csv"), "--timezone", "Nowhere/Land"])
    assert "Nowhere/Land" in str(exited.value.code)
