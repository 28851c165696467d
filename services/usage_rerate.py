"""Re-rating one product's billing period: every record priced again, in event-time order, from a
zero allowance, with the offering's current tariff (its latest version).

When it is needed: usage arrived out of order (ingestion flags the period's counter
`needs_rerate`: an early event was rated after later ones had taken its allowance), or a tariff
was corrected (a new version in the book).

- All the period's records take part, billed ones too: they used allowance, and leaving them out
  would hand it to the others. Billed records are never changed: what an invoice shows stays as
  it was. Their difference is reported (`billed_deltas`) for a credit or debit note.
- Unbilled records whose price, allowance use or tariff version changes get the new values and
  status `rerated`. The allowance counter is rewritten with the run's consumption and unflagged.
- The new results replace the old ones (domain.rating_engine.rerate), never add to them, so
  running it twice changes nothing the second time.
- A record the current tariff cannot rate (its number no longer matches, its zone is gone) keeps
  its old values and is reported in `unrated`; its allowance use is then left out of the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, col, select

from domain.catalog import Catalog
from domain.money import from_micros
from domain.offering_tariff import tariff_for
from domain.rating_engine import AllowanceLimits, RatedEvent, RatingEvent, RecordDelta, rerate
from domain.spending import counts_for_roaming_cap, roaming_cap_zones
from domain.tariff import TariffBook
from persistence.tables import AllowanceCounter, BillingAccount, Product, UsageRecord
from services.compiled_tariffs import eu_data_cap_bytes, exclusive, is_public_holiday, stand_in_destination
from services.errors import NotFound
from services.rated_record import allowance_base_units, rated_event_values, store_state

RERATED = "rerated"
BILLED = "billed"


@dataclass
class RerateReport:
    product_id: str
    period_start: datetime
    tariff: tuple[str, str]  # (id, version) the period was rated with
    applied: list[RecordDelta] = field(default_factory=list)  # unbilled records that changed
    billed_deltas: list[RecordDelta] = field(default_factory=list)  # billed records that would change: for a credit/debit note
    unrated: list[tuple[str, str]] = field(default_factory=list)  # (record id, why) kept as they were

    @property
    def applied_delta(self) -> Decimal:
        return sum((d.delta for d in self.applied), Decimal(0))

    @property
    def billed_delta(self) -> Decimal:
        return sum((d.delta for d in self.billed_deltas), Decimal(0))


def rerate_period(session: Session, product_id: str, period_start: datetime, book: TariffBook, *, catalog: Catalog) -> RerateReport:
    """Re-rate the product's period inside the caller's transaction; see the module docstring."""
    counter = _lock_counter(session, product_id, period_start)
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    offering = catalog.offering(product.offering_id)
    if offering is None:
        raise ValueError(f"offering {product.offering_id!r} of product {product_id} is not in catalog {catalog.version}")
    account = session.get(BillingAccount, product.billing_account_id)
    timezone = account.timezone if account is not None else "Europe/Berlin"
    tariff = tariff_for(offering, book)
    report = RerateReport(product_id, period_start, tariff.key)

    records = list(session.exec(
        select(UsageRecord)
        .where(UsageRecord.product_id == product_id, UsageRecord.period_start == period_start)
        .order_by(col(UsageRecord.event_time), col(UsageRecord.id))
        .with_for_update()
    ))
    events: list[RatingEvent] = []
    for record in records:
        event = _event(record, tariff, timezone)
        if isinstance(event, str):
            report.unrated.append((record.id, event))
        else:
            events.append(event)
    by_id = {r.id: r for r in records}

    limits = AllowanceLimits.from_allowances(offering.allowances)
    with exclusive(tariff, timezone) as engine:
        result = rerate(events, [_previous(by_id[e.record_id]) for e in events], engine, limits,
                        holidays=is_public_holiday, timezone=timezone, eu_data_cap_bytes=eu_data_cap_bytes(tariff, offering))

    new_by_id = {r.record_id: r for r in result.results}
    capped = roaming_cap_zones(tariff)
    for delta in result.deltas:
        record = by_id[delta.record_id]
        new = new_by_id[delta.record_id]
        if new.error is not None:
            report.unrated.append((record.id, new.error))
            continue
        if not delta.changed:
            continue
        if record.invoice_id is not None or record.status == BILLED:
            report.billed_deltas.append(delta)
            continue
        for name, value in rated_event_values(new).items():
            setattr(record, name, value)
        record.tariff_id, record.tariff_version = new.tariff_id, new.tariff_version
        record.status = RERATED
        session.add(record)
        report.applied.append(delta)

    store_state(counter, result.used)
    # The period's running cost (services.spending_monitor reads it), summed afresh over all its records, billed ones too.
    counter.usage_micros = sum(r.amount_micros for r in records)
    counter.roaming_data_micros = sum(r.amount_micros for r in records if counts_for_roaming_cap(r.usage_type, r.zone, capped))
    counter.needs_rerate = False
    if records:
        counter.last_event_time = max(r.event_time for r in records)
    session.add(counter)
    session.flush()
    return report


def rerate_flagged(session: Session, book: TariffBook, *, catalog: Catalog, limit: int = 100,
                   billing_account_id: str | None = None) -> list[RerateReport]:
    """Re-rate up to `limit` periods whose counters are flagged `needs_rerate`, oldest period first;
    with `billing_account_id`, only the periods of that account's products (before its invoice)."""
    statement = select(AllowanceCounter.product_id, AllowanceCounter.period_start).where(col(AllowanceCounter.needs_rerate).is_(True))
    if billing_account_id is not None:
        statement = statement.join(Product, col(Product.id) == col(AllowanceCounter.product_id)).where(Product.billing_account_id == billing_account_id)
    flagged = session.exec(
        statement.order_by(col(AllowanceCounter.period_start), col(AllowanceCounter.product_id)).limit(limit)
    ).all()
    return [rerate_period(session, product_id, start, book, catalog=catalog) for product_id, start in flagged]


def _lock_counter(session: Session, product_id: str, period_start: datetime) -> AllowanceCounter:
    """The period's counter, row-locked like ingestion locks it, so the two never interleave."""
    statement = (select(AllowanceCounter)
                 .where(AllowanceCounter.product_id == product_id, AllowanceCounter.period_start == period_start)
                 .with_for_update().execution_options(populate_existing=True))
    counter = session.exec(statement).first()
    if counter is None:
        counter = AllowanceCounter(product_id=product_id, period_start=period_start)
        session.add(counter)
        session.flush()
    return counter


def _event(record: UsageRecord, tariff, timezone: str) -> RatingEvent | str:
    """The record as the engine's event, or why it cannot be one."""
    disposition = record.disposition or "ANSWERED"
    destination = record.destination
    needs_number = record.usage_type == "sms" or (record.usage_type == "voice" and disposition == "ANSWERED")
    if destination is None and needs_number:
        destination = stand_in_destination(tariff, timezone, record.usage_type, record.roaming_country)
        if destination is None:
            return f"tariff {tariff.id} v{tariff.version} needs the called number, which the record does not have"
    try:
        return RatingEvent(record.id, record.usage_type, record.event_time, record.quantity,  # type: ignore[arg-type]
                           destination if needs_number else record.destination, record.roaming_country, disposition)
    except ValueError as exc:
        return str(exc)


def _previous(record: UsageRecord) -> RatedEvent:
    """What the record holds now, in the engine's terms (allowance in seconds, messages or bytes)."""
    allowance = allowance_base_units(record.parts or [])
    return RatedEvent(
        record_id=record.id, kind=record.usage_type, billed_units=0, allowance_units=allowance, charged_units=0,
        amount=from_micros(record.amount_micros), amount_micros=record.amount_micros, band=record.band,
        destination=record.destination_name, zone=record.zone, tariff_id=record.tariff_id or "", tariff_version=record.tariff_version or "",
    )
