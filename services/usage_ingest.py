"""Usage ingestion: validate, de-duplicate, guide and rate usage records (TMF635), in one transaction.

Independent of HTTP so the CDR-file import can reuse it: a source turns its rows into `ParsedUsage`
(see `parse_tmf_usage` for the TMF635 JSON shape) and calls `ingest`.

- Dedup: the source record id is the key. A record whose id is already stored, or repeated within
  the same batch, is a "duplicate": counted, never charged twice, not an error.
- Guiding: the Product holding the MSISDN at the usage instant (start <= t < termination).
- Rating: the billing period containing t (the account's billing profile and cycle), the
  product's allowance counter for that period (row-locked), then domain.rating.rate_usage.
- Nothing accepted is lost: a record that cannot be rated is stored in RejectedUsage with its
  reason and the raw payload.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from domain.billing_cycle import period_containing
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog, ProductOffering
from domain.money import to_micros
from domain.orders import FieldError
from domain.rating import AllowanceUsage, rate_usage
from persistence.tables import AllowanceCounter, BillingAccount, Product, RejectedUsage, UsageRecord
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

INVALID_RECORD = "invalid_record"
UNKNOWN_SUBSCRIBER = "unknown_subscriber"
OUTSIDE_SUBSCRIPTION = "outside_subscription"
RATING_FAILED = "rating_failed"


@dataclass(frozen=True)
class UsageIn:
    """A valid usage record, normalised: MSISDN as digits only, time in UTC, quantity in base units
    (seconds for voice, messages for sms, bytes for data)."""

    record_id: str
    kind: UsageKind
    event_time: datetime
    msisdn: str
    quantity: int


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
    record: UsageRecord | None = None  # the stored record, for accepted and duplicate


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
    quantity = _quantity(kind, characteristics, errors) if kind else None

    if errors or record_id is None or kind is None or event_time is None or msisdn is None or quantity is None:
        return ParsedUsage(record_id, payload, errors=errors)
    return ParsedUsage(record_id, payload, usage=UsageIn(record_id=record_id, kind=kind, event_time=event_time, msisdn=msisdn, quantity=quantity))


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


def _quantity(kind: str, characteristics: dict[str, tuple[int, Any]], errors: list[FieldError]) -> int | None:
    name = QUANTITY_FIELD[kind]
    if name not in characteristics:
        if kind == "sms":
            return 1  # one message unless the record says otherwise
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


def ingest(session: Session, parsed: Sequence[ParsedUsage], catalog: Catalog, profiles: dict[str, BillingProfile], *, now: datetime | None = None) -> IngestReport:
    """Validate, de-duplicate, guide and rate `parsed` inside the caller's transaction.
    Results come back in input order."""
    now = now or utcnow()
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
    rateable: list[tuple[int, Product, ProductOffering, datetime]] = []
    accepted_ids: set[str] = set()
    # In input order: the first copy of an id in a batch is rated, later copies are duplicates of it.
    # A copy whose first occurrence was rejected is judged on its own.
    for index, product in guided:
        usage = parsed[index].usage
        assert usage is not None
        if usage.record_id in accepted_ids:
            results[index] = UsageResult(usage.record_id, "duplicate")
            continue
        offering = catalog.offering(product.offering_id)
        if offering is None:
            reject(index, RATING_FAILED, f"offering {product.offering_id!r} of product {product.id} is not in catalog {catalog.version}")
            continue
        try:
            account = accounts[product.billing_account_id]
            profile = profiles[account.billing_profile]
            spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor)
            period_start = period_containing(spec, usage.event_time).start
        except (KeyError, ValueError) as exc:
            reject(index, RATING_FAILED, f"cannot find the billing period of product {product.id}: {exc!r}")
            continue
        accepted_ids.add(usage.record_id)
        rateable.append((index, product, offering, period_start))

    counters = _lock_counters(session, {(p.id, start) for _, p, _, start in rateable})
    new_records: dict[str, UsageRecord] = {}
    # Allowances are consumed in usage order, not arrival order, so a batch is rated as if its
    # records had arrived one by one in time.
    for index, product, offering, period_start in sorted(rateable, key=lambda entry: (parsed[entry[0]].usage.event_time, entry[0])):  # type: ignore[union-attr]
        usage = parsed[index].usage
        assert usage is not None
        counter = counters[(product.id, period_start)]
        used = AllowanceUsage(voice_minutes=counter.voice_minutes, sms=counter.sms, data_mb=counter.data_mb)
        rated, used_after = rate_usage(usage.kind, Decimal(usage.quantity), offering.rates, offering.allowances, used)
        counter.voice_minutes, counter.sms, counter.data_mb = used_after.voice_minutes, used_after.sms, used_after.data_mb
        session.add(counter)
        record = UsageRecord(
            id=usage.record_id,
            usage_type=usage.kind,
            msisdn=usage.msisdn,
            product_id=product.id,
            billing_account_id=product.billing_account_id,
            event_time=usage.event_time,
            quantity=usage.quantity,
            status="rated",
            units=rated.units,
            allowance_units=rated.allowance_units,
            chargeable_units=rated.chargeable_units,
            amount_micros=to_micros(rated.amount),
            catalog_version=catalog.version,
            period_start=period_start,
            received_at=now,
        )
        new_records[usage.record_id] = record
        results[index] = UsageResult(usage.record_id, "accepted", record=record)

    session.add_all(new_records.values())
    session.add_all(rejections)
    session.flush()

    final: list[UsageResult] = []
    for result in results:
        assert result is not None
        if result.status == "duplicate" and result.record_id is not None:
            result.record = stored.get(result.record_id) or new_records.get(result.record_id)
        final.append(result)
    return IngestReport(final)


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
    found: dict[str, UsageRecord] = {}
    for chunk in _chunks(sorted(ids)):
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


def _lock_counters(session: Session, keys: set[tuple[str, datetime]]) -> dict[tuple[str, datetime], AllowanceCounter]:
    """Create missing counters, then read them under a row lock. The insert skips rows that exist or
    that a concurrent batch inserts first, so two batches for the same product never fail; the
    SELECT ... FOR UPDATE (PostgreSQL) then serialises their read-modify-write. SQLite serialises
    writers already (BEGIN IMMEDIATE)."""
    if not keys:
        return {}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = AllowanceCounter.__table__  # type: ignore[attr-defined]
    rows = [{"product_id": p, "period_start": s, "voice_minutes": 0, "sms": 0, "data_mb": 0} for p, s in sorted(keys)]
    for chunk in _chunks(rows):
        session.execute(insert(table).values(chunk).on_conflict_do_nothing(index_elements=["product_id", "period_start"]))

    found: dict[tuple[str, datetime], AllowanceCounter] = {}
    products = sorted({p for p, _ in keys})
    starts = sorted({s for _, s in keys})
    for chunk in _chunks(products):
        statement = (
            select(AllowanceCounter)
            .where(col(AllowanceCounter.product_id).in_(chunk), col(AllowanceCounter.period_start).in_(starts))
            .order_by(AllowanceCounter.product_id, AllowanceCounter.period_start)  # one lock order for everyone: no deadlocks
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        for row in session.exec(statement):
            key = (row.product_id, row.period_start)
            if key in keys:
                found[key] = row
    return found


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
