"""activities.invoice_charges sums an account's usage of the closed period in the database (domain.charges.UsageSummary)
and reads only the other unbilled records one by one; on both databases its usage lines are exactly those of every
unbilled record passed one by one: late records of an earlier period, a record that arrived after the cut-off (it
waits), one of the next period, one already billed, two products, ids that sort differently under a locale."""
from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlmodel import col, select

from activities.invoice_charges import CycleRequest, cycle_charges, cycle_charges_many, cycle_inputs
from config.catalog_loader import load_catalog
from config.settings import Settings
from domain.billing_cycle import period_containing
from domain.charges import UsageItem, compute_cycle_lines
from domain.money import from_micros
from persistence.db import session_scope
from persistence.tables import Product, UsageRecord
from tests.billing.test_cycle_charges_invoicing import at, open_line, spec_for

GRACE = timedelta(hours=6)


def _record(session, account_id: str, product_id: str, record_id: str, usage_type: str, event, received, micros: int, *,
            invoice_id: str | None = None) -> None:
    session.add(UsageRecord(id=record_id, usage_type=usage_type, msisdn="4915100000000", product_id=product_id, billing_account_id=account_id,
                            event_time=event, quantity=60, units=1, chargeable_units=micros // 90_000, amount_micros=micros,
                            period_start=period_containing(spec_for(1), event).start, received_at=received, invoice_id=invoice_id))


def _account(db_url: str) -> tuple[str, str]:
    account_id, first = open_line(db_url, "mobile-s", at(date(2025, 12, 1)))
    second = str(uuid.uuid4())
    tag = uuid.uuid4().hex[:8]
    with session_scope(db_url) as session:
        template = session.get(Product, first)
        session.add(Product(**{**template.model_dump(), "id": second, "msisdn": template.msisdn[:-1] + "9", "order_item_id": "2"}))
        # Ids whose code point order (the line's) differs from a locale's: a capital before a small letter.
        for n, (record_id, product_id, usage_type, micros) in enumerate([("B", first, "voice", 90_001), ("a", first, "voice", 180_000),
                                                                          ("cdr-10", second, "voice", 3), ("cdr-9", second, "voice", 270_000),
                                                                          ("Z", first, "sms", 190_000), ("c", second, "data", 45_000)]):
            event = at(date(2026, 1, 3 + n), 10 + n)
            _record(session, account_id, product_id, f"{record_id}-{tag}", usage_type, event, event, micros)
        late = at(date(2025, 12, 30), 22)  # December's, arrived in January: its own line
        _record(session, account_id, first, f"late-{tag}", "voice", late, at(date(2026, 1, 2)), 450_000)
        last_minute, cutoff = at(date(2026, 1, 31), 23), at(date(2026, 2, 1)) + GRACE
        _record(session, account_id, first, f"grace-{tag}", "voice", last_minute, cutoff - timedelta(seconds=1), 90_000)  # in time: billed
        _record(session, account_id, first, f"after-{tag}", "voice", last_minute, cutoff, 90_000)  # at the cut-off: waits
        _record(session, account_id, first, f"feb-{tag}", "voice", at(date(2026, 2, 1), 1), at(date(2026, 2, 1), 1), 90_000)  # next period
        _record(session, account_id, first, f"billed-{tag}", "voice", at(date(2026, 1, 8)), at(date(2026, 1, 8)), 90_000, invoice_id="inv-x")
    return account_id, tag


def _one_by_one(session, account_id: str, period) -> list[UsageItem]:
    rows = session.exec(select(UsageRecord).where(UsageRecord.billing_account_id == account_id, col(UsageRecord.invoice_id).is_(None),
                                                  col(UsageRecord.event_time) < period.end))
    return [UsageItem(record_id=r.id, product_id=r.product_id, usage_type=r.usage_type, event_time=r.event_time, received_at=r.received_at,
                      amount=from_micros(r.amount_micros), chargeable_units=r.chargeable_units) for r in rows]


def _usage(charges) -> list[tuple]:
    return [(c.line.model_dump(), list(c.usage_ids)) for c in charges if c.line.kind == "usage"]


def test_usage_summed_in_the_database_bills_what_the_records_one_by_one_bill(db_url):
    account_id, tag = _account(db_url)
    spec = spec_for(1)
    january = period_containing(spec, at(date(2026, 1, 15), 12))
    catalog = load_catalog(Settings().catalog_path)
    with session_scope(db_url) as session:
        products = list(session.exec(select(Product).where(Product.billing_account_id == account_id).order_by(Product.id)))
        inputs = cycle_inputs(session, account_id, products, catalog, spec, january, grace=GRACE)
        records = _one_by_one(session, account_id, january)
        expected = _usage(compute_cycle_lines(inputs.model_copy(update={"usage": records, "usage_summaries": []})))
        alone = _usage(cycle_charges(session, account_id, products, catalog, spec, january, grace=GRACE))
        together = _usage(cycle_charges_many(session, [CycleRequest(account_id, products, spec, january, GRACE)], catalog)[account_id])
        session.rollback()

    assert alone == expected and together == expected
    # Most of January's records came summed, the rest one by one: the late one, and the one after the cut-off (it waits).
    assert sorted(len(s.record_ids) for s in inputs.usage_summaries) == [1, 1, 2, 3]
    assert sorted(r.record_id for r in inputs.usage) == [f"after-{tag}", f"late-{tag}"]
    billed = [i for _line, ids in expected for i in ids]
    assert sorted(billed) == sorted(f"{name}-{tag}" for name in ("B", "a", "cdr-10", "cdr-9", "Z", "c", "late", "grace"))
    assert [ids for _line, ids in expected if f"a-{tag}" in ids] == [[f"B-{tag}", f"a-{tag}", f"grace-{tag}"]]
