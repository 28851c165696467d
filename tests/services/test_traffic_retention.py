"""Traffic data retention (GUIDE §4): called numbers, roaming countries and exact times of billed usage go six
months after the bill; rejected lines six months after receipt; an open complaint keeps its account's data.
Runs on SQLite and PostgreSQL; every run is scoped to this test's accounts and rejected rows (the database is shared)."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlmodel import select

from api.tmf import rejected_usage as rejected_usage_json
from api.tmf import usage as usage_json
from config.catalog_loader import load_catalog
from config.profiles import load_billing_profiles
from config.settings import get_settings
from domain.traffic_retention import billed_traffic_cutoff, months_before, rejected_line_cutoff
from persistence.db import session_scope
from persistence.tables import Invoice, Refund, RejectedUsage, TrafficRetentionRun, UsageRecord
from services import traffic_retention as retention
from services.billing_accounts import set_traffic_data_hold
from services.traffic_retention import ERASED_PAYLOAD, erase_expired_traffic_data
from services.usage_recycle import NOT_RECYCLABLE, recycle
from tests.support.records import create_account_with_email

UTC = timezone.utc
AS_OF = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 5, 30, 12, 0, tzinfo=UTC)  # six calendar months before AS_OF


# --- the rule (pure) ------------------------------------------------------------------------------------


def test_six_calendar_months_clamp_to_the_shorter_month_never_shortening_the_window() -> None:
    assert billed_traffic_cutoff(AS_OF) == CUTOFF == rejected_line_cutoff(AS_OF)
    assert months_before(datetime(2026, 8, 31, 22, 30, tzinfo=UTC), 6) == datetime(2026, 2, 28, 22, 30, tzinfo=UTC)
    assert months_before(datetime(2024, 8, 31, tzinfo=UTC), 6) == datetime(2024, 2, 29, tzinfo=UTC)  # leap year
    assert months_before(datetime(2027, 3, 15, 1, tzinfo=UTC), 6) == datetime(2026, 9, 15, 1, tzinfo=UTC)  # across a year
    # An aware time in another zone is the same instant.
    berlin = timezone(timedelta(hours=2))
    assert months_before(datetime(2026, 11, 30, 14, 0, tzinfo=berlin), 6) == CUTOFF
    with pytest.raises(ValueError):
        months_before(datetime(2026, 11, 30), 6)


# --- set-up ---------------------------------------------------------------------------------------------


def _account(db_url: str) -> tuple[str, str]:
    account_id, _ = create_account_with_email(db_url)
    with session_scope(db_url) as session:
        from persistence.tables import BillingAccount

        return account_id, session.get(BillingAccount, account_id).customer_id


def _invoice(db_url: str, account_id: str, customer_id: str, issued_at: datetime, month: int) -> str:
    invoice_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Invoice(id=invoice_id, number=f"R-T-{uuid.uuid4().hex[:10]}", billing_account_id=account_id, customer_id=customer_id,
                            state="settled", period_start=datetime(2026, month, 1, tzinfo=UTC), period_end=datetime(2026, month + 1, 1, tzinfo=UTC),
                            local_period_start=date(2026, month, 1), local_period_end=date(2026, month + 1, 1), issued_at=issued_at,
                            due_at=issued_at + timedelta(days=14), net_cents=100, vat_cents=19, gross_cents=119, lines=[], vat_breakdown=[]))
    return invoice_id


def _usage(db_url: str, account_id: str, invoice_id: str | None, month: int) -> str:
    record_id = f"ret-{uuid.uuid4().hex[:12]}"
    with session_scope(db_url) as session:
        session.add(UsageRecord(id=record_id, usage_type="voice", msisdn="4915112345678", product_id="p-ret", billing_account_id=account_id,
                                event_time=datetime(2026, month, 14, 19, 42, 7, tzinfo=UTC), quantity=127, status="billed" if invoice_id else "rated",
                                units=3, chargeable_units=3, amount_micros=870_000, period_start=datetime(2026, month, 1, tzinfo=UTC),
                                invoice_id=invoice_id, received_at=datetime(2026, month, 14, 19, 45, tzinfo=UTC), tariff_id="de-mobile",
                                tariff_version="2026-01", destination="4930901820", destination_name="Germany fixed", roaming_country="AT",
                                zone="eu", band="peak", disposition="ANSWERED", parts=[{"units": 127, "amount_micros": 870_000}]))
    return record_id


def _rejected(db_url: str, received_at: datetime) -> int:
    with session_scope(db_url) as session:
        row = RejectedUsage(record_id=f"ast:{uuid.uuid4().hex[:10]}", reason_code="unknown_subscriber", reason="no product owns 4915199999999",
                            payload={"format": "asterisk", "source": "ast", "raw": '"","4915199999999","4930901820",...', "fileSha256": "ab",
                                     "lineNo": 7},
                            received_at=received_at)
        session.add(row)
        session.flush()
        return row.id


def _record(db_url: str, record_id: str) -> UsageRecord:
    with session_scope(db_url) as session:
        return session.get(UsageRecord, record_id)


def _rejected_row(db_url: str, rejected_id: int) -> RejectedUsage:
    with session_scope(db_url) as session:
        return session.get(RejectedUsage, rejected_id)


# --- billed usage -----------------------------------------------------------------------------------------


def test_usage_billed_six_months_ago_loses_number_country_and_time_but_keeps_what_the_invoice_needs(db_url) -> None:
    account_id, customer_id = _account(db_url)
    old_bill = _invoice(db_url, account_id, customer_id, CUTOFF - timedelta(hours=1), month=4)
    recent_bill = _invoice(db_url, account_id, customer_id, CUTOFF + timedelta(hours=1), month=5)
    old, recent, unbilled = _usage(db_url, account_id, old_bill, 4), _usage(db_url, account_id, recent_bill, 5), _usage(db_url, account_id, None, 3)

    report = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[])

    assert (report.usage_records_erased, report.held_accounts, report.billed_before) == (1, [], CUTOFF)
    erased = _record(db_url, old)
    # Whom, when and where: gone. The times become the period's start, so the record still falls in its invoice's period.
    assert (erased.destination, erased.destination_name, erased.roaming_country, erased.zone, erased.band, erased.parts) == (None, None, None, None, None, [])
    assert (erased.event_time, erased.received_at, erased.traffic_erased_at) == (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), AS_OF)
    # What the invoice line needs is untouched.
    assert (erased.invoice_id, erased.amount_micros, erased.quantity, erased.units, erased.chargeable_units, erased.tariff_version,
            erased.usage_type, erased.product_id, erased.period_start) == (
        old_bill, 870_000, 127, 3, 3, "2026-01", "voice", "p-ret", datetime(2026, 4, 1, tzinfo=UTC))
    for kept in (recent, unbilled):  # billed less than six months ago; not billed at all (still needed for billing)
        row = _record(db_url, kept)
        assert (row.destination, row.roaming_country, row.traffic_erased_at) == ("4930901820", "AT", None)
    # The API says what happened; the called number is no longer shown.
    shown = usage_json(erased)
    assert shown["@o2cTrafficDataErasedAt"] == "2026-11-30T12:00:00Z"
    assert "destination" not in {c["name"] for c in shown["usageCharacteristic"]}
    assert usage_json(_record(db_url, recent))["@o2cTrafficDataErasedAt"] is None


def test_a_second_run_erases_nothing_more_and_a_dry_run_changes_nothing(db_url) -> None:
    account_id, customer_id = _account(db_url)
    old_bill = _invoice(db_url, account_id, customer_id, datetime(2026, 2, 3, tzinfo=UTC), month=1)
    records = [_usage(db_url, account_id, old_bill, 1) for _ in range(3)]

    dry = erase_expired_traffic_data(db_url, AS_OF, dry_run=True, billing_account_ids=[account_id], rejected_ids=[])
    assert (dry.usage_records_erased, dry.dry_run) == (3, True)
    assert all(_record(db_url, r).destination == "4930901820" for r in records)

    assert erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[]).usage_records_erased == 3
    again = erase_expired_traffic_data(db_url, AS_OF + timedelta(days=1), billing_account_ids=[account_id], rejected_ids=[])
    assert again.usage_records_erased == 0
    # The first erasure's time stays: the second run did not touch the rows.
    assert {_record(db_url, r).traffic_erased_at for r in records} == {AS_OF}


def test_an_open_chargeback_keeps_its_accounts_traffic_data_until_it_is_closed(db_url) -> None:
    account_id, customer_id = _account(db_url)
    old_bill = _invoice(db_url, account_id, customer_id, datetime(2026, 3, 2, tzinfo=UTC), month=2)
    record = _usage(db_url, account_id, old_bill, 2)
    with session_scope(db_url) as session:
        session.add(Refund(id=str(uuid.uuid4()), correlator_id=f"dispute:{uuid.uuid4().hex}", kind="chargeback", payment_id="pay-x",
                           billing_account_id=account_id, amount_cents=119, method="gateway", status="succeeded",
                           dispute_id=f"dp_{uuid.uuid4().hex[:10]}", dispute_status="needs_response", created_at=AS_OF, updated_at=AS_OF))

    held = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[])
    assert (held.usage_records_erased, held.held_accounts) == (0, [account_id])
    assert _record(db_url, record).destination == "4930901820"

    with session_scope(db_url) as session:
        session.exec(select(Refund).where(Refund.billing_account_id == account_id)).one().dispute_status = "lost"
    closed = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[])
    assert (closed.usage_records_erased, closed.held_accounts) == (1, [])
    assert _record(db_url, record).destination is None


def test_a_complaint_hold_placed_by_staff_keeps_the_data_until_released(db_url) -> None:
    account_id, customer_id = _account(db_url)
    record = _usage(db_url, account_id, _invoice(db_url, account_id, customer_id, datetime(2026, 3, 2, tzinfo=UTC), month=2), 2)
    with session_scope(db_url) as session:
        set_traffic_data_hold(session, account_id, "Customer disputes the roaming charges of R-2026-000123")

    held = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[])
    assert (held.usage_records_erased, held.held_accounts, _record(db_url, record).destination) == (0, [account_id], "4930901820")

    with session_scope(db_url) as session:
        set_traffic_data_hold(session, account_id, None)
    released = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[])
    assert (released.usage_records_erased, released.held_accounts, _record(db_url, record).destination) == (1, [], None)


def test_a_run_stopped_after_its_chunks_goes_on_from_its_cursor_and_counts_what_it_did(db_url, monkeypatch) -> None:
    account_id, customer_id = _account(db_url)
    bills = [_invoice(db_url, account_id, customer_id, datetime(2026, month + 1, 2, tzinfo=UTC), month=month) for month in (1, 2, 3)]
    records = [_usage(db_url, account_id, bill, month) for bill, month in zip(bills, (1, 2, 3))]
    monkeypatch.setattr(retention, "INVOICE_CHUNK", 1)

    first = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[], max_chunks=2)
    assert (first.done, first.usage_records_erased) == (False, 2)
    assert [_record(db_url, r).traffic_erased_at for r in records] == [AS_OF, AS_OF, None]  # oldest invoices first

    rest = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[account_id], rejected_ids=[], run_id=first.run_id)
    assert (rest.done, rest.run_id, rest.usage_records_erased) == (True, first.run_id, 3)  # the run's total
    with session_scope(db_url) as session:
        run = session.get(TrafficRetentionRun, first.run_id)
        assert (run.usage_records_erased, run.finished_at is not None, run.cursor_invoice_id) == (3, True, bills[-1])


# --- rejected records -------------------------------------------------------------------------------------


def test_a_rejected_line_goes_six_months_after_receipt_and_can_no_longer_be_recycled(db_url) -> None:
    old = _rejected(db_url, CUTOFF - timedelta(seconds=1))
    recent = _rejected(db_url, CUTOFF + timedelta(seconds=1))

    report = erase_expired_traffic_data(db_url, AS_OF, billing_account_ids=[], rejected_ids=[old, recent])

    assert (report.rejected_lines_erased, report.usage_records_erased) == (1, 0)
    erased = _rejected_row(db_url, old)
    assert (erased.payload, erased.line_erased_at, erased.reason_code) == (ERASED_PAYLOAD, AS_OF, "unknown_subscriber")
    assert erased.record_id.startswith("ast:")  # kept: duplicates are still recognised by it
    assert rejected_usage_json(erased)["@o2cLineErasedAt"] == "2026-11-30T12:00:00Z"
    assert _rejected_row(db_url, recent).payload["raw"].startswith('"","4915199999999"')

    with session_scope(db_url) as session:
        result = recycle(session, [old], load_catalog(get_settings().catalog_path), load_billing_profiles(), "support@test", now=AS_OF).results[0]
    assert (result.status, result.reason_code) == ("rejected", NOT_RECYCLABLE)
    assert "erased" in result.reason
