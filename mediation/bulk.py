"""The bulk path of the CDR importer: a file's lines, batch by batch, into rated usage_record rows.

services.usage_ingest.ingest takes a list of ParsedUsage (the TMF635 shape) and builds dicts, ORM
objects and a result per record. A file of millions of lines needs none of that: here the parser's
events become plain tuples, are guided and rated per (product, period) with the compiled tariff, and
the rows go to PostgreSQL by COPY as preformatted text. The rules are those of `ingest` (see its
module docstring), applied in the same order, so a record is rated, stored, counted or rejected as
the TMF635 API would (tests/mediation/test_bulk.py compares the two):

1. Guiding uses a snapshot: the products of the file's MSISDNs, their accounts and billing periods,
   read when a number first comes up in the file and kept for the rest of the import, instead of
   once per batch. A product set up while a file is being imported is seen by the next file; usage
   of a number nobody held is rejected (unknown_subscriber) and can be recycled.
2. Duplicates: a record id repeated within the batch or accepted by the previous batch of this
   import is a duplicate without asking the database. Ids stored earlier (other files, other
   sources, other runs) are found by the database: the batch's rows are COPYed inside a savepoint,
   and only when the primary key refuses one are the batch's stored ids looked up, dropped as
   duplicates, and the groups they were in rated again before the COPY is repeated. A record rejected
   while its id is stored is a duplicate too (ingest looks at stored ids first), so the ids of the
   batch's rejections are looked up in every batch (they are few).
3. Allowance counters: rating needs each (product, period) counter before the batch is written. The
   importer keeps the counters its previous batches left and reads those it has not seen yet; the
   batch's transaction then locks every counter it touches (SELECT ... FOR UPDATE, in one order for
   everyone) and compares: a group whose counter differs from what rating assumed (the API or another
   importer used it meanwhile) is rated again from the locked value. So every counter is still
   read, used in event-time order and written under its row lock, as in ingest.
4. One transaction per batch stores the records, the counters (with the running cost of their
   period, which each group's rated amounts move), the rejected lines, the spending-limit and roaming
   data cap outbox messages (services.spending_monitor.record_spending_crossings, with the limited
   accounts and what each (account, period) received) and the file's progress (imported_file). A crash
   loses only batches not yet committed, and the next run resumes after the last committed line.
5. On PostgreSQL a writer thread runs each batch's transaction while the main thread parses and rates
   the next batch, so PostgreSQL (on the other core) works on the COPY while Python prepares the next
   rows; the main thread also prepares the statements' parameters, so the writer needs little of
   the GIL. A batch is handed over when the writer is free: two batches are in memory at a time,
   whatever the file's size. Batches start small and end small (_Sizes) so neither side waits long
   for the other at the start and end of a file. SQLite (one writer, in-process) runs each batch in
   line and inserts with executemany.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import any_, bindparam, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from domain.billing_cycle import period_containing
from domain.offering_tariff import tariff_for
from domain.rating_engine import AllowanceLimits, AllowanceState
from domain.spending import roaming_cap_zones
from domain.tariff import BANDS, Tariff, TariffBook
from mediation.csvlines import BOM, line_text
from mediation.mcc import country_of_mcc
from mediation.records import RejectedLine, UsageEvent
from persistence.db import engine_for, session_scope
from persistence.tables import AllowanceCounter, BillingAccount, ImportedFile, Product, RejectedUsage, UsageRecord
from services.gc_pause import fewer_gc_passes
from services.compiled_tariffs import engine_and_lock, eu_data_cap_bytes, stand_in_destination
from services.rated_record import BILLING_UNIT, rated_values
from services.spending_monitor import CostDelta, CostKey, add_cost, record_spending_crossings
from services.usage_ingest import MISSING_DESTINATION, OUTSIDE_SUBSCRIPTION, RATING_FAILED, UNKNOWN_SUBSCRIBER

if TYPE_CHECKING:
    from domain.billing_profile import BillingProfile
    from domain.catalog import Catalog

log = logging.getLogger(__name__)

UTC = timezone.utc
OUT_OF_WINDOW = "out_of_window"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_CHUNK = 2_000  # values per IN (...) list: inside every database's bind-parameter limit
_MAX_COPY_ATTEMPTS = 5
_NULL = "\\N"  # COPY text format's NULL
# mediation spells "no answer" NO_ANSWER; the rating engine knows both spellings, ingestion stores the engine's.
ENGINE_DISPOSITION = {"NO_ANSWER": "NO ANSWER"}
# The usage_record columns in the order the COPY text gives them: per-record values first, then those
# that follow from the rating result alone (formatted once per distinct result, see BatchMaker._copy_text),
# then the group's (the same for every record of a product in a period), formatted once per group.
COPY_COLUMNS = ("id", "event_time", "quantity", "destination", "roaming_country",
                "usage_type", "units", "allowance_units", "chargeable_units", "amount_micros", "destination_name", "zone", "band", "parts",
                "disposition",
                "msisdn", "product_id", "billing_account_id", "status", "catalog_version", "period_start", "invoice_id", "received_at",
                "tariff_id", "tariff_version")
COPY_SQL = f"COPY usage_record ({', '.join(COPY_COLUMNS)}) FROM STDIN"


class ImportConflict(RuntimeError):
    """Another process moved this file's import on while this one was working on it."""


@dataclass
class Counts:
    """What became of a file's lines. Every line read (blank lines and a header aside) is in
    exactly one count, so `lines` is the sum of the others."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    not_charged: int = 0
    rejected_parse: int = 0
    rejected_window: int = 0
    rejected_rating: int = 0

    @property
    def rejected(self) -> int:
        return self.rejected_parse + self.rejected_window + self.rejected_rating

    def add(self, other: Counts) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNT_FIELDS = tuple(f.name for f in fields(Counts))

Item = tuple[UsageEvent | RejectedLine, bytes | None]  # the parser's item and, for an event, its raw line


def copy_text(value: str) -> str:
    """A value as a field of COPY's text format (backslash, tab and line breaks escaped)."""
    if "\\" in value or not value.isprintable():
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


# --- what guiding and rating need, read once per import ------------------------------------------


@dataclass(slots=True)
class Account:
    """What rating needs of a billing account: its zone and which cycle its periods follow."""

    id: str
    timezone: str
    cycle: tuple[str, int, str, datetime | None]  # (billing profile, bill-cycle day, zone, anchor): the same periods


@dataclass(slots=True)
class Holder:
    """A product that held an MSISDN over [start, end)."""

    product_id: str
    account_id: str
    offering_id: str
    start: datetime | None
    end: datetime | None
    account: Account | None = None  # None: the account is not there
    period: tuple[datetime, datetime] | None = None  # the billing period last found for it
    in_catalog: bool = True  # its offering is in the catalog
    text: str | None = None  # its columns as COPY text (see BatchMaker._copy_text)
    quoted: str = ""  # the product id as an element of a PostgreSQL array literal


@dataclass(slots=True)
class Plan:
    """How an offering's usage is rated, and its destination names as COPY text."""

    tariff: Tariff
    limits: AllowanceLimits
    eu_data_cap_bytes: int | None
    name_text: dict[str | None, str]
    capped_zones: frozenset[str]  # zones whose data counts towards the roaming data cap (domain.spending)
    outcome_text: dict[tuple, str] = field(default_factory=dict)  # rating results (without record id) as COPY text, see BatchMaker._copy_text


class Snapshot:
    """Products by MSISDN, their accounts and billing periods, and the offerings' tariffs: read as
    the file's numbers come up, then kept for the rest of the import."""

    def __init__(self, db_url: str, catalog: Catalog, profiles: dict[str, BillingProfile], book: TariffBook) -> None:
        self.db_url = db_url
        self.catalog = catalog
        self.profiles = profiles
        self.book = book
        self.holders: dict[str, list[Holder]] = {}  # msisdn -> products that held it (empty: nobody)
        self.accounts: dict[str, Account] = {}
        # Accounts with a spending limit, whole: services.spending_monitor looks at no others.
        self.limited: dict[str, BillingAccount] = {}
        self.periods: dict[tuple, list[tuple[datetime, datetime]]] = {}  # cycle -> periods found so far, newest first
        self.plans: dict[str, Plan | str] = {}  # offering id -> plan, or why its tariff cannot be found

    def load(self, msisdns: Iterable[str]) -> None:
        """Read the products of the numbers not seen yet, and their accounts."""
        missing = sorted(set(msisdns) - self.holders.keys())
        if not missing:
            return
        for msisdn in missing:
            self.holders[msisdn] = []
        products = Product.__table__  # type: ignore[attr-defined]
        accounts = BillingAccount.__table__  # type: ignore[attr-defined]
        with session_scope(self.db_url) as session:
            connection = session.connection()
            # Products store digits only; "+"-prefixed spellings are matched too in case one slipped in.
            spellings = missing + [f"+{m}" for m in missing]
            found: list[Holder] = []
            columns = (products.c.id, products.c.msisdn, products.c.billing_account_id, products.c.offering_id, products.c.start_date,
                       products.c.termination_date)
            for row in _where_in(connection, columns, products.c.msisdn, spellings):
                holder = Holder(row[0], row[2], row[3], _as_utc(row[4]), _as_utc(row[5]))
                self.holders[row[1].removeprefix("+")].append(holder)
                found.append(holder)
            wanted = sorted({h.account_id for h in found} - self.accounts.keys())
            columns = (accounts.c.id, accounts.c.timezone, accounts.c.billing_profile, accounts.c.bill_cycle_day, accounts.c.cycle_anchor,
                       accounts.c.spending_limit_cents)
            limited = []
            for row in _where_in(connection, columns, accounts.c.id, wanted):
                self.accounts[row[0]] = Account(row[0], row[1], (row[2], row[3], row[1], _as_utc(row[4])))
                if row[5] is not None:
                    limited.append(row[0])
            for start in range(0, len(limited), _CHUNK):
                for account in session.exec(select(BillingAccount).where(col(BillingAccount.id).in_(limited[start:start + _CHUNK]))):
                    self.limited[account.id] = account
        for holder in found:
            holder.account = self.accounts.get(holder.account_id)
            holder.in_catalog = self.catalog.offering(holder.offering_id) is not None
            holder.quoted = '"' + holder.product_id.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def period(self, account: Account, at: datetime) -> tuple[datetime, datetime]:
        """The account's billing period [start, end) containing `at`. Raises KeyError, ValueError."""
        periods = self.periods.get(account.cycle)
        if periods is None:
            periods = self.periods[account.cycle] = []
        for found in periods:
            if found[0] <= at < found[1]:
                return found
        profile, bill_cycle_day, zone, anchor = account.cycle
        period = period_containing(self.profiles[profile].cycle_spec(bill_cycle_day, zone, anchor), at)
        periods.insert(0, (period.start, period.end))
        del periods[12:]  # a file spans a period or two; late usage may reach back a few
        return periods[0]

    def plan(self, offering_id: str) -> Plan | str:
        found = self.plans.get(offering_id)
        if found is None:
            offering = self.catalog.offering(offering_id)
            assert offering is not None
            try:
                tariff = tariff_for(offering, self.book)
            except KeyError as exc:
                found = f"offering {offering.id} names tariff {offering.tariff_id!r}, which is not in the tariff book: {exc}"
            else:
                names: dict[str | None, str] = {None: _NULL, **{d.name: copy_text(d.name) for d in tariff.destinations}}
                found = Plan(tariff, AllowanceLimits.from_allowances(offering.allowances), eu_data_cap_bytes(tariff, offering), names,
                             roaming_cap_zones(tariff))
            self.plans[offering_id] = found
        return found


def _where_in(connection: Any, columns: tuple, column: Any, values: list[Any]) -> Iterator[Any]:
    """Rows of `columns` whose `column` is one of `values`: one `= ANY(array)` on PostgreSQL (on the
    driver's cursor, with the values as one array literal: adapting and fetching tens of thousands of
    rows through SQLAlchemy costs several times as much), IN lists of _CHUNK values elsewhere.
    Timestamps may come back in another zone than UTC: callers pass them through _as_utc."""
    if not values:
        return
    if connection.dialect.name == "postgresql":
        statement = select(*columns).where(column == any_(bindparam("values", type_=ARRAY(column.type))))
        sql = str(statement.compile(dialect=connection.dialect)).replace("%(values)s", "%s")  # ANY (%s::VARCHAR[])
        with connection.connection.driver_connection.cursor() as cursor:
            cursor.execute(sql, (pg_array(values),))
            yield from cursor.fetchall()
        return
    for start in range(0, len(values), _CHUNK):
        yield from connection.execute(select(*columns).where(column.in_(values[start:start + _CHUNK])))


def _as_utc(value: datetime | None) -> datetime | None:
    """A timestamp as persistence.types.UtcDateTime reads it: aware, in UTC."""
    if value is None or value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def guide(holders: list[Holder], at: datetime) -> Holder | None:
    """The product holding the number at `at` (start <= at < end); the newest holder if data ever
    says two did (as services.usage_ingest._guide)."""
    best = None
    for holder in holders:
        if holder.start is not None and holder.start <= at and (holder.end is None or at < holder.end):
            if best is None or holder.start > best.start:  # type: ignore[operator]
                best = holder
    return best


# --- a batch -------------------------------------------------------------------------------------

# A record to rate: (EventRow for the engine, event time, called number as received, position in the batch's items)
Record = tuple[tuple, datetime, "str | None", int]
# A counter as rating sees it: voice_s, sms, data_bytes, eu_roaming_data_bytes, last_event_time, needs_rerate
CounterState = tuple[int, int, int, int, "datetime | None", bool]
_ZERO: CounterState = (0, 0, 0, 0, None, False)


@dataclass(slots=True)
class Group:
    """One product's records of one billing period in a batch, rated together against its counter."""

    key: tuple[str, datetime]  # (product id, period start)
    holder: Holder
    msisdn: str
    plan: Plan
    timezone: str
    records: list[Record]  # sorted by rate()
    before: CounterState = _ZERO  # the counter rating started from
    known: bool = False  # the counter row exists already
    after: CounterState = _ZERO
    rated: list[tuple] | None = None  # RatedRows in the order of `records` (kept for SQLite, which inserts values)
    refused: frozenset[str] = frozenset()  # ids of records the rating engine refused (rejected, not stored)
    stored: int = 0  # records the engine priced
    cost: int = 0  # their amount in micros, for the running usage cost total
    roaming_cost: int = 0  # of which roaming data in capped zones
    text: str = ""  # those rows as COPY text (PostgreSQL)


@dataclass
class Batch:
    number: int
    expected_line_no: int  # the imported_file.last_line_no this batch follows
    last_line_no: int
    final: bool
    counts: Counts
    groups: list[Group]
    # rejected_usage values; "_kind" says which count a rejection is in ("parse", "window", "rating")
    rejections: list[dict[str, Any]]
    accounts: dict[str, BillingAccount]  # the groups' accounts that have a spending limit, for the hook
    arrays: dict[str, list[str]] | None = None  # PostgreSQL: the counter statements' parameters (counter_arrays)
    repaired: dict[tuple[str, datetime], CounterState] = field(default_factory=dict)  # set by the writer


class BatchMaker:
    """Turns parser items into a Batch: classified, guided, grouped and rated. No database writes;
    the reads are the snapshot's and the counters this import has not seen yet."""

    def __init__(self, context: Any, snapshot: Snapshot, now: datetime, *, copy_rows: bool) -> None:
        self.context = context
        self.snapshot = snapshot
        self.now = now
        self.copy_rows = copy_rows
        self.prefix = f"{context.source}:"
        self.counters: dict[tuple[str, datetime], tuple[CounterState, bool, int]] = {}  # key -> (state, row exists, batch number)
        self.previous_ids: set[str] = set()  # ids accepted by the previous batch (which may not be committed yet)
        self.stand_ins: dict[tuple[int, str, str, str | None], str | None] = {}
        self.engines: dict[tuple[int, str], tuple[Any, threading.Lock]] = {}  # (id(tariff), zone) -> compiled tariff, its lock
        self.number = 0
        self._received_text = now.isoformat()
        self._texts: dict[Any, str] = {None: _NULL}  # values as COPY text (zones, countries, period starts)

    def corrected(self, batch: Batch) -> None:
        """The writer rated some of `batch`'s groups again: take its counters, unless a later batch
        has used them since (then that batch is found out and rated again in its turn)."""
        for key, state in batch.repaired.items():
            known = self.counters.get(key)
            if known is not None and known[2] == batch.number:
                self.counters[key] = (state, True, batch.number)

    def _load_counters(self, keys: Iterable[tuple[str, datetime]]) -> None:
        counters = self.counters
        missing = sorted(key for key in keys if key not in counters)
        if not missing:
            return
        for key in missing:
            counters[key] = (_ZERO, False, 0)
        for key, state in read_counters(self.snapshot.db_url, missing).items():
            counters[key] = (state, True, 0)

    def make(self, items: list[Item], expected_line_no: int, *, final: bool) -> Batch:
        self.number += 1
        context, snapshot, now = self.context, self.snapshot, self.now
        counts = Counts(lines=len(items))
        # Rejections in the order ingest would write them: the parse and window ones of the batch's
        # lines first, then those of guiding and rating, each in line order.
        early: list[dict[str, Any]] = []
        rejections: list[dict[str, Any]] = []

        def reject(record_id: str | None, line_no: int, raw: bytes | str | None, code: str, reason: str, kind: str,
                   into: list[dict[str, Any]] = rejections) -> None:
            text = raw if raw is None or raw.__class__ is str else line_text(raw[3:] if line_no == 1 and raw.startswith(BOM) else raw)  # type: ignore[union-attr,arg-type]
            into.append({"record_id": record_id, "reason_code": code, "reason": reason[:2000],
                         "payload": context.payload(line_no, text), "received_at": now, "_kind": kind})

        window = context.window
        oldest, newest = window.bounds()
        prefix = self.prefix
        holders_of = snapshot.holders
        snapshot.load({item.msisdn for item, _ in items if item.__class__ is UsageEvent and item.msisdn not in holders_of})  # type: ignore[union-attr]
        catalog, stand_ins, previous_ids = snapshot.catalog, self.stand_ins, self.previous_ids
        groups: dict[tuple[str, datetime], Group] = {}
        get_group = groups.get
        first_copy: set[str] = set()
        add_first = first_copy.add
        later: list[tuple[UsageEvent, bytes | None, str]] = []
        epoch, microsecond = _EPOCH, _MICROSECOND
        duplicates = not_charged = 0
        # In line order, as ingest: a stored id is a duplicate before anything else; the first copy
        # of an id in the batch is rated, later copies are duplicates of it once it is stored; a copy
        # whose first occurrence was rejected before rating is judged on its own.
        for position, (event, raw) in enumerate(items):
            if event.__class__ is RejectedLine:
                line: RejectedLine = event  # type: ignore[assignment]
                reject(None, line.line_no, line.raw, line.reason_code, line.reason, "parse", early)
                counts.rejected_parse += 1
                continue
            if event.disposition != "ANSWERED":  # type: ignore[union-attr]
                not_charged += 1  # not usage: nothing was consumed, so it is neither stored nor rejected
                continue
            start = event.start  # type: ignore[union-attr]
            record_id = prefix + event.record_id  # type: ignore[union-attr]
            if not oldest <= start <= newest:
                reject(record_id, event.line_no, raw, OUT_OF_WINDOW, window.problem(start), "window", early)  # type: ignore[arg-type]
                counts.rejected_window += 1
                continue
            if record_id in previous_ids:
                duplicates += 1
                continue
            holders = holders_of[event.msisdn]  # type: ignore[union-attr]
            holder = None
            if len(holders) == 1:  # the common case, inlined: one product ever held the number
                holder = holders[0]
                if holder.start is None or start < holder.start or (holder.end is not None and start >= holder.end):
                    holder = None
            elif holders:
                holder = guide(holders, start)
            if holder is None:
                msisdn = event.msisdn  # type: ignore[union-attr]
                if holders:
                    reject(record_id, event.line_no, raw, OUTSIDE_SUBSCRIPTION, f"MSISDN {msisdn} had no active product at {start.isoformat()}", "rating")
                else:
                    reject(record_id, event.line_no, raw, UNKNOWN_SUBSCRIBER, f"no product has MSISDN {msisdn}", "rating")
                counts.rejected_rating += 1
                continue
            if record_id in first_copy:
                later.append((event, raw, record_id))  # type: ignore[arg-type]
                continue
            if not holder.in_catalog:
                reject(record_id, event.line_no, raw, RATING_FAILED,
                       f"offering {holder.offering_id!r} of product {holder.product_id} is not in catalog {catalog.version}", "rating")
                counts.rejected_rating += 1
                continue
            period = holder.period
            if period is None or not period[0] <= start < period[1]:
                try:
                    if holder.account is None:
                        raise KeyError(holder.account_id)
                    holder.period = period = snapshot.period(holder.account, start)
                except (KeyError, ValueError) as exc:
                    reject(record_id, event.line_no, raw, RATING_FAILED, f"cannot find the billing period of product {holder.product_id}: {exc!r}", "rating")
                    counts.rejected_rating += 1
                    continue
            key = (holder.product_id, period[0])
            group = get_group(key)
            if group is None:
                plan = snapshot.plan(holder.offering_id)
                if plan.__class__ is str:
                    reject(record_id, event.line_no, raw, RATING_FAILED, plan, "rating")  # type: ignore[arg-type]
                    counts.rejected_rating += 1
                    continue
                group = groups[key] = Group(key, holder, event.msisdn, plan, holder.account.timezone, [])  # type: ignore[arg-type,union-attr]
            kind = event.kind  # type: ignore[union-attr]
            roaming = None
            if event.roaming_mcc is not None:  # type: ignore[union-attr]
                # An MCC mediation.mcc does not know matches no tariff zone: rejected with that reason, never rated as at home.
                roaming = country_of_mcc(event.roaming_mcc) or f"MCC {event.roaming_mcc}"  # type: ignore[union-attr]
            destination = event.destination  # type: ignore[union-attr]
            rated_destination = destination
            if destination is None and kind != "data":  # answered voice (sms) needs the called number ...
                tariff = group.plan.tariff
                stand_in_key = (id(tariff), group.timezone, kind, roaming)
                if stand_in_key not in stand_ins:
                    stand_ins[stand_in_key] = stand_in_destination(tariff, group.timezone, kind, roaming)
                rated_destination = stand_ins[stand_in_key]  # ... unless one price fits every number
                if rated_destination is None:
                    reject(record_id, event.line_no, raw, MISSING_DESTINATION,
                           f"{kind} usage needs the called number (usageCharacteristic 'destination'): tariff "
                           f"{tariff.id} v{tariff.version} prices destinations differently", "rating")
                    counts.rejected_rating += 1
                    continue
            add_first(record_id)
            # Only answered calls get here (mediation's ANSWERED is the engine's too).
            # UsageEvent.quantity inlined (a property call per record): octets for data, one message for sms, else billsec.
            quantity = event.billsec_s if kind == "voice" else event.bytes_up + event.bytes_down if kind == "data" else 1 if kind == "sms" else event.billsec_s  # type: ignore[union-attr]
            group.records.append((((start - epoch) // microsecond, record_id, kind, quantity, rated_destination, roaming, "ANSWERED"),
                                  start, destination, position))
        counts.not_charged = not_charged

        self._load_counters(groups)
        counters, number = self.counters, self.number
        refused: dict[str, tuple[str, str]] = {}  # record id -> (code, reason) of a record the engine refused
        members = list(groups.values())
        for group in members:
            group.before, group.known, _ = counters[group.key]
        for group, rated in zip(members, self.rate_groups(members)):
            counters[group.key] = (group.after, True, number)
            if group.refused:
                tariff = group.plan.tariff
                for record, result in zip(group.records, rated):
                    if result[9] is not None:
                        reason = f"tariff {tariff.id} v{tariff.version}: {result[9]}"
                        refused[result[0]] = (RATING_FAILED, reason)
                        event, raw = items[record[3]]
                        reject(result[0], event.line_no, raw, RATING_FAILED, reason, "rating")
                        counts.rejected_rating += 1
        accepted = first_copy.difference(refused) if refused else first_copy  # every first copy was rated
        for event, raw, record_id in later:
            if record_id in accepted:
                duplicates += 1
            else:  # its first copy was refused by the rating engine; the same record would be too
                code, reason = refused[record_id]
                reject(record_id, event.line_no, raw, code, reason, "rating")
                counts.rejected_rating += 1
        counts.duplicates = duplicates
        counts.accepted = len(accepted)
        self.previous_ids = accepted
        # Every group goes to the writer, also one whose records the engine all refused: its counter
        # is created and its last event time noted, as ingest does.
        rated = sorted(members, key=_key_of)
        limited = snapshot.limited
        accounts = {group.holder.account_id: limited[group.holder.account_id] for group in rated if group.holder.account_id in limited}
        last_line_no = items[-1][0].line_no if items else expected_line_no
        arrays = counter_arrays(rated, self.text_of) if self.copy_rows and rated else None
        return Batch(number, expected_line_no, last_line_no, final, counts, rated, early + rejections if early else rejections, accounts, arrays)

    def rate(self, group: Group, before: CounterState) -> list[tuple]:
        """Rate the group's records again from the counter `before` (see rate_groups). Returns the RatedRows."""
        group.before = before
        return self.rate_groups([group])[0]

    def rate_groups(self, groups: list[Group]) -> list[list[tuple]]:
        """Rate each group's records (in event-time order) from its counter `before`: sets `after`,
        `stored`, `refused`, `cost`, `roaming_cost` and, for PostgreSQL, `text` (else `rated`).
        Returns the RatedRows of each group. The groups of one compiled tariff are rated in one
        call of the engine: a batch has tens of thousands of groups of a few records each."""
        by_engine: dict[tuple[int, str], list[Group]] = {}
        for group in groups:
            engine_key = (id(group.plan.tariff), group.timezone)
            found = by_engine.get(engine_key)
            if found is None:
                by_engine[engine_key] = [group]
            else:
                found.append(group)
        results: dict[int, list[tuple]] = {}
        for engine_key, members in by_engine.items():
            engine = self.engines.get(engine_key)
            if engine is None:
                first = members[0]
                engine = self.engines[engine_key] = engine_and_lock(first.plan.tariff, first.timezone)
            runs = []
            for group in members:
                records = group.records
                records.sort()  # by EventRow: (start, record id, ...), unique, so the rest is never compared
                plan, before = group.plan, group.before
                runs.append(([record[0] for record in records], plan.limits, AllowanceState(before[0], before[1], before[2], before[3]),
                             plan.eu_data_cap_bytes))
            with engine[1]:
                rated_runs = engine[0].rate_runs(runs)
            if self.copy_rows:
                self._copy_text(members, rated_runs)
            for group, run, rated in zip(members, runs, rated_runs):
                if not self.copy_rows:
                    group.rated = rated
                    refused = [result[0] for result in rated if result[9] is not None]
                    group.refused = frozenset(refused) if refused else _NOTHING
                    group.stored = len(rated) - len(refused)
                    group.cost = sum(result[4] for result in rated if result[9] is None)
                    capped = group.plan.capped_zones
                    group.roaming_cost = (sum(result[4] for result in rated if result[1] == "data" and result[7] in capped and result[9] is None)
                                          if capped else 0)
                before, records, used = group.before, group.records, run[2]
                last, needs_rerate = before[4], before[5]
                if records:
                    # Usage older than usage already rated into the period drew allowance out of time order:
                    # the period is flagged for re-rating (services.usage_rerate), as ingest does.
                    earliest, latest = records[0][1], records[-1][1]
                    if last is not None and earliest < last:
                        needs_rerate = True
                    if last is None or latest > last:
                        last = latest
                group.after = (used.voice_s, used.sms, used.data_bytes, used.eu_roaming_data_bytes, last, needs_rerate)
                results[id(group)] = rated
        return [results[id(group)] for group in groups]

    def text_of(self, value: Any) -> str:
        """A zone, country or period start as COPY text, memoised (few distinct values)."""
        found = self._texts.get(value)
        if found is None:
            found = self._texts[value] = copy_text(value.isoformat() if value.__class__ is datetime else value)
        return found

    def _copy_text(self, groups: list[Group], rated_runs: list[list[tuple]]) -> None:
        """Each group's priced rows in COPY text format (`text`, columns as COPY_COLUMNS), and what
        they sum to (`cost`, `roaming_cost`), `stored` and `refused`. The values are those
        services.rated_record.rated_values gives (tests compare the two)."""
        texts, text_of, catalog_text, null = self._texts, self.text_of, None, _NULL
        received, minutes = self._received_text, _MINUTE_TEXTS
        for group, rated in zip(groups, rated_runs):
            plan, holder = group.plan, group.holder
            tariff, names, capped, outcomes = plan.tariff, plan.name_text, plan.capped_zones, plan.outcome_text
            if holder.text is None:
                if catalog_text is None:
                    catalog_text = copy_text(self.snapshot.catalog.version)
                holder.text = f"{copy_text(group.msisdn)}\t{copy_text(holder.product_id)}\t{copy_text(holder.account_id)}\trated\t{catalog_text}\t"
            tail = f"{holder.text}{text_of(group.key[1])}\t{null}\t{received}\t{text_of(tariff.id)}\t{text_of(tariff.version)}\n"
            out: list[str] = []
            append = out.append
            refused: list[str] | None = None
            cost = roaming_cost = 0
            for record, result in zip(group.records, rated):
                if result[9] is not None:
                    if refused is None:
                        refused = []
                    refused.append(result[0])
                    continue
                record_id, kind, amount, zone = result[0], result[1], result[4], result[7]
                cost += amount
                if kind == "data" and zone in capped:
                    roaming_cost += amount
                # usage_type .. disposition follow from the result without its record id; many results share them.
                outcome = result[1:9]
                middle = outcomes.get(outcome)
                if middle is None:
                    if len(outcomes) >= _MAX_OUTCOMES:
                        outcomes.clear()
                    middle = outcomes[outcome] = self._outcome_text(outcome, names)
                row = record[0]
                if "\\" in record_id or not record_id.isprintable():
                    record_id = copy_text(record_id)
                start_us = row[0]
                if start_us % 1_000_000:
                    time_text = record[1].isoformat()
                else:  # whole seconds (what switches write): the minute's text, memoised, and the second's
                    second = start_us // 1_000_000
                    minute = second // 60
                    time_text = minutes.get(minute)  # type: ignore[assignment]
                    if time_text is None:
                        time_text = _minute_text(minute)
                    time_text += _SECOND_TEXT[second - minute * 60]
                destination, roaming = record[2], row[5]
                append(f"{record_id}\t{time_text}\t{row[3]}\t{null if destination is None else destination}\t"
                       f"{null if roaming is None else texts.get(roaming) or text_of(roaming)}\t{middle}{tail}")
            group.refused = frozenset(refused) if refused else _NOTHING
            group.stored = len(rated) - (len(refused) if refused else 0)
            group.cost, group.roaming_cost = cost, roaming_cost
            group.text = "".join(out)

    @staticmethod
    def _outcome_text(outcome: tuple, names: dict[str | None, str]) -> str:
        """The COPY text of usage_type .. disposition (COPY_COLUMNS) for a rating result without its record id."""
        kind, billed, from_allowance, amount, band, destination_name, zone, parts = outcome
        null, bands = _NULL, BANDS
        unit = BILLING_UNIT[kind]
        units = -(-billed // unit)
        chargeable = -(-(billed - from_allowance) // unit)
        band_name = null if band is None else bands[band]
        if parts:
            parts_text = copy_text(json.dumps([_part(None if b is None else bands[b], u, a, f, m) for b, u, a, f, m in parts]))
        elif billed or amount:
            parts_text = (f'[{{"band": {"null" if band is None else _JSON_BAND[band_name]}, "units": {billed}, "fromAllowance": '
                          f'{"true" if billed and from_allowance == billed else "false"}, "fairUse": false, "amountMicros": {amount}}}]')
        else:
            parts_text = "[]"
        name_text = names.get(destination_name)
        if name_text is None:
            name_text = copy_text(destination_name)
        return (f"{kind}\t{units}\t{units - chargeable}\t{chargeable}\t{amount}\t{name_text}\t{null if zone is None else copy_text(zone)}\t"
                f"{band_name}\t{parts_text}\t{'ANSWERED' if kind == 'voice' else null}\t")

    def values(self, group: Group) -> list[dict[str, Any]]:
        """The group's priced rows as usage_record values (databases without COPY)."""
        holder, tariff = group.holder, group.plan.tariff
        out = []
        for (row, start, destination, _), result in zip(group.records, group.rated or ()):
            if result[9] is not None:
                continue
            out.append({
                "id": row[1], "usage_type": row[2], "msisdn": group.msisdn, "product_id": holder.product_id,
                "billing_account_id": holder.account_id, "event_time": start, "quantity": row[3], "status": "rated",
                "catalog_version": self.snapshot.catalog.version, "period_start": group.key[1], "invoice_id": None,
                "received_at": self.now, "tariff_id": tariff.id, "tariff_version": tariff.version, "destination": destination,
                "roaming_country": row[5], "disposition": row[6] if row[2] == "voice" else None, **rated_values(result),
            })
        return out


_JSON_BAND = {band: json.dumps(band) for band in BANDS}
_MAX_OUTCOMES = 200_000  # distinct rating results kept as text per plan (a few MB)
# An event time as COPY text: "2026-11-30 12:34:" (its minute, memoised) + "56+00". PostgreSQL reads it as the
# same timestamptz as isoformat()'s "2026-11-30T12:34:56+00:00", which costs several times as much per row.
_SECOND_TEXT = tuple(f"{second:02d}+00" for second in range(60))


_MINUTE_TEXTS: dict[int, str] = {}  # minute since the epoch -> _minute_text, for every import of the process (pure)


def _minute_text(minute: int) -> str:
    text = _MINUTE_TEXTS.get(minute)
    if text is None:
        if len(_MINUTE_TEXTS) >= 1_000_000:  # ~2 years of minutes; a bound, not a working-set size
            _MINUTE_TEXTS.clear()
        text = _MINUTE_TEXTS[minute] = datetime.fromtimestamp(minute * 60, UTC).isoformat(" ")[:17]
    return text


def utc_text(instant: datetime) -> str:
    """An aware instant as PostgreSQL text: through the minute memo when it is a whole second, else isoformat."""
    if instant.microsecond:
        return instant.isoformat()
    second = (instant - _EPOCH) // _SECOND
    minute = second // 60
    return _minute_text(minute) + _SECOND_TEXT[second - minute * 60]

_NOTHING: frozenset[str] = frozenset()


def _key_of(group: Group) -> tuple[str, datetime]:
    return group.key


def _part(band: str | None, units: int, from_allowance: bool, fair_use: bool, amount_micros: int) -> dict[str, Any]:
    return {"band": band, "units": units, "fromAllowance": from_allowance, "fairUse": fair_use, "amountMicros": amount_micros}


# --- the database side ---------------------------------------------------------------------------


def read_counters(db_url: str, keys: list[tuple[str, datetime]]) -> dict[tuple[str, datetime], CounterState]:
    """The counters among `keys` that exist, read without a lock (a guess the writer checks)."""
    table = AllowanceCounter.__table__  # type: ignore[attr-defined]
    wanted = set(keys)
    products = sorted({p for p, _ in keys})
    starts = sorted({s for _, s in keys})
    found: dict[tuple[str, datetime], CounterState] = {}
    with session_scope(db_url) as session:
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(f"{_PG_COUNTERS} JOIN unnest(%s::varchar[], %s::timestamptz[]) AS k(p, s) "
                               "ON c.product_id = k.p AND c.period_start = k.s", (pg_array(k[0] for k in keys), pg_array(k[1] for k in keys)))
                return {(row[0], row[1]): (row[2], row[3], row[4], row[5], row[6], row[7]) for row in cursor}
        for start in range(0, len(products), _CHUNK):
            statement = select(*_counter_columns(table)).where(table.c.product_id.in_(products[start:start + _CHUNK]), table.c.period_start.in_(starts))
            for row in connection.execute(statement):
                key = (row[0], row[1])
                if key in wanted:
                    found[key] = (row[2], row[3], row[4], row[5], row[6], bool(row[7]))
    return found


def _counter_columns(table: Any) -> tuple:
    c = table.c
    return (c.product_id, c.period_start, c.voice_s, c.sms, c.data_bytes, c.eu_roaming_data_bytes, c.last_event_time, c.needs_rerate)


def lock_progress(session: Session, sha256: str, expected_line_no: int) -> ImportedFile:
    row = session.exec(select(ImportedFile).where(ImportedFile.sha256 == sha256).with_for_update()
                       .execution_options(populate_existing=True)).first()
    if row is None or row.status != "processing" or row.last_line_no != expected_line_no:
        state = "gone" if row is None else f"{row.status} at line {row.last_line_no}"
        raise ImportConflict(f"file {sha256} is being imported by another process (expected processing at line "
                             f"{expected_line_no}, found {state})")
    return row


def stored_ids(session: Session, ids: Iterable[str]) -> set[str]:
    ordered = sorted(set(ids))
    found: set[str] = set()
    if not ordered:
        return found
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            cursor.execute("SELECT id FROM usage_record WHERE id = ANY(%s::varchar[])", (pg_array(ordered),))
            found.update(row[0] for row in cursor)
        return found
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    for start in range(0, len(ordered), _CHUNK):
        found.update(connection.execute(select(table.c.id).where(table.c.id.in_(ordered[start:start + _CHUNK]))).scalars())
    return found


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of str, int, bool, datetime or None values, for `%s::type[]`.
    Passing a literal is much cheaper than letting the driver adapt a list element by element."""
    out = []
    for value in values:
        if value is None:
            out.append("NULL")
        elif value.__class__ is str:
            out.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif value.__class__ is bool:
            out.append("t" if value else "f")
        elif value.__class__ is datetime:
            out.append(value.isoformat())
        else:
            out.append(str(int(value)))
    return "{" + ",".join(out) + "}"


_PG_COUNTERS = ("SELECT c.product_id, c.period_start, c.voice_s, c.sms, c.data_bytes, c.eu_roaming_data_bytes, c.last_event_time, "
                "c.needs_rerate FROM allowance_counter c")


_PG_LOCK = (
    # Lock every counter of the batch, in one order for everyone (no deadlocks), and send back only
    # those that differ from what rating assumed, plus (last row) how many were locked.
    "WITH k AS (SELECT * FROM unnest(%s::varchar[], %s::timestamptz[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::timestamptz[], %s::boolean[]) AS k(p, s, voice_s, sms, data_bytes, eu, last, rerate)), "
    "locked AS MATERIALIZED (SELECT c.product_id, c.period_start, c.voice_s, c.sms, c.data_bytes, c.eu_roaming_data_bytes, "
    "c.last_event_time, c.needs_rerate FROM allowance_counter c JOIN k ON c.product_id = k.p AND c.period_start = k.s "
    "ORDER BY c.product_id, c.period_start FOR UPDATE OF c) "
    "SELECT l.*, NULL::bigint FROM locked l JOIN k ON l.product_id = k.p AND l.period_start = k.s "
    "WHERE (l.voice_s, l.sms, l.data_bytes, l.eu_roaming_data_bytes, l.last_event_time, l.needs_rerate) "
    "IS DISTINCT FROM (k.voice_s, k.sms, k.data_bytes, k.eu, k.last, k.rerate) "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*) FROM locked")
_PG_UPDATE = (
    "UPDATE allowance_counter c SET voice_minutes = v.voice_minutes, sms = v.sms, data_mb = v.data_mb, voice_s = v.voice_s, "
    "data_bytes = v.data_bytes, eu_roaming_data_bytes = v.eu, last_event_time = v.last, needs_rerate = v.rerate, "
    # the period's running cost grows by what this batch stored (the row is locked: services.spending_monitor)
    "usage_micros = c.usage_micros + v.cost, roaming_data_micros = c.roaming_data_micros + v.roaming "
    "FROM unnest(%s::varchar[], %s::timestamptz[], %s::int[], %s::int[], %s::int[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::timestamptz[], %s::boolean[], %s::bigint[], %s::bigint[]) AS v(p, s, voice_minutes, sms, data_mb, voice_s, data_bytes, eu, last, "
    "rerate, cost, roaming) WHERE c.product_id = v.p AND c.period_start = v.s")
_PG_INSERT = (
    # Sorted, like the lock, so two batches creating the same counters never deadlock.
    "INSERT INTO allowance_counter (product_id, period_start, voice_minutes, sms, data_mb, voice_s, data_bytes, "
    "eu_roaming_data_bytes, last_event_time, needs_rerate) SELECT k.p, k.s, 0, 0, 0, 0, 0, 0, NULL, false "
    "FROM unnest(%s::varchar[], %s::timestamptz[]) WITH ORDINALITY AS k(p, s, n) ORDER BY k.n "
    "ON CONFLICT (product_id, period_start) DO NOTHING")


def counter_arrays(groups: list[Group], text_of: Callable[[Any], str]) -> dict[str, list[str]]:
    """The counter statements' parameters for `groups` (sorted by key), as PostgreSQL array
    literals: building them as text is much cheaper than letting the driver adapt lists of values
    (and column by column, with map and zip, cheaper than value by value)."""
    def states(values: list[CounterState]) -> list[str]:  # voice_s, sms, data_bytes, eu bytes, last event time, needs_rerate
        voice_s, sms, data_bytes, eu, last, rerate = zip(*values)
        return [_int_array(voice_s), _int_array(sms), _int_array(data_bytes), _int_array(eu),
                "{" + ",".join(["NULL" if t is None else utc_text(t) for t in last]) + "}",
                "{" + ",".join(["t" if r else "f" for r in rerate]) + "}"]

    products = "{" + ",".join([g.holder.quoted for g in groups]) + "}"
    starts = "{" + ",".join(map(text_of, [g.key[1] for g in groups])) + "}"
    new = [g for g in groups if not g.known]
    after = [g.after for g in groups]
    after_states = states(after)
    return {
        "new": ["{" + ",".join([g.holder.quoted for g in new]) + "}", "{" + ",".join(map(text_of, [g.key[1] for g in new])) + "}"] if new else [],
        "lock": [products, starts, *states([g.before for g in groups])],
        # voice_minutes and data_mb, the started minutes and MB, for readers of the old columns
        "update": [products, starts, _int_array([-(-s[0] // 60) for s in after]), after_states[1],
                   _int_array([-(-s[2] // 1_000_000) for s in after]), after_states[0], *after_states[2:],
                   _int_array([g.cost for g in groups]), _int_array([g.roaming_cost for g in groups])],
    }


def _int_array(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


class _Postgres:
    """Counters and records on PostgreSQL: one statement per batch for each, records by COPY. The
    statements' parameters come ready-made with the batch (built by the main thread)."""

    def __init__(self, session: Session, maker: BatchMaker) -> None:
        self.session = session
        self.maker = maker
        self.raw = session.connection().connection.driver_connection  # type: ignore[union-attr]

    def lock_counters(self, batch: Batch, groups: list[Group]) -> tuple[dict[tuple[str, datetime], CounterState], int]:
        """Creates the counters not known to exist and locks all the batch's counters. Returns the
        states that differ from what rating assumed, and how many counters were locked."""
        if batch.arrays is None:
            batch.arrays = counter_arrays(groups, self.maker.text_of)
        arrays = batch.arrays
        with self.raw.cursor() as cursor:
            if arrays["new"]:
                cursor.execute(_PG_INSERT, arrays["new"])
            cursor.execute(_PG_LOCK, arrays["lock"])
            rows = cursor.fetchall()
        return {(row[0], row[1]): (row[2], row[3], row[4], row[5], row[6], row[7]) for row in rows[:-1]}, rows[-1][8]

    def write_counters(self, batch: Batch, groups: list[Group], changed: bool) -> None:
        arrays = counter_arrays(groups, self.maker.text_of) if changed or batch.arrays is None else batch.arrays
        with self.raw.cursor() as cursor:
            cursor.execute(_PG_UPDATE, arrays["update"])

    def insert_records(self, groups: list[Group], maker: BatchMaker) -> None:
        """COPY the groups' rows; raises _Conflict when a record id is stored already."""
        texts = [group.text for group in groups if group.text]
        if not texts:
            return
        try:
            with self.raw.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                copy.write("".join(texts))
        except psycopg.errors.UniqueViolation as exc:
            raise _Conflict(str(exc)) from exc


class _Portable:
    """Counters and records through SQLAlchemy Core (SQLite)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.connection = session.connection()
        self.table = AllowanceCounter.__table__  # type: ignore[attr-defined]

    def lock_counters(self, batch: Batch, groups: list[Group]) -> tuple[dict[tuple[str, datetime], CounterState], int]:
        """As _Postgres.lock_counters; returns every counter's state. SQLite serialises writers
        already (BEGIN IMMEDIATE): reading is locking."""
        new = sorted(g.key for g in groups if not g.known)
        if new:
            rows = [{"product_id": p, "period_start": s, "voice_minutes": 0, "sms": 0, "data_mb": 0, "voice_s": 0, "data_bytes": 0,
                     "eu_roaming_data_bytes": 0, "last_event_time": None, "needs_rerate": False} for p, s in new]
            self.connection.execute(sqlite_insert(self.table).on_conflict_do_nothing(index_elements=["product_id", "period_start"]), rows)
        keys = {g.key for g in groups}
        products = sorted({p for p, _ in keys})
        starts = sorted({s for _, s in keys})
        found: dict[tuple[str, datetime], CounterState] = {}
        for start in range(0, len(products), _CHUNK):
            statement = select(*_counter_columns(self.table)).where(self.table.c.product_id.in_(products[start:start + _CHUNK]),
                                                                   self.table.c.period_start.in_(starts))
            for row in self.connection.execute(statement):
                if (row[0], row[1]) in keys:
                    found[(row[0], row[1])] = (row[2], row[3], row[4], row[5], row[6], bool(row[7]))
        return found, len(found)

    def write_counters(self, batch: Batch, groups: list[Group], changed: bool) -> None:
        table = self.table
        statement = (update(table).where(table.c.product_id == bindparam("key_product"), table.c.period_start == bindparam("key_start"))
                     .values({**{name: bindparam(name) for name in ("voice_minutes", "sms", "data_mb", "voice_s", "data_bytes",
                                                                    "eu_roaming_data_bytes", "last_event_time", "needs_rerate")},
                              "usage_micros": table.c.usage_micros + bindparam("cost"),
                              "roaming_data_micros": table.c.roaming_data_micros + bindparam("roaming")}))
        self.connection.execute(statement, [
            {"key_product": p, "key_start": s, "voice_minutes": -(-voice_s // 60), "sms": sms, "data_mb": -(-data_bytes // 1_000_000),
             "voice_s": voice_s, "data_bytes": data_bytes, "eu_roaming_data_bytes": eu, "last_event_time": last, "needs_rerate": rerate,
             "cost": cost, "roaming": roaming}
            for (p, s), (voice_s, sms, data_bytes, eu, last, rerate), cost, roaming in ((g.key, g.after, g.cost, g.roaming_cost) for g in groups)])

    def insert_records(self, groups: list[Group], maker: BatchMaker) -> None:
        rows = [values for group in groups for values in maker.values(group)]
        table = UsageRecord.__table__  # type: ignore[attr-defined]
        try:
            for start in range(0, len(rows), 1_000):
                self.connection.execute(table.insert(), rows[start:start + 1_000])
        except IntegrityError as exc:
            raise _Conflict(str(exc)) from exc


class _Clock:
    """Where a batch's time goes, logged at DEBUG."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last = time.perf_counter()
        self.cpu = time.thread_time()
        self.parts: list[str] = []

    def tick(self, what: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            now = time.perf_counter()
            self.parts.append(f"{what} {now - self.last:.3f}s")
            self.last = now
            if what == "commit":
                log.debug("%s: %s (writer thread CPU %.3fs)", self.name, ", ".join(self.parts), time.thread_time() - self.cpu)


class _Conflict(Exception):
    """A record id of the batch is stored already (by another file, source or process)."""


def write_batch(db_url: str, batch: Batch, maker: BatchMaker, context: Any) -> Counts:
    """One batch's transaction: records, counters, rejections, spending-limit messages and the
    file's progress, committed together. Returns the batch's final counts."""
    counts = Counts()
    counts.add(batch.counts)
    clock = _Clock(f"batch {batch.number}")
    with session_scope(db_url) as session:
        progress = lock_progress(session, context.sha256, batch.expected_line_no)
        store = _Postgres(session, maker) if session.connection().dialect.name == "postgresql" else _Portable(session)

        # A rejected record whose id is stored is a duplicate: it was charged once already.
        rejections = batch.rejections
        maybe_stored = {r["record_id"] for r in rejections if r["record_id"] is not None}
        if maybe_stored:
            found = stored_ids(session, maybe_stored)
            if found:
                kept = []
                for rejection in rejections:
                    if rejection["record_id"] in found:
                        counts.duplicates += 1
                        if rejection["_kind"] == "window":
                            counts.rejected_window -= 1
                        else:
                            counts.rejected_rating -= 1
                    else:
                        kept.append(rejection)
                rejections = kept

        clock.tick("progress+stored")
        groups = batch.groups
        if groups:
            differing, locked = store.lock_counters(batch, groups)
            if locked < len(groups):  # a counter thought to exist does not (deleted meanwhile?): create the missing ones
                for group in groups:
                    group.known = False
                batch.arrays = None
                differing, locked = store.lock_counters(batch, groups)
                assert locked == len(groups)
            changed = False
            for group in groups:
                state = differing.get(group.key)
                if state is not None and state != group.before:  # someone else used the counter since rating read it
                    maker.rate(group, state)
                    batch.repaired[group.key] = group.after
                    changed = True
            if changed:
                log.info("batch %d: %d allowance counter(s) were used by another writer meanwhile; their usage was rated again",
                         batch.number, len(batch.repaired))
            clock.tick("counters locked")
            connection = session.connection()
            for attempt in range(_MAX_COPY_ATTEMPTS):
                connection.exec_driver_sql("SAVEPOINT cdr_records")
                try:
                    store.insert_records(groups, maker)
                except _Conflict as exc:
                    connection.exec_driver_sql("ROLLBACK TO SAVEPOINT cdr_records")
                    if attempt == _MAX_COPY_ATTEMPTS - 1:
                        # Other writers keep storing this batch's ids: give up; the import can run again.
                        raise IntegrityError(COPY_SQL, None, exc) from exc
                    groups = _drop_stored(session, groups, maker, batch, counts)
                    changed = True
                    if not groups:
                        break
                    continue
                connection.exec_driver_sql("RELEASE SAVEPOINT cdr_records")
                break
            clock.tick("records")
            if groups:
                store.write_counters(batch, groups, changed)
            clock.tick("counters written")
        if rejections:
            session.connection().execute(RejectedUsage.__table__.insert(), [  # type: ignore[attr-defined]
                {k: v for k, v in r.items() if k != "_kind"} for r in rejections])
        clock.tick("rejections")
        costs: dict[CostKey, CostDelta] = {}
        for group in groups:
            add_cost(costs, (group.holder.account_id, group.key[1]), group.cost, group.roaming_cost)
        record_spending_crossings(session, batch.accounts, costs, maker.now)
        clock.tick("spending")

        for name in COUNT_FIELDS:
            setattr(progress, name, getattr(progress, name) + getattr(counts, name))
        progress.last_line_no = batch.last_line_no
        progress.format, progress.source, progress.timezone = context.format, context.source, context.timezone
        if batch.final and progress.lines == 0:
            session.delete(progress)  # a header and nothing else: nothing to remember (see importer._forget)
        else:
            if batch.final:
                progress.status, progress.finished_at = "done", maker.now
            session.add(progress)
    clock.tick("commit")
    return counts


def _drop_stored(session: Session, groups: list[Group], maker: BatchMaker, batch: Batch, counts: Counts) -> list[Group]:
    """The primary key refused a record: find the batch's stored ids, count them as duplicates and
    rate the groups they were in again without them."""
    found = stored_ids(session, (record[0][1] for group in groups for record in group.records if record[0][1] not in group.refused))
    kept = []
    for group in groups:
        if found.isdisjoint(record[0][1] for record in group.records):
            kept.append(group)
            continue
        fresh = [record for record in group.records if record[0][1] not in found]
        dropped = len(group.records) - len(fresh)
        counts.duplicates += dropped
        counts.accepted -= dropped
        group.records = fresh
        if group.records:
            maker.rate(group, group.before)  # `before` is the locked counter (rate() set it when it repaired the group)
            batch.repaired[group.key] = group.after
            kept.append(group)
        else:
            batch.repaired[group.key] = group.before  # nothing left to rate: the counter stays as it is
    log.info("batch %d: %d record(s) were stored already (another file or process); counted as duplicates", batch.number, len(found))
    return kept


# --- running the batches -------------------------------------------------------------------------


class _Writer:
    """Runs write_batch for each batch in order: in a thread of its own (PostgreSQL), so the next
    batch is prepared meanwhile, or in line (SQLite). A batch is handed over only when the writer is
    ready to take it, so at most two batches are in memory: the one being written and the next."""

    def __init__(self, db_url: str, maker: BatchMaker, context: Any, report: Counts, *, threaded: bool) -> None:
        self.db_url, self.maker, self.context, self.report = db_url, maker, context, report
        self.done: deque[Batch] = deque()
        self.error: BaseException | None = None
        self._raised = False
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._taken = threading.Event()
        self.idle_s = self.handoff_s = 0.0  # where the pipeline waited (logged at DEBUG)
        self._thread = threading.Thread(target=self._run, name="cdr-batch-writer", daemon=True) if threaded else None
        if self._thread is not None:
            self._thread.start()

    def _write(self, batch: Batch) -> None:
        counts = write_batch(self.db_url, batch, self.maker, self.context)
        self.report.add(counts)  # only once committed
        self.done.append(batch)

    def _run(self) -> None:
        while True:
            waited = time.perf_counter()
            batch = self._queue.get()
            self.idle_s += time.perf_counter() - waited
            self._taken.set()
            if batch is None:
                return
            if self.error is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    self.error = exc

    def _check(self) -> None:
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def submit(self, batch: Batch) -> None:
        self._check()
        if self._thread is None:
            self._write(batch)
            return
        self._taken.clear()
        waited = time.perf_counter()
        self._queue.put(batch)  # the queue is empty: the writer took the previous batch
        while not self._taken.wait(0.2):
            self._check()
        self.handoff_s += time.perf_counter() - waited

    def absorb(self) -> None:
        """Take the counters the writer corrected into account (main thread)."""
        while self.done:
            self.maker.corrected(self.done.popleft())
        self._check()

    def close(self) -> None:
        """Wait for the batches handed over; raise the writer's error if there was one."""
        if self._thread is not None:
            waited = time.perf_counter()
            self._queue.put(None)
            self._thread.join()
            self.handoff_s += time.perf_counter() - waited
            log.debug("writer idle %.2fs (waiting for the next batch); main thread waited %.2fs for the writer", self.idle_s, self.handoff_s)
        self._check()


def import_items(db_url: str, context: Any, items: Iterator[Item], resume_after: int, batch_size: int, now: datetime,
                 report: Counts, *, catalog: Catalog, profiles: dict[str, BillingProfile], book: TariffBook,
                 remaining_lines: Callable[[], int | None] | None = None) -> None:
    """Import the file's items after line `resume_after`, at most `batch_size` lines per transaction.
    `remaining_lines` estimates how many lines are left (see _Sizes)."""
    with fewer_gc_passes():  # see services.gc_pause: a batch's objects form no cycles
        _import_items(db_url, context, items, resume_after, batch_size, now, report, catalog=catalog, profiles=profiles, book=book,
                      remaining_lines=remaining_lines)


class _Sizes:
    """Batch sizes for the pipeline. While the first batch is prepared the writer has nothing to do,
    and after the last one is prepared the main thread only waits for it to be written: so the
    batches start small and double up to `batch_size`, and towards the end of the file (as far as
    its remaining bytes tell) each takes about half of what is left. Batch boundaries are just
    commit points: any sizes give the same records."""

    # Each batch also costs a fixed amount of database work (the file's progress, the spending-limit
    # check of the accounts it touched, a commit), so the ramps stop well above a few lines.
    FIRST = 10_000  # lines
    LAST = 20_000

    def __init__(self, batch_size: int, remaining_lines: Callable[[], int | None] | None) -> None:
        self.limit = batch_size
        self.size = min(batch_size, self.FIRST)
        self.remaining_lines = remaining_lines

    def next(self) -> int:
        size = self.size
        self.size = min(self.limit, size * 2)
        left = self.remaining_lines() if self.remaining_lines is not None else None
        if left is not None and left < 2 * size:
            size = min(size, max(self.LAST, -(-left // 2)))
        return size


def _import_items(db_url: str, context: Any, items: Iterator[Item], resume_after: int, batch_size: int, now: datetime,
                  report: Counts, *, catalog: Catalog, profiles: dict[str, BillingProfile], book: TariffBook,
                  remaining_lines: Callable[[], int | None] | None) -> None:
    postgres = engine_for(db_url).dialect.name == "postgresql"
    maker = BatchMaker(context, Snapshot(db_url, catalog, profiles, book), now, copy_rows=postgres)
    writer = _Writer(db_url, maker, context, report, threaded=postgres)
    sizes = _Sizes(batch_size, remaining_lines) if postgres else None
    target = sizes.next() if sizes is not None else batch_size
    expected = resume_after
    batch: list[Item] = []
    try:
        for item in items:
            if item[0].line_no <= resume_after:
                continue  # committed by an earlier, interrupted run
            batch.append(item)
            if len(batch) >= target:
                writer.absorb()
                made = maker.make(batch, expected, final=False)
                batch = []
                expected = made.last_line_no
                writer.submit(made)
                if sizes is not None:
                    target = sizes.next()
        writer.absorb()
        writer.submit(maker.make(batch, expected, final=True))
    finally:
        writer.close()
