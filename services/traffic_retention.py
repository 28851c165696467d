"""Erasing traffic data past its retention (domain.traffic_retention): run nightly by the
TrafficRetentionWorkflow's schedule, or once by `o2c erase-traffic-data`.

- A usage record billed on an invoice issued six months ago or earlier loses what says whom the customer called,
  when and where: the called number and its destination name, the roaming country and zone, the time band and
  the priced parts; its event and arrival times become its period's start, so it still falls in the period its
  invoice line names. What the invoice line needs stays: product, usage type, quantity, units, amount, tariff
  version, invoice. The invoice's issue date is used for "sent": a bill is sent after it is issued, so this never
  keeps data longer than the law allows.
- An account with an open complaint keeps its traffic data: staff put a hold on it (PATCH billingAccount
  `trafficDataHold`), and an open card chargeback counts as one. Holds are read again in every chunk's
  transaction; an account held during a run is visited again by the next run once it is released.
- A rejected record received six months ago or earlier loses its source line (the payload); its reason and
  record id stay, and recycling it answers `not_recyclable`.
- Unbilled usage is still needed for billing and is never erased here.

How it walks: due invoices by (issue date, id) from where the last finished run stopped (`billed_before` of the
last finished run over every account), a chunk of invoices per short transaction; rejected lines by receipt
time through a partial index of the lines still kept. Each chunk's counts and the walk's cursor are written to
the run's row (`traffic_retention_run`) in the chunk's own transaction, so a run that stops halfway is on record
and is resumed from its cursor; erasing only rows not erased yet makes any repeat a no-op."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, or_, select, tuple_, update
from sqlmodel import Session, col

from domain.traffic_retention import OPEN_COMPLAINT_DISPUTE_STATES, billed_traffic_cutoff, rejected_line_cutoff
from persistence.db import session_scope
from persistence.tables import BillingAccount, Invoice, Refund, RejectedUsage, TrafficRetentionRun, UsageRecord
from services.query import new_id, utcnow

# What a rejected record's payload becomes: the reason and record id are kept on the row itself.
ERASED_PAYLOAD = {"erased": "traffic data retention"}
INVOICE_CHUNK = 200  # invoices per transaction (about 100 usage records each)
REJECTED_CHUNK = 5_000


class TrafficRetentionReport(BaseModel):
    run_id: str | None = None  # None for a dry run
    as_of: datetime
    billed_before: datetime  # traffic data of invoices issued at or before this was due
    rejected_before: datetime  # rejected records received at or before this were due
    usage_records_erased: int = 0  # (dry run: would be erased)
    rejected_lines_erased: int = 0
    held_accounts: list[str] = []  # kept because a complaint is open (a hold or a card chargeback)
    dry_run: bool = False
    done: bool = True  # False: stopped after `max_chunks`; call again with the same run id to go on


def held_accounts(session: Session, billing_account_ids: list[str] | None = None) -> set[str]:
    """Accounts whose traffic data is kept past retention: a hold placed by staff, or an open card chargeback."""
    disputed = select(Refund.billing_account_id).where(col(Refund.dispute_status).in_(OPEN_COMPLAINT_DISPUTE_STATES))
    on_hold = select(BillingAccount.id).where(col(BillingAccount.traffic_data_hold_reason).is_not(None))
    if billing_account_ids is not None:
        disputed = disputed.where(col(Refund.billing_account_id).in_(billing_account_ids))
        on_hold = on_hold.where(col(BillingAccount.id).in_(billing_account_ids))
    return set(session.execute(disputed).scalars()) | set(session.execute(on_hold).scalars())


def _scope(billing_account_ids: list[str] | None, rejected_ids: list[int] | None) -> dict | None:
    if billing_account_ids is None and rejected_ids is None:
        return None
    return {"billingAccountIds": billing_account_ids, "rejectedIds": rejected_ids}


def _last_finished(session: Session) -> TrafficRetentionRun | None:
    """The last finished run over every account: where the walk through invoices goes on from."""
    return session.execute(select(TrafficRetentionRun).where(col(TrafficRetentionRun.finished_at).is_not(None),
                                                             col(TrafficRetentionRun.scope).is_(None))
                           .order_by(col(TrafficRetentionRun.billed_before).desc()).limit(1)).scalars().first()


def _due_invoices(run: TrafficRetentionRun, previous: TrafficRetentionRun | None):
    """Issued invoices whose usage is due: issued after the last finished run's cutoff (all of them on the first
    run), plus every earlier one of the accounts that run had to keep."""
    statement = select(Invoice.id, Invoice.issued_at, Invoice.billing_account_id).where(col(Invoice.number).is_not(None), col(Invoice.issued_at) <= run.billed_before)
    scope = run.scope or {}
    if scope.get("billingAccountIds") is not None:
        statement = statement.where(col(Invoice.billing_account_id).in_(scope["billingAccountIds"]))
    elif previous is not None:
        newer = col(Invoice.issued_at) > previous.billed_before
        statement = statement.where(or_(newer, col(Invoice.billing_account_id).in_(previous.held_accounts)) if previous.held_accounts else newer)
    if run.cursor_issued_at is not None:
        statement = statement.where(tuple_(Invoice.issued_at, Invoice.id) > tuple_(run.cursor_issued_at, run.cursor_invoice_id))
    return statement.order_by(col(Invoice.issued_at), col(Invoice.id))


def _erase_usage_chunk(db_url: str, run_id: str, previous: TrafficRetentionRun | None) -> bool:
    """Erases the usage of the next chunk of due invoices; False when there was none left."""
    with session_scope(db_url) as session:
        run = session.get(TrafficRetentionRun, run_id, with_for_update=True)
        invoices = session.execute(_due_invoices(run, previous).limit(INVOICE_CHUNK)).all()
        if not invoices:
            return False
        scope_ids = (run.scope or {}).get("billingAccountIds")
        held = held_accounts(session, scope_ids)  # read again in this transaction: a hold placed during the run counts
        erase = (update(UsageRecord)
                 .where(col(UsageRecord.invoice_id).in_([i.id for i in invoices]), col(UsageRecord.traffic_erased_at).is_(None))
                 .values(destination=None, destination_name=None, roaming_country=None, zone=None, band=None, parts=[],
                         event_time=UsageRecord.period_start, received_at=UsageRecord.period_start, traffic_erased_at=run.as_of)
                 .execution_options(synchronize_session=False))
        if held:
            erase = erase.where(col(UsageRecord.billing_account_id).not_in(sorted(held)))
        run.usage_records_erased += session.execute(erase).rowcount
        run.cursor_issued_at, run.cursor_invoice_id = invoices[-1].issued_at, invoices[-1].id
        run.held_accounts = sorted(set(run.held_accounts) | (held & {i.billing_account_id for i in invoices}))
        session.add(run)
        return True


def _due_lines(run: TrafficRetentionRun):
    statement = select(RejectedUsage.id).where(col(RejectedUsage.line_erased_at).is_(None), col(RejectedUsage.received_at) <= run.rejected_before)
    rejected_ids = (run.scope or {}).get("rejectedIds")
    if rejected_ids is not None:
        statement = statement.where(col(RejectedUsage.id).in_(rejected_ids))
    elif (run.scope or {}).get("billingAccountIds") is not None:
        return None  # a run limited to accounts: rejected records belong to no account
    return statement.order_by(col(RejectedUsage.received_at), col(RejectedUsage.id))


def _erase_lines_chunk(db_url: str, run_id: str) -> bool:
    with session_scope(db_url) as session:
        run = session.get(TrafficRetentionRun, run_id, with_for_update=True)
        due = _due_lines(run)
        ids = [] if due is None else list(session.execute(due.limit(REJECTED_CHUNK)).scalars())
        if not ids:
            return False
        run.rejected_lines_erased += session.execute(
            update(RejectedUsage).where(col(RejectedUsage.id).in_(ids), col(RejectedUsage.line_erased_at).is_(None))
            .values(payload=ERASED_PAYLOAD, line_erased_at=run.as_of).execution_options(synchronize_session=False)).rowcount
        session.add(run)
        return True


def _report(run: TrafficRetentionRun, done: bool) -> TrafficRetentionReport:
    return TrafficRetentionReport(run_id=run.id, as_of=run.as_of, billed_before=run.billed_before, rejected_before=run.rejected_before,
                                  usage_records_erased=run.usage_records_erased, rejected_lines_erased=run.rejected_lines_erased,
                                  held_accounts=list(run.held_accounts), done=done)


def _start_or_resume(db_url: str, run_id: str | None, as_of: datetime, scope: dict | None) -> str:
    with session_scope(db_url) as session:
        if run_id is not None and session.get(TrafficRetentionRun, run_id) is not None:
            return run_id  # a retried or continued call goes on where the run stands
        run = TrafficRetentionRun(id=run_id or new_id(), as_of=as_of, billed_before=billed_traffic_cutoff(as_of),
                                  rejected_before=rejected_line_cutoff(as_of), scope=scope, started_at=utcnow())
        session.add(run)
        return run.id


def _dry_run(db_url: str, as_of: datetime, scope: dict | None) -> TrafficRetentionReport:
    run = TrafficRetentionRun(id="dry-run", as_of=as_of, billed_before=billed_traffic_cutoff(as_of), rejected_before=rejected_line_cutoff(as_of),
                              scope=scope, started_at=as_of)
    with session_scope(db_url) as session:
        previous = None if scope is not None else _last_finished(session)
        held = held_accounts(session, (scope or {}).get("billingAccountIds"))
        invoices = _due_invoices(run, previous).subquery()
        usage = (select(func.count()).select_from(UsageRecord)
                 .where(col(UsageRecord.invoice_id).in_(select(invoices.c.id)), col(UsageRecord.traffic_erased_at).is_(None)))
        if held:
            usage = usage.where(col(UsageRecord.billing_account_id).not_in(sorted(held)))
        due = _due_lines(run)
        lines = 0 if due is None else session.execute(select(func.count()).select_from(due.subquery())).scalar_one()
        return TrafficRetentionReport(as_of=as_of, billed_before=run.billed_before, rejected_before=run.rejected_before,
                                      usage_records_erased=session.execute(usage).scalar_one(), rejected_lines_erased=lines,
                                      held_accounts=sorted(held), dry_run=True)


def erase_expired_traffic_data(db_url: str, as_of: datetime, *, dry_run: bool = False, billing_account_ids: list[str] | None = None,
                               rejected_ids: list[int] | None = None, run_id: str | None = None,
                               max_chunks: int | None = None) -> TrafficRetentionReport:
    """Erases what is past retention at `as_of` and reports the run. `billing_account_ids` / `rejected_ids` limit
    a run (staff checking one account; tests): None means every account / every rejected record. `max_chunks`
    bounds the work of one call (the workflow's activity); the report's `done` says whether the run finished,
    and a call with the same `run_id` goes on from where it stopped."""
    scope = _scope(billing_account_ids, rejected_ids)
    if dry_run:
        return _dry_run(db_url, as_of, scope)
    run_id = _start_or_resume(db_url, run_id, as_of, scope)
    with session_scope(db_url) as session:
        previous = None if scope is not None else _last_finished(session)
        if previous is not None:
            session.expunge(previous)
    chunks, done = 0, False
    while max_chunks is None or chunks < max_chunks:
        chunks += 1
        if not (_erase_usage_chunk(db_url, run_id, previous) or _erase_lines_chunk(db_url, run_id)):
            done = True
            break
    with session_scope(db_url) as session:
        run = session.get(TrafficRetentionRun, run_id)
        if done and run.finished_at is None:
            run.finished_at = utcnow()
            session.add(run)
        session.flush()
        return _report(run, done)
