"""Spending limits: finds, inside the ingesting transaction, the thresholds a cycle's usage cost has
reached, and writes one outbox message per threshold for the billing-account workflow.

Why an outbox and not a signal from here: ingestion runs in the API and in the CDR importer, which
must not depend on Temporal being reachable, and a signal sent before the transaction commits could
report usage that is then rolled back. The message is written with the usage that crossed the
threshold, so either both exist or neither; adapters.temporal.outbox_relay delivers it afterwards.

Each (account, cycle, limit, threshold) gets one message key, so a threshold is reported once however
often it is found: by later batches, by a retried transaction or by a re-run import. The workflow
de-duplicates too (it sends each notice once)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from domain.money import from_micros, from_minor
from domain.spending import SpendingLimit, reached_thresholds
from persistence.tables import BillingAccount, OutboxMessage, UsageRecord

SPENDING_TOPIC = "spending.threshold"


def spending_limit_of(account: BillingAccount) -> SpendingLimit | None:
    if account.spending_limit_cents is None or account.spending_limit_cents <= 0:
        return None
    return SpendingLimit(amount=from_minor(account.spending_limit_cents), hard_cap=account.spending_hard_cap)


def record_spending_crossings(session: Session, accounts: Mapping[str, BillingAccount], touched: Iterable[tuple[str, datetime]],
                              now: datetime) -> int:
    """For each (billing account, period start) that received usage in this transaction and whose
    account has a limit: writes an outbox message for every threshold its cycle cost has reached.
    Returns how many new messages were written. Call it after the batch's records are flushed."""
    limited = {(account_id, start) for account_id, start in touched
               if account_id in accounts and spending_limit_of(accounts[account_id]) is not None}
    if not limited:
        return 0
    costs = _cycle_costs(session, limited)
    messages = []
    for account_id, start in sorted(limited):
        limit = spending_limit_of(accounts[account_id])
        assert limit is not None
        cost = costs.get((account_id, start), Decimal(0))
        for percent in reached_thresholds(limit, cost):
            messages.append({
                "key": f"spending:{account_id}:{start.isoformat()}:{limit.amount}:{percent}",
                "topic": SPENDING_TOPIC,
                "payload": {"billingAccountId": account_id, "periodStart": start.isoformat(), "thresholdPercent": percent,
                            "usageCost": str(cost), "limit": str(limit.amount), "hardCap": limit.hard_cap},
                "created_at": now, "delivered_at": None, "next_attempt_at": None, "attempts": 0, "last_error": None,
            })
    return _insert_new(session, messages)


def _cycle_costs(session: Session, keys: set[tuple[str, datetime]]) -> dict[tuple[str, datetime], Decimal]:
    accounts = sorted({a for a, _ in keys})
    starts = sorted({s for _, s in keys})
    statement = (select(UsageRecord.billing_account_id, UsageRecord.period_start, func.sum(UsageRecord.amount_micros))
                 .where(col(UsageRecord.billing_account_id).in_(accounts), col(UsageRecord.period_start).in_(starts))
                 .group_by(UsageRecord.billing_account_id, UsageRecord.period_start))
    return {(account_id, start): from_micros(int(total or 0)) for account_id, start, total in session.exec(statement)
            if (account_id, start) in keys}


def _insert_new(session: Session, messages: list[dict]) -> int:
    if not messages:
        return 0
    connection = session.connection()
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    result = connection.execute(insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id), messages)
    return len(result.fetchall())
