"""Erasing traffic data past its retention (domain.traffic_retention): run nightly by the
TrafficRetentionWorkflow's schedule, or once by `o2c erase-traffic-data`.

- A usage record billed on an invoice issued six months ago or earlier loses its called number, its
  roaming country and its exact time (the time becomes its period's start, so it still falls in the period
  its invoice line names). What the invoice line needs stays: product, usage type, units, amount, tariff
  version, invoice. The invoice's issue date is used for "sent": a bill is sent after it is issued, so
  this never keeps data longer than the law allows.
- The account of a bill under an open chargeback (a complaint) keeps its traffic data until it is closed.
- A rejected record received six months ago or earlier loses its source line (the payload); its reason and
  record id stay, and recycling it answers `not_recyclable`.
- Unbilled usage is still needed for billing and is never erased here.

Work goes in chunks, each in its own short transaction, so a large backlog never holds long locks, and a
run that stops halfway is simply finished by the next one (only rows not yet erased are touched)."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlmodel import col

from domain.traffic_retention import OPEN_COMPLAINT_DISPUTE_STATES, billed_traffic_cutoff, rejected_line_cutoff
from persistence.db import session_scope
from persistence.tables import Invoice, Refund, RejectedUsage, UsageRecord

# What a rejected record's payload becomes: the reason and record id are kept on the row itself.
ERASED_PAYLOAD = {"erased": "traffic data retention"}
_CHUNK = 5_000


class TrafficRetentionReport(BaseModel):
    as_of: datetime
    billed_before: datetime  # traffic data of invoices issued at or before this was due
    rejected_before: datetime  # rejected records received at or before this were due
    usage_records_erased: int = 0  # (with dry_run: would be erased)
    rejected_lines_erased: int = 0
    held_accounts: list[str] = []  # accounts kept because a complaint (chargeback) about a bill is open
    dry_run: bool = False


def _held_accounts(session, billing_account_ids: list[str] | None) -> list[str]:
    statement = select(Refund.billing_account_id).where(col(Refund.dispute_status).in_(OPEN_COMPLAINT_DISPUTE_STATES)).distinct()
    if billing_account_ids is not None:
        statement = statement.where(col(Refund.billing_account_id).in_(billing_account_ids))
    return sorted(session.execute(statement).scalars())


def _due_usage(billed_before: datetime, held: list[str], billing_account_ids: list[str] | None):
    """Ids of usage records whose traffic data is past retention and not yet erased."""
    issued_long_ago = select(Invoice.id).where(col(Invoice.number).is_not(None), col(Invoice.issued_at) <= billed_before)
    statement = select(UsageRecord.id).where(col(UsageRecord.traffic_erased_at).is_(None), col(UsageRecord.invoice_id).in_(issued_long_ago))
    if held:
        statement = statement.where(col(UsageRecord.billing_account_id).not_in(held))
    if billing_account_ids is not None:
        statement = statement.where(col(UsageRecord.billing_account_id).in_(billing_account_ids))
    return statement


def _due_rejected(rejected_before: datetime, rejected_ids: list[int] | None):
    statement = select(RejectedUsage.id).where(col(RejectedUsage.line_erased_at).is_(None), col(RejectedUsage.received_at) <= rejected_before)
    if rejected_ids is not None:
        statement = statement.where(col(RejectedUsage.id).in_(rejected_ids))
    return statement


def _count(db_url: str, ids_statement) -> int:
    from sqlalchemy import func

    with session_scope(db_url) as session:
        return int(session.execute(select(func.count()).select_from(ids_statement.subquery())).scalar_one())


def _erase_in_chunks(db_url: str, ids_statement, erase) -> int:  # noqa: ANN001 - a select of ids, a callable(session, ids)
    erased = 0
    while True:
        with session_scope(db_url) as session:
            ids = list(session.execute(ids_statement.limit(_CHUNK)).scalars())
            if not ids:
                return erased
            erase(session, ids)
        erased += len(ids)


def erase_expired_traffic_data(db_url: str, as_of: datetime, *, dry_run: bool = False, billing_account_ids: list[str] | None = None,
                               rejected_ids: list[int] | None = None) -> TrafficRetentionReport:
    """Erases what is past retention at `as_of` and reports how much. `billing_account_ids` / `rejected_ids`
    narrow a run (staff checking one account; tests); None means every account / every rejected record."""
    report = TrafficRetentionReport(as_of=as_of, billed_before=billed_traffic_cutoff(as_of), rejected_before=rejected_line_cutoff(as_of), dry_run=dry_run)
    with session_scope(db_url) as session:
        report.held_accounts = _held_accounts(session, billing_account_ids)
    usage_ids = _due_usage(report.billed_before, report.held_accounts, billing_account_ids)
    rejected = _due_rejected(report.rejected_before, rejected_ids)
    if dry_run:
        report.usage_records_erased = _count(db_url, usage_ids)
        report.rejected_lines_erased = _count(db_url, rejected)
        return report

    def erase_usage(session, ids: list[str]) -> None:
        session.execute(update(UsageRecord).where(col(UsageRecord.id).in_(ids), col(UsageRecord.traffic_erased_at).is_(None))
                        .values(destination=None, roaming_country=None, event_time=UsageRecord.period_start, traffic_erased_at=as_of)
                        .execution_options(synchronize_session=False))

    def erase_lines(session, ids: list[int]) -> None:
        session.execute(update(RejectedUsage).where(col(RejectedUsage.id).in_(ids), col(RejectedUsage.line_erased_at).is_(None))
                        .values(payload=ERASED_PAYLOAD, line_erased_at=as_of).execution_options(synchronize_session=False))

    report.usage_records_erased = _erase_in_chunks(db_url, usage_ids, erase_usage)
    report.rejected_lines_erased = _erase_in_chunks(db_url, rejected, erase_lines)
    return report
