"""Spending limits: finds, inside the ingesting transaction, the thresholds a cycle's usage cost has
reached, and writes one outbox message per threshold for the billing-account workflow.

Why an outbox and not a signal from here: ingestion runs in the API and in the CDR importer, which
must not depend on Temporal being reachable, and a signal sent before the transaction commits could
report usage that is then rolled back. The message is written with the usage that crossed the
threshold, so either both exist or neither; adapters.temporal.outbox_relay delivers it afterwards.

The cost of a cycle is kept running on the allowance counters (allowance_counter.usage_micros and
roaming_data_micros, per product and period), moved under the counter's row lock by every write of
usage: by the API, a CDR file, recycling and re-rating. An account's cost is the sum over its
products' counters for the period (a row or two), never a sum over its usage records.

Each (account, cycle, limit, threshold) gets one message key, so a threshold is reported once however
often it is found: by later batches, by a retried transaction or by a re-run import. The workflow
de-duplicates too (it sends each notice once).

Two kinds of limit (domain.spending): the account's own spending limit on all usage, and the EU
roaming data cut-off limit on data used in capped roaming zones, which every account has unless it
opted out. Each has its own message key and notice."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from domain.money import from_micros, from_minor
from domain.spending import EU_ROAMING_DATA_CAP, ROAMING_DATA, SPENDING, SpendingLimit, reached_thresholds
from persistence.tables import AllowanceCounter, BillingAccount, OutboxMessage, Product

SPENDING_TOPIC = "spending.threshold"

CostKey = tuple[str, datetime]  # (billing account id, period start)
# What a transaction adds to a period's cost, in micros: (all usage, roaming data in capped zones).
CostDelta = tuple[int, int]

_CHUNK = 2_000


def spending_limit_of(account: BillingAccount) -> SpendingLimit | None:
    if account.spending_limit_cents is None or account.spending_limit_cents <= 0:
        return None
    return SpendingLimit(amount=from_minor(account.spending_limit_cents), hard_cap=account.spending_hard_cap)


def add_cost(costs: dict[CostKey, CostDelta], key: CostKey, amount_micros: int, roaming_data_micros: int) -> None:
    """Adds one record's (or group's) cost to a transaction's deltas."""
    found = costs.get(key)
    costs[key] = (amount_micros, roaming_data_micros) if found is None else (found[0] + amount_micros, found[1] + roaming_data_micros)


def record_spending_crossings(session: Session, accounts: Mapping[str, BillingAccount], costs: Mapping[CostKey, CostDelta],
                              now: datetime) -> int:
    """For each (billing account, period start) in `costs` (what this transaction added, in micros:
    all usage, roaming data in capped zones; the counters carry it already) writes an outbox message
    for every threshold the period's cost has reached: of the account's spending limit (`accounts`
    holds at least every touched account that has one) and of the roaming data cap (accounts whose
    roaming data grew, unless they opted out). Returns how many new messages were written. Call it
    in the usage's transaction, after its counters are written."""
    if not costs:
        return 0
    limited = {key for key in costs if key[0] in accounts and spending_limit_of(accounts[key[0]]) is not None}
    roaming = {key for key, (_, roaming_micros) in costs.items() if roaming_micros > 0}
    if not limited and not roaming:
        return 0
    totals, opted_out = _costs_and_opt_outs(session, limited | roaming)
    roaming = {key for key in roaming if key[0] not in opted_out}
    messages = []
    for account_id, start in sorted(limited):
        limit = spending_limit_of(accounts[account_id])
        assert limit is not None
        cost = from_micros(totals.get((account_id, start), (0, 0))[0])
        for percent in reached_thresholds(limit, cost):
            messages.append(_message(f"spending:{account_id}:{start.isoformat()}:{limit.amount}:{percent}", SPENDING, account_id, start,
                                     percent, cost, limit, now))
    for account_id, start in sorted(roaming):
        limit = EU_ROAMING_DATA_CAP
        cost = from_micros(totals.get((account_id, start), (0, 0))[1])
        for percent in reached_thresholds(limit, cost):
            messages.append(_message(f"roaming-data:{account_id}:{start.isoformat()}:{limit.amount}:{percent}", ROAMING_DATA, account_id,
                                     start, percent, cost, limit, now))
    return _insert_new(session, messages)


def _message(key: str, kind: str, account_id: str, start: datetime, percent: int, cost: Decimal, limit: SpendingLimit,
             now: datetime) -> dict:
    return {
        "key": key,
        "topic": SPENDING_TOPIC,
        "payload": {"billingAccountId": account_id, "periodStart": start.isoformat(), "thresholdPercent": percent,
                    "usageCost": str(cost), "limit": str(limit.amount), "hardCap": limit.hard_cap, "kind": kind},
        "created_at": now, "delivered_at": None, "next_attempt_at": None, "attempts": 0, "last_error": None,
    }


def usage_costs(session: Session, keys: Iterable[CostKey]) -> dict[CostKey, CostDelta]:
    """The cost so far (all usage, roaming data in capped zones), in micros, of these (account,
    period) pairs: the sum over the accounts' products' allowance counters."""
    wanted = set(keys)
    accounts = sorted({account_id for account_id, _ in wanted})
    starts = sorted({start for _, start in wanted})
    found: dict[CostKey, CostDelta] = {}
    for first in range(0, len(accounts), _CHUNK):
        statement = (select(Product.billing_account_id, AllowanceCounter.period_start, func.sum(AllowanceCounter.usage_micros),
                            func.sum(AllowanceCounter.roaming_data_micros))
                     .join(Product, col(Product.id) == col(AllowanceCounter.product_id))
                     .where(col(Product.billing_account_id).in_(accounts[first:first + _CHUNK]), col(AllowanceCounter.period_start).in_(starts))
                     .group_by(Product.billing_account_id, AllowanceCounter.period_start))
        for account_id, start, amount, roaming in session.exec(statement):
            if (account_id, start) in wanted:
                found[(account_id, start)] = (int(amount or 0), int(roaming or 0))
    return found


def _costs_and_opt_outs(session: Session, keys: set[CostKey]) -> tuple[dict[CostKey, CostDelta], set[str]]:
    """usage_costs for `keys`, and which of their accounts opted out of the roaming data cap. On
    PostgreSQL one statement with the keys as arrays: it runs in the CDR importer's writer thread,
    where every bit of Python waits for the GIL the parsing thread holds."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        account_ids = sorted({account_id for account_id, _ in keys})
        opted_out: set[str] = set()
        for first in range(0, len(account_ids), _CHUNK):
            statement = select(BillingAccount.id).where(col(BillingAccount.id).in_(account_ids[first:first + _CHUNK]),
                                                        col(BillingAccount.roaming_data_cap_opt_out).is_(True))
            opted_out.update(session.exec(statement))
        return usage_costs(session, keys), opted_out
    ordered = sorted(keys)
    rows = connection.exec_driver_sql(
        "SELECT k.a, k.s, coalesce(sum(c.usage_micros), 0), coalesce(sum(c.roaming_data_micros), 0), bool_or(b.roaming_data_cap_opt_out) "
        "FROM unnest(%s::varchar[], %s::timestamptz[]) AS k(a, s) JOIN billing_account b ON b.id = k.a "
        "LEFT JOIN product p ON p.billing_account_id = k.a "
        "LEFT JOIN allowance_counter c ON c.product_id = p.id AND c.period_start = k.s GROUP BY k.a, k.s",
        ([a for a, _ in ordered], [s for _, s in ordered])).all()
    return {(a, s): (int(amount), int(roaming)) for a, s, amount, roaming, _ in rows}, {a for a, _, _, _, out in rows if out}


def _insert_new(session: Session, messages: list[dict]) -> int:
    if not messages:
        return 0
    connection = session.connection()
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    # A limited account past a threshold finds it again in every batch: leave out the messages written
    # already before inserting (cheaper than serialising and refusing them); the unique key still
    # settles a race with a concurrent writer.
    keys = [m["key"] for m in messages]
    known: set[str] = set()
    for first in range(0, len(keys), _CHUNK):
        known.update(connection.execute(select(table.c.key).where(table.c.key.in_(keys[first:first + _CHUNK]))).scalars())
    messages = [m for m in messages if m["key"] not in known]
    if not messages:
        return 0
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    result = connection.execute(insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id), messages)
    return len(result.fetchall())
