"""Usage ingestion: validate, de-duplicate, guide and rate usage records (TMF635), in one transaction.

Independent of HTTP so the CDR-file import can reuse it: a source turns its rows into `ParsedUsage`
(see `parse_tmf_usage` for the TMF635 JSON shape) and calls `ingest`.

- Dedup: the source record id is the key. A record whose id is already stored, or repeated within
  the same batch, is a "duplicate": counted, never charged twice, not an error.
- Guiding: the Product holding the MSISDN at the usage instant (start <= t < termination).
- Rating: the billing period containing t (the account's billing profile and cycle), the
  product's allowance counter for that period (row-locked), then the rating engine
  (domain.rating_engine) with the tariff the offering names (its latest version; an offering
  without a tariff is priced by its catalog rates, see domain.offering_tariff), in the account's
  time zone. Per (product, period) the batch's events are rated in (start, record id) order.
  Each record keeps the tariff id and version, called number, zone, band and the parts
  (allowance / charged / fair-use split in seconds, messages or bytes) that priced it.
- Called number: answered voice and SMS need `destination` when the tariff prices destinations
  differently (from where the event was used); without it the record is rejected
  `missing_destination` (kept, recyclable once the source sends it). Guessing "national mobile"
  would under-charge premium and international calls without anyone noticing. A tariff with one
  price for all destinations (a catalog-rates tariff, a flat roaming zone) needs none.
- Unanswered calls (disposition NO ANSWER, BUSY, FAILED, CONGESTION) are stored at 0 and use no
  allowance.
- Late usage: an event older than usage already rated into its period is rated against the
  counter as it stands (so the batch never blocks), and the period's counter is flagged
  `needs_rerate`: services.usage_rerate.rerate_period rates the period again in event-time order,
  which gives the allowance back to the events it belongs to.
- Nothing accepted is lost: a record that cannot be rated (no tariff, an unknown roaming zone, a
  number no destination matches) is stored in RejectedUsage with its reason and the raw payload.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import psycopg
from sqlalchemy import JSON, bindparam, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from domain.billing_cycle import BillingPeriod, period_containing
from domain.billing_profile import BillingProfile
from config.tariff_loader import cached_tariff_book
from domain.catalog import Catalog, ProductOffering
from domain.offering_tariff import tariff_for
from domain.orders import FieldError
from domain.rating_engine import ANSWERED, DISPOSITIONS, AllowanceLimits, AllowanceState, EventRow
from domain.spending import counts_for_roaming_cap, roaming_cap_zones
from domain.tariff import Tariff, TariffBook
from persistence.tables import AllowanceCounter, BillingAccount, Product, RejectedUsage, UsageRecord
from services.compiled_tariffs import eu_data_cap_bytes, rate_rows, stand_in_destination
from services.rated_record import counter_values, rated_values
from services.spending_monitor import CostDelta, CostKey, add_cost, record_spending_crossings
from services.errors import NotFound
from services.query import Page, paginate, utcnow

log = logging.getLogger(__name__)

UsageKind = Literal["voice", "sms", "data"]
ResultStatus = Literal["accepted", "duplicate", "rejected"]

MAX_BATCH = 10_000
# Far above any real record (a year of seconds, a petabyte) yet well inside a BIGINT.
MAX_QUANTITY = 10**15
QUANTITY_FIELD: dict[str, str] = {"voice": "duration", "sms": "messages", "data": "volume"}
# Set queries are split so no statement exceeds the databases' bind-parameter limits.
_CHUNK = 2_000
_INSERT_CHUNK = 1_000

INVALID_RECORD = "invalid_record"
UNKNOWN_SUBSCRIBER = "unknown_subscriber"
OUTSIDE_SUBSCRIPTION = "outside_subscription"
RATING_FAILED = "rating_failed"
MISSING_DESTINATION = "missing_destination"


@dataclass(frozen=True)
class UsageIn:
    """A valid usage record, normalised: MSISDN as digits only, time in UTC, quantity in base units
    (seconds for voice, messages for sms, bytes for data)."""

    record_id: str
    kind: UsageKind
    event_time: datetime
    msisdn: str
    quantity: int
    destination: str | None = None  # the called number (voice, sms), E.164 digits
    roaming_country: str | None = None  # where it was used: ISO country code or tariff zone id; None = at home
    disposition: str = ANSWERED  # voice: ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION


@dataclass
class ParsedUsage:
    """One source record after parsing: either `usage` is set, or `errors` say why it is invalid.
    `payload` is the record as received; it is what RejectedUsage keeps."""

    record_id: str | None
    payload: dict[str, Any]
    usage: UsageIn | None = None
    errors: list[FieldError] = field(default_factory=list)


@dataclass
class UsageResult:
    record_id: str | None
    status: ResultStatus
    reason_code: str | None = None
    reason: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    # The stored record (accepted, duplicate): a row read back, or the values inserted, which
    # `record` turns into a UsageRecord only when asked (building one per record of a large batch
    # is a good part of its cost, and the batch answer does not need them).
    stored: UsageRecord | dict[str, Any] | None = None

    @property
    def record(self) -> UsageRecord | None:
        if isinstance(self.stored, dict):
            self.stored = UsageRecord(**self.stored)
        return self.stored


@dataclass
class IngestReport:
    results: list[UsageResult]

    def count(self, status: ResultStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    @property
    def duplicates(self) -> int:
        return self.count("duplicate")

    @property
    def rejected(self) -> int:
        return self.count("rejected")


# --- parsing the TMF635 shape --------------------------------------------------------------------


def parse_tmf_usage(payload: Any) -> ParsedUsage:
    """Read one TMF635 Usage object. o2c requires `id`: it is the source system's record id and the
    de-duplication key (TMF lets the server assign ids; a rating system must not)."""
    if not isinstance(payload, dict):
        return ParsedUsage(None, {"value": payload}, errors=[FieldError(field="", code="not_an_object", message="a usage record must be a JSON object")])
    errors: list[FieldError] = []

    record_id = payload.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        errors.append(FieldError(field="id", code="required", message="id (the source record id, used to de-duplicate) is required"))
        record_id = None
    elif len(record_id) > 255:
        errors.append(FieldError(field="id", code="too_long", message="id is longer than 255 characters"))
    else:
        record_id = record_id.strip()

    kind = payload.get("usageType")
    if kind not in QUANTITY_FIELD:
        errors.append(FieldError(field="usageType", code="unknown_usage_type", message=f"usageType must be one of {sorted(QUANTITY_FIELD)}, got {kind!r}"))
        kind = None

    event_time = _parse_time(payload.get("usageDate"), errors)
    characteristics = _characteristics(payload.get("usageCharacteristic"), errors)
    msisdn = _msisdn(characteristics, errors)
    disposition = _disposition(kind, characteristics, errors)
    quantity = _quantity(kind, characteristics, errors, answered=disposition == ANSWERED) if kind else None
    destination = _destination(characteristics, errors)
    roaming_country = _roaming_country(characteristics, errors)

    if errors or record_id is None or kind is None or event_time is None or msisdn is None or quantity is None:
        return ParsedUsage(record_id, payload, errors=errors)
    usage = UsageIn(record_id=record_id, kind=kind, event_time=event_time, msisdn=msisdn, quantity=quantity,
                    destination=destination, roaming_country=roaming_country, disposition=disposition)
    return ParsedUsage(record_id, payload, usage=usage)


def _parse_time(value: Any, errors: list[FieldError]) -> datetime | None:
    if not isinstance(value, str) or not value:
        errors.append(FieldError(field="usageDate", code="required", message="usageDate (ISO-8601 with a UTC offset) is required"))
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors.append(FieldError(field="usageDate", code="invalid_datetime", message=f"usageDate {value!r} is not ISO-8601"))
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        # A time without an offset could be any of 24+ instants; guessing would bill the wrong period.
        errors.append(FieldError(field="usageDate", code="naive_datetime", message="usageDate needs a UTC offset, e.g. 2026-01-31T23:59:59+01:00 or ...Z"))
        return None
    return parsed.astimezone(timezone.utc)


def _characteristics(value: Any, errors: list[FieldError]) -> dict[str, tuple[int, Any]]:
    """name -> (position, value)."""
    if not isinstance(value, list):
        errors.append(FieldError(field="usageCharacteristic", code="required", message="usageCharacteristic must be a list of {name, value}"))
        return {}
    out: dict[str, tuple[int, Any]] = {}
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "value" not in entry:
            errors.append(FieldError(field=f"usageCharacteristic[{index}]", code="invalid_characteristic", message="each characteristic needs a name and a value"))
            continue
        if entry["name"] in out:
            errors.append(FieldError(field=f"usageCharacteristic[{index}].name", code="duplicate", message=f"characteristic {entry['name']!r} appears twice"))
            continue
        out[entry["name"]] = (index, entry["value"])
    return out


def normalise_msisdn(value: Any) -> str | None:
    """E.164 digits without '+' (how products store MSISDNs), or None if it is not an E.164 number."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    digits = value.strip().removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not 7 <= len(digits) <= 15 or digits[0] == "0":
        return None
    return digits


def _msisdn(characteristics: dict[str, tuple[int, Any]], errors: list[FieldError]) -> str | None:
    if "msisdn" not in characteristics:
        errors.append(FieldError(field="usageCharacteristic", code="missing_msisdn", message="a characteristic named 'msisdn' is required"))
        return None
    index, value = characteristics["msisdn"]
    msisdn = normalise_msisdn(value)
    if msisdn is None:
        errors.append(FieldError(field=f"usageCharacteristic[{index}].value", code="invalid_msisdn", message=f"msisdn {value!r} is not an E.164 number"))
    return msisdn


def _destination(characteristics: dict[str, tuple[int, Any]], errors: list[FieldError]) -> str | None:
    """The called number, E.164 (a leading '+' is allowed); whether it is needed is the tariff's call."""
    if "destination" not in characteristics:
        return None
    index, value = characteristics["destination"]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    digits = value.strip().removeprefix("+") if isinstance(value, str) else ""
    if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 15 or digits[0] == "0":
        errors.append(FieldError(field=f"usageCharacteristic[{index}].value", code="invalid_destination",
                                 message=f"destination {value!r} is not an E.164 number (country code first, e.g. +4915112345678)"))
        return None
    return digits


def _roaming_country(characteristics: dict[str, tuple[int, Any]], errors: list[FieldError]) -> str | None:
    """Where the subscriber was served: an ISO 3166 alpha-2 country code; absent means at home."""
    if "roamingCountry" not in characteristics:
        return None
    index, value = characteristics["roamingCountry"]
    code = value.strip().upper() if isinstance(value, str) else ""
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        errors.append(FieldError(field=f"usageCharacteristic[{index}].value", code="invalid_roaming_country",
                                 message=f"roamingCountry {value!r} is not an ISO 3166 alpha-2 country code, e.g. FR"))
        return None
    return code


def _disposition(kind: Any, characteristics: dict[str, tuple[int, Any]], errors: list[FieldError]) -> str:
    """How a call ended; ANSWERED unless the record says otherwise."""
    if "disposition" not in characteristics:
        return ANSWERED
    index, value = characteristics["disposition"]
    spelled = value.strip().upper() if isinstance(value, str) else value
    if kind != "voice" or spelled not in DISPOSITIONS:
        errors.append(FieldError(field=f"usageCharacteristic[{index}].value", code="invalid_disposition",
                                 message=f"disposition is for voice only and one of {sorted(DISPOSITIONS)}, got {value!r}"))
        return ANSWERED
    return spelled


def _quantity(kind: str, characteristics: dict[str, tuple[int, Any]], errors: list[FieldError], *, answered: bool = True) -> int | None:
    name = QUANTITY_FIELD[kind]
    if name not in characteristics:
        if kind == "sms":
            return 1  # one message unless the record says otherwise
        if kind == "voice" and not answered:
            return 0  # an unanswered call lasted no billable second
        errors.append(FieldError(field="usageCharacteristic", code=f"missing_{name}", message=f"{kind} usage needs a characteristic named {name!r}"))
        return None
    index, value = characteristics[name]
    where = f"usageCharacteristic[{index}].value"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(field=where, code="invalid_quantity", message=f"{name} must be a whole number, got {value!r}"))
        return None
    if value < 0 or value > MAX_QUANTITY:
        errors.append(FieldError(field=where, code="invalid_quantity", message=f"{name} must be between 0 and {MAX_QUANTITY}"))
        return None
    return value


# --- ingestion -----------------------------------------------------------------------------------


def ingest(session: Session, parsed: Sequence[ParsedUsage], catalog: Catalog, profiles: dict[str, BillingProfile], *,
           now: datetime | None = None, tariffs: TariffBook | None = None) -> IngestReport:
    """Validate, de-duplicate, guide and rate `parsed` inside the caller's transaction.
    Results come back in input order. `tariffs` defaults to catalog/tariffs.yaml."""
    now = now or utcnow()
    book = tariffs if tariffs is not None else cached_tariff_book()
    results: list[UsageResult | None] = [None] * len(parsed)
    rejections: list[RejectedUsage] = []

    def reject(index: int, code: str, reason: str, errors: list[FieldError] | None = None) -> None:
        item = parsed[index]
        results[index] = UsageResult(item.record_id, "rejected", code, reason, errors or [])
        rejections.append(RejectedUsage(record_id=item.record_id, reason_code=code, reason=reason[:2000], payload=item.payload, received_at=now))

    valid: list[int] = []
    for index, item in enumerate(parsed):
        if item.usage is None:
            reason = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in item.errors) or "invalid record"
            reject(index, INVALID_RECORD, reason, item.errors)
        else:
            valid.append(index)

    stored = _existing_records(session, {parsed[i].record_id for i in valid})  # type: ignore[misc]
    products = _products_by_msisdn(session, {parsed[i].usage.msisdn for i in valid})  # type: ignore[union-attr]

    # Guide fresh records to their products first, so their accounts can be loaded with one query.
    guided: list[tuple[int, Product]] = []
    for index in valid:
        usage = parsed[index].usage
        assert usage is not None
        if usage.record_id in stored:
            results[index] = UsageResult(usage.record_id, "duplicate")
            continue
        product, code, reason = _guide(products.get(usage.msisdn, []), usage)
        if product is None:
            reject(index, code, reason, [FieldError(field="usageCharacteristic.msisdn", code=code, message=reason)])
            continue
        guided.append((index, product))

    accounts = _accounts(session, {p.billing_account_id for _, p in guided})
    groups: dict[tuple[str, datetime], _Group] = {}
    first_copy: dict[str, int] = {}  # record id -> index of its first copy in this batch
    later_copies: list[int] = []
    stand_ins: dict[tuple[int, str, str, str | None], str | None] = {}
    periods: dict[str, BillingPeriod] = {}  # account id -> the period last found for it
    # In input order: the first copy of an id in a batch is rated, later copies are duplicates of
    # it once it is stored. A copy whose first occurrence was rejected before rating is judged on its own.
    for index, product in guided:
        usage = parsed[index].usage
        assert usage is not None
        if usage.record_id in first_copy:
            later_copies.append(index)
            continue
        offering = catalog.offering(product.offering_id)
        if offering is None:
            reject(index, RATING_FAILED, f"offering {product.offering_id!r} of product {product.id} is not in catalog {catalog.version}")
            continue
        try:
            account = accounts[product.billing_account_id]
            period = periods.get(account.id)
            # Most of an account's records fall in one period: look it up again only outside it.
            if period is None or not period.start <= usage.event_time < period.end:
                profile = profiles[account.billing_profile]
                spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
                period = periods[account.id] = period_containing(spec, usage.event_time)
            period_start = period.start
        except (KeyError, ValueError) as exc:
            reject(index, RATING_FAILED, f"cannot find the billing period of product {product.id}: {exc!r}")
            continue
        group = groups.get((product.id, period_start))
        if group is None:
            try:
                tariff = tariff_for(offering, book)
            except KeyError as exc:
                reject(index, RATING_FAILED, f"offering {offering.id} names tariff {offering.tariff_id!r}, which is not in the tariff book: {exc}")
                continue
            group = groups[(product.id, period_start)] = _Group(product, offering, tariff, account.timezone, period_start)
        destination = usage.destination
        needs_number = usage.kind == "sms" or (usage.kind == "voice" and usage.disposition == ANSWERED)
        if destination is None and needs_number:
            key = (id(group.tariff), group.timezone, usage.kind, usage.roaming_country)
            if key not in stand_ins:
                stand_ins[key] = stand_in_destination(group.tariff, group.timezone, usage.kind, usage.roaming_country)
            destination = stand_ins[key]
            if destination is None:
                reason = (f"{usage.kind} usage needs the called number (usageCharacteristic 'destination'): tariff "
                          f"{group.tariff.id} v{group.tariff.version} prices destinations differently")
                reject(index, MISSING_DESTINATION, reason, [FieldError(field="usageCharacteristic", code=MISSING_DESTINATION, message=reason)])
                continue
        first_copy[usage.record_id] = index
        start_us = (usage.event_time - _EPOCH) // _MICROSECOND
        group.rows.append((start_us, usage.record_id, usage.kind, usage.quantity, destination, usage.roaming_country, usage.disposition))
        group.indexes[usage.record_id] = index

    groups = {key: group for key, group in groups.items() if group.rows}  # a group's records may all have been rejected
    counters = _lock_counters(session, set(groups))
    new_records: dict[str, dict[str, Any]] = {}
    costs: dict[CostKey, CostDelta] = {}
    for key, group in groups.items():
        counter = counters[key]
        tariff = group.tariff
        capped = roaming_cap_zones(tariff)
        account_id = group.product.billing_account_id
        # The columns every record of the group shares (read once: ORM attribute access costs per record).
        shared = {"product_id": group.product.id, "billing_account_id": account_id, "status": "rated", "catalog_version": catalog.version,
                  "period_start": group.period_start, "invoice_id": None, "received_at": now, "tariff_id": tariff.id,
                  "tariff_version": tariff.version}
        used = AllowanceState(counter["voice_s"], counter["sms"], counter["data_bytes"], counter["eu_roaming_data_bytes"])
        rated = rate_rows(tariff, group.timezone, group.rows, group.limits, used, group.eu_data_cap_bytes)
        _note_event_times(counter, group.rows)
        counter.update(counter_values(used))
        group_cost = group_roaming = 0
        for row, (start_us, record_id, kind, quantity, destination, roaming, disposition) in zip(rated, sorted(group.rows), strict=True):
            index = group.indexes[record_id]
            error = row[9]
            if error is not None:
                reject(index, RATING_FAILED, f"tariff {tariff.id} v{tariff.version}: {error}")
                continue
            usage = parsed[index].usage
            assert usage is not None
            values = {
                "id": record_id,
                "usage_type": kind,
                "msisdn": usage.msisdn,
                "event_time": usage.event_time,
                "quantity": quantity,
                "destination": usage.destination,
                "roaming_country": roaming,
                "disposition": disposition if kind == "voice" else None,
                **shared,
                **rated_values(row),
            }
            new_records[record_id] = values
            results[index] = UsageResult(record_id, "accepted", stored=values)
            amount = row[4]
            group_cost += amount
            if capped and counts_for_roaming_cap(kind, row[7], capped):
                group_roaming += amount
        # The period's running cost, under the counter's lock (services.spending_monitor reads it).
        counter["usage_micros"] += group_cost
        counter["roaming_data_micros"] += group_roaming
        add_cost(costs, (account_id, group.period_start), group_cost, group_roaming)

    for index in later_copies:
        usage = parsed[index].usage
        assert usage is not None
        if usage.record_id in new_records:
            results[index] = UsageResult(usage.record_id, "duplicate", stored=new_records[usage.record_id])
        else:
            # Its first copy was rejected by the rating engine; the same record id would be too.
            first = results[first_copy[usage.record_id]]
            assert first is not None
            reject(index, first.reason_code or RATING_FAILED, first.reason or "rejected")

    _write_counters(session, list(counters.values()))
    _insert_records(session, list(new_records.values()))
    session.add_all(rejections)
    session.flush()
    record_spending_crossings(session, accounts, costs, now)

    final: list[UsageResult] = []
    for result in results:
        assert result is not None
        if result.status == "duplicate" and result.stored is None and result.record_id is not None:
            result.stored = stored.get(result.record_id)
        final.append(result)
    return IngestReport(final)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class _Group:
    """One product's usage in one billing period: rated together against one allowance counter."""

    product: Product
    offering: ProductOffering
    tariff: Tariff
    timezone: str
    period_start: datetime
    rows: list[EventRow] = field(default_factory=list)
    indexes: dict[str, int] = field(default_factory=dict)  # record id -> input position

    @property
    def limits(self) -> AllowanceLimits:
        return AllowanceLimits.from_allowances(self.offering.allowances)

    @property
    def eu_data_cap_bytes(self) -> int | None:
        return eu_data_cap_bytes(self.tariff, self.offering)


def _note_event_times(counter: dict[str, Any], rows: list[EventRow]) -> None:
    """Flag the period for re-rating when this batch reaches back before usage rated into it
    already: those later events drew allowance that, in time order, was this batch's."""
    earliest = _EPOCH + min(r[0] for r in rows) * _MICROSECOND
    latest = _EPOCH + max(r[0] for r in rows) * _MICROSECOND
    last = counter["last_event_time"]
    if last is not None and earliest < last:
        counter["needs_rerate"] = True
    if last is None or latest > last:
        counter["last_event_time"] = latest


def _insert_records(session: Session, rows: list[dict[str, Any]]) -> None:
    """Stores the batch's records without an ORM object per record: PostgreSQL gets them by COPY
    (one round trip for the batch, in this transaction), other databases by executemany."""
    if not rows:
        return
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        for start in range(0, len(rows), _INSERT_CHUNK):
            connection.execute(table.insert(), rows[start:start + _INSERT_CHUNK])
        return
    present = set().union(*rows)  # every key any row has: a value is never dropped for want of a column
    columns = [c.name for c in table.columns if c.name in present]  # the others take their defaults, as with insert()
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    copy_sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    try:
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row([json.dumps(row[name]) if name in json_columns else row[name] for name in columns])
    except psycopg.errors.IntegrityError as exc:
        # A concurrent batch stored one of these ids after our duplicate check. Raised as SQLAlchemy's
        # IntegrityError, like an ORM insert would, so the caller's transaction retry sees it and the
        # next attempt finds the record stored (services.query.in_transaction).
        raise IntegrityError(copy_sql, None, exc) from exc


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _existing_records(session: Session, ids: set[str]) -> dict[str, UsageRecord]:
    """The stored records among `ids`. Their ids first (a batch of 10,000 fresh ids as one array on
    PostgreSQL: an IN list of that many parameters costs the driver more than the query costs the
    server), then whole rows only for those found (duplicates are few)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql" and ids:
        known = [row[0] for row in connection.exec_driver_sql("SELECT id FROM usage_record WHERE id = ANY(%s::varchar[])", (sorted(ids),))]
    else:
        known = sorted(ids)
    found: dict[str, UsageRecord] = {}
    for chunk in _chunks(sorted(known)):
        for row in session.exec(select(UsageRecord).where(col(UsageRecord.id).in_(chunk))):
            found[row.id] = row
    return found


def _products_by_msisdn(session: Session, msisdns: set[str]) -> dict[str, list[Product]]:
    # Products store digits only; "+"-prefixed spellings are matched too in case one slipped in.
    spellings = sorted(msisdns | {f"+{m}" for m in msisdns})
    found: dict[str, list[Product]] = {}
    for chunk in _chunks(spellings):
        for row in session.exec(select(Product).where(col(Product.msisdn).in_(chunk))):
            found.setdefault((row.msisdn or "").removeprefix("+"), []).append(row)
    return found


def _guide(candidates: list[Product], usage: UsageIn) -> tuple[Product | None, str, str]:
    if not candidates:
        return None, UNKNOWN_SUBSCRIBER, f"no product has MSISDN {usage.msisdn}"
    t = usage.event_time
    active = [p for p in candidates if p.start_date is not None and p.start_date <= t and (p.termination_date is None or t < p.termination_date)]
    if not active:
        return None, OUTSIDE_SUBSCRIPTION, f"MSISDN {usage.msisdn} had no active product at {t.isoformat()}"
    # A number is held by one product at a time; if data ever says otherwise, the newest holder wins.
    return max(active, key=lambda p: p.start_date), "", ""  # type: ignore[arg-type,return-value]


def _accounts(session: Session, ids: set[str]) -> dict[str, BillingAccount]:
    found: dict[str, BillingAccount] = {}
    for chunk in _chunks(sorted(ids)):
        for row in session.exec(select(BillingAccount).where(col(BillingAccount.id).in_(chunk))):
            found[row.id] = row
    return found


def _lock_counters(session: Session, keys: set[tuple[str, datetime]]) -> dict[tuple[str, datetime], dict[str, Any]]:
    """The counters' columns (as dicts: no ORM object per counter), created if missing, read under a
    row lock. The insert skips rows that exist or that a concurrent batch inserts first, so two
    batches for the same product never fail; the SELECT ... FOR UPDATE (PostgreSQL) then serialises
    their read-modify-write. SQLite serialises writers already (BEGIN IMMEDIATE)."""
    if not keys:
        return {}
    connection = session.connection()
    table = AllowanceCounter.__table__  # type: ignore[attr-defined]
    products = sorted({p for p, _ in keys})
    starts = sorted({s for _, s in keys})

    def read(lock: bool) -> dict[tuple[str, datetime], dict[str, Any]]:
        found: dict[tuple[str, datetime], dict[str, Any]] = {}
        for chunk in _chunks(products):
            statement = (select(*table.columns).where(table.c.product_id.in_(chunk), table.c.period_start.in_(starts))
                         .order_by(table.c.product_id, table.c.period_start))  # one lock order for everyone: no deadlocks
            for row in connection.execute(statement.with_for_update() if lock else statement):
                key = (row.product_id, row.period_start)
                if key in keys:
                    found[key] = dict(row._mapping)
        return found

    missing = sorted(keys - read(lock=False).keys())
    if missing:
        insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        rows = [{"product_id": p, "period_start": s, "voice_minutes": 0, "sms": 0, "data_mb": 0, "voice_s": 0, "data_bytes": 0,
                 "eu_roaming_data_bytes": 0, "last_event_time": None, "needs_rerate": False, "usage_micros": 0, "roaming_data_micros": 0}
                for p, s in missing]
        connection.execute(insert(table).on_conflict_do_nothing(index_elements=["product_id", "period_start"]), rows)
    return read(lock=True)


_COUNTER_VALUES = ("voice_minutes", "sms", "data_mb", "voice_s", "data_bytes", "eu_roaming_data_bytes", "last_event_time", "needs_rerate",
                   "usage_micros", "roaming_data_micros")


def _write_counters(session: Session, counters: list[dict[str, Any]]) -> None:
    if not counters:
        return
    table = AllowanceCounter.__table__  # type: ignore[attr-defined]
    statement = (update(table)
                 .where(table.c.product_id == bindparam("key_product"), table.c.period_start == bindparam("key_start"))
                 .values({name: bindparam(name) for name in _COUNTER_VALUES}))
    session.connection().execute(statement, [
        {"key_product": c["product_id"], "key_start": c["period_start"], **{name: c[name] for name in _COUNTER_VALUES}} for c in counters])


# --- reading -------------------------------------------------------------------------------------


def get_usage(session: Session, record_id: str) -> UsageRecord:
    row = session.get(UsageRecord, record_id)
    if row is None:
        raise NotFound("usage", record_id)
    return row


def list_usage(session: Session, *, status: str | None, msisdn: str | None, billing_account_id: str | None, limit: int, offset: int) -> Page[UsageRecord]:
    statement = select(UsageRecord).order_by(col(UsageRecord.event_time).desc(), UsageRecord.id)
    if status is not None:
        statement = statement.where(UsageRecord.status == status)
    if msisdn is not None:
        statement = statement.where(UsageRecord.msisdn == (normalise_msisdn(msisdn) or msisdn))
    if billing_account_id is not None:
        statement = statement.where(UsageRecord.billing_account_id == billing_account_id)
    return paginate(session, statement, limit, offset)


def list_rejected(session: Session, *, record_id: str | None, reason_code: str | None, limit: int, offset: int) -> Page[RejectedUsage]:
    statement = select(RejectedUsage).order_by(col(RejectedUsage.id).desc())
    if record_id is not None:
        statement = statement.where(RejectedUsage.record_id == record_id)
    if reason_code is not None:
        statement = statement.where(RejectedUsage.reason_code == reason_code)
    return paginate(session, statement, limit, offset)
