"""domain.charges wired into the real invoicing activity (BillingActivities.issue_cycle_invoice), on both
databases: plan changes (upgrade at once with a credit for the unused old fee, downgrade at the cycle end),
suspensions (free for a staff suspension, chargeable for a barring for arrears), a 3-cycle promotion over
4 cycles, late usage, bill cycle day 31 with a DST month, and re-issuing that never bills twice.

Prices: mobile-s 9.99, mobile-l 29.99 (+ 9.99 activation), net; Europe/Berlin; 19 % VAT."""
from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlmodel import select

from activities.billing import BillingActivities
from activities.invoice_charges import cycle_charges
from activities.invoice_issuer import seal_documents
from config.catalog_loader import load_catalog
from config.settings import Settings
from domain.billing_cycle import CycleSpec, next_period, period_containing
from persistence.db import session_scope
from persistence.tables import (
    BilledFeeRow,
    BillingAccount,
    Invoice,
    Product,
    ProductOrderItem,
    ProductStatusChange,
    UsageRecord,
)
from services.plan_changes import grant_promotions, schedule_plan_change
from tests.documents.validators import all_errors
from tests.support.records import create_billing_account, create_customer

BERLIN = ZoneInfo("Europe/Berlin")
OFFERINGS = {"mobile-s": ("Mobile S", "1"), "mobile-l": ("Mobile L", "1")}


def at(day: date, hour: int = 0) -> datetime:
    """`hour` o'clock Berlin time on `day`, in UTC (independent of domain.billing_cycle)."""
    return datetime.combine(day, time(hour), tzinfo=BERLIN).astimezone(UTC)


def spec_for(bcd: int) -> CycleSpec:
    return CycleSpec(kind="monthly", bill_cycle_day=bcd, timezone="Europe/Berlin")


def open_line(db_url: str, offering: str, activated: datetime, *, bcd: int = 1) -> tuple[str, str]:
    account_id = create_billing_account(db_url, create_customer(db_url), bill_cycle_day=bcd)
    product_id = str(uuid.uuid4())
    name, version = OFFERINGS[offering]
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        session.add(Product(id=product_id, customer_id=account.customer_id, billing_account_id=account_id, offering_id=offering, offering_version=version,
                            catalog_version="2026.1", name=name, msisdn="49151" + f"{uuid.uuid4().int % 10**8:08d}", status="active",
                            order_id=f"test-{account_id}", order_item_id="1", start_date=activated, billing_start=activated))
    return account_id, product_id


def activities(db_url: str) -> BillingActivities:
    settings = Settings(database_url=db_url)
    return BillingActivities(settings, load_catalog(settings.catalog_path), {}, gateway=None, oss=None, notifier=None)


def invoice_for(db_url: str, account_id: str, spec: CycleSpec, day: date) -> Invoice:
    issued = activities(db_url).issue_cycle_invoice(account_id, spec, period_containing(spec, at(day, 12)), 14 * 86400)
    with session_scope(db_url) as session:
        return session.get(Invoice, issued.invoice_id)


def fee_lines(invoice: Invoice) -> list[tuple[str, str, Decimal]]:
    return [(line["kind"], line["description"], Decimal(line["net_amount"])) for line in invoice.lines if line["kind"] in ("recurring", "discount")]


def change_plan(db_url: str, product_id: str, offering: str, when: datetime):
    with session_scope(db_url) as session:
        item = ProductOrderItem(order_id=f"change-{uuid.uuid4()}", item_id="1", action="modify", offering_id=offering, product_id=product_id)
        span = schedule_plan_change(session, load_catalog(Settings().catalog_path), item, product_id, when)
        return span.effective_at, span.applied


def product(db_url: str, product_id: str) -> Product:
    with session_scope(db_url) as session:
        return session.get(Product, product_id)


def billed_fee_count(db_url: str, product_id: str) -> int:
    with session_scope(db_url) as session:
        return len(session.exec(select(BilledFeeRow).where(BilledFeeRow.product_id == product_id)).all())


# --- plan changes ---------------------------------------------------------------------------------


def test_mid_cycle_upgrade_is_charged_at_once_with_a_credit_for_the_unused_old_fee(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    december = invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    assert fee_lines(december) == [("recurring", "Mobile S monthly fee", Decimal("9.99"))]  # January in advance

    effective_at, applied = change_plan(db_url, product_id, "mobile-l", at(date(2026, 1, 16), 12))
    assert (effective_at, applied) == (at(date(2026, 1, 16), 12), True)
    assert product(db_url, product_id).offering_id == "mobile-l"

    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    # 15 of January's 31 days on S, 16 on L: S's unused 16 days credited (9.99 - 4.83), L charged (29.99 - 14.51),
    # then February on L in advance. The plan change is no new activation: no activation fee.
    assert fee_lines(january) == [
        ("recurring", f"Credit: Mobile S monthly fee ({product(db_url, product_id).msisdn}), not used 2026-01-16 to 2026-01-31 (16/31 days)", Decimal("-5.16")),
        ("recurring", f"Mobile L monthly fee ({product(db_url, product_id).msisdn}), 2026-01-16 to 2026-01-31 (16/31 days)", Decimal("15.48")),
        ("recurring", "Mobile L monthly fee", Decimal("29.99")),
    ]
    assert [line["kind"] for line in january.lines] == ["recurring"] * 3
    assert january.net_cents == 4031 and january.gross_cents == 4797  # 40.31 + 7.6589 -> 7.66 VAT
    # The e-invoice with a negative (credit) line is valid EN 16931.
    seal_documents(db_url, Settings(database_url=db_url), january.id)
    with session_scope(db_url) as session:
        xml = session.get(Invoice, january.id).xml
    assert xml is not None and all_errors(xml, "en16931") == {"xsd": [], "cen": [], "facturx": []}

    # February's invoice bills March only: January and February are settled, nothing twice.
    february = invoice_for(db_url, account_id, spec, date(2026, 2, 15))
    assert fee_lines(february) == [("recurring", "Mobile L monthly fee", Decimal("29.99"))]


def test_downgrade_takes_effect_at_the_cycle_end(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-l", at(date(2026, 1, 1)))
    december = invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    assert fee_lines(december) == [("recurring", "Mobile L monthly fee", Decimal("29.99"))]  # January in advance

    effective_at, applied = change_plan(db_url, product_id, "mobile-s", at(date(2026, 1, 16), 12))
    assert (effective_at, applied) == (at(date(2026, 2, 1)), False)
    assert product(db_url, product_id).offering_id == "mobile-l"  # the current plan until the cycle end

    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    assert fee_lines(january) == [("recurring", "Mobile S monthly fee", Decimal("9.99"))]  # January stays L, February on S
    # The activation fee is incurred on 1 January (after December closed), so January's invoice carries it, once.
    assert [(line["description"], line["net_amount"]) for line in january.lines if line["kind"] == "one_time"] == [
        ("Mobile L activation fee, 2026-01-01", "9.99")]
    assert product(db_url, product_id).offering_id == "mobile-s"  # applied once due (the invoice closing January)
    february = invoice_for(db_url, account_id, spec, date(2026, 2, 15))
    assert fee_lines(february) == [("recurring", "Mobile S monthly fee", Decimal("9.99"))]
    assert [line["kind"] for line in february.lines] == ["recurring"]


# --- suspensions ----------------------------------------------------------------------------------


def _suspend(db_url: str, product_id: str, source: str, start: datetime, end: datetime) -> None:
    with session_scope(db_url) as session:
        session.add(ProductStatusChange(product_id=product_id, from_status="active", to_status="suspended", reason=source, source=source, at=start))
        session.add(ProductStatusChange(product_id=product_id, from_status="suspended", to_status="active", reason="restored", source=source, at=end))


def test_a_staff_suspension_stops_the_fee_a_barring_for_arrears_does_not(db_url):
    spec = spec_for(1)
    for source, credit in (("manual", Decimal("-3.23")), ("dunning", None)):
        account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
        invoice_for(db_url, account_id, spec, date(2025, 12, 15))
        _suspend(db_url, product_id, source, at(date(2026, 1, 11), 9), at(date(2026, 1, 21), 9))
        january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
        credits = [amount for kind, _, amount in fee_lines(january) if amount < 0]
        # Suspended 11 Jan (not billed) to 21 Jan (billed again): 10 of 31 days, 9.99 x (20 - 10)/31 -> 6.45 - 3.22.
        assert credits == ([credit] if credit else []), source
        assert Decimal(fee_lines(january)[-1][2]) == Decimal("9.99")  # February in advance either way


def test_a_staff_restore_that_leaves_a_barring_for_arrears_ends_the_free_stretch(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    with session_scope(db_url) as session:
        for source, before, after, day in (("manual", "active", "suspended", 11), ("manual", "suspended", "suspended", 16),
                                           ("dunning", "suspended", "active", 21)):
            session.add(ProductStatusChange(product_id=product_id, from_status=before, to_status=after, source=source, at=at(date(2026, 1, day), 9)))
    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    # Free only while staff held it (11..15 Jan, 5 days): 9.99 x (15 - 10)/31 -> 4.83 - 3.22.
    assert [amount for _, _, amount in fee_lines(january) if amount < 0] == [Decimal("-1.61")]


# --- promotions -----------------------------------------------------------------------------------


def test_a_three_cycle_promotion_over_four_cycles(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    with session_scope(db_url) as session:
        grant_promotions(session, load_catalog(Settings().catalog_path), session.get(Product, product_id), ["half-price-3"], at(date(2026, 1, 1)), None)
    nets = []
    for day in (date(2025, 12, 15), date(2026, 1, 15), date(2026, 2, 15), date(2026, 3, 15)):
        invoice = invoice_for(db_url, account_id, spec, day)
        nets.append(invoice.net_cents)
        discount = [amount for kind, _, amount in fee_lines(invoice) if kind == "discount"]
        assert discount == ([Decimal("-5.00")] if day.month != 3 else []), day
    # January, February, March at half price (9.99 - 5.00), April in full.
    assert nets == [499, 499, 499, 999]
    assert billed_fee_count(db_url, product_id) == 4


# --- usage ----------------------------------------------------------------------------------------


def _call(db_url: str, account_id: str, product_id: str, event: datetime, received: datetime, micros: int = 900_000) -> str:
    spec = spec_for(1)
    record_id = f"cdr-{uuid.uuid4()}"
    with session_scope(db_url) as session:
        session.add(UsageRecord(id=record_id, usage_type="voice", msisdn="4915100000000", product_id=product_id, billing_account_id=account_id,
                                event_time=event, quantity=600, units=10, chargeable_units=10, amount_micros=micros,
                                period_start=period_containing(spec, event).start, received_at=received))
    return record_id


def _usage_lines(invoice: Invoice) -> list[tuple[str, Decimal]]:
    return [(line["description"], Decimal(line["net_amount"])) for line in invoice.lines if line["kind"] == "usage"]


def test_a_late_cdr_lands_on_the_next_invoice_exactly_once(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    on_time = _call(db_url, account_id, product_id, at(date(2026, 1, 20), 10), at(date(2026, 1, 20), 10))
    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    assert [amount for _, amount in _usage_lines(january)] == [Decimal("0.90")]
    late = _call(db_url, account_id, product_id, at(date(2026, 1, 31), 23), at(date(2026, 2, 3), 8), micros=450_000)

    february = invoice_for(db_url, account_id, spec, date(2026, 2, 15))
    assert invoice_for(db_url, account_id, spec, date(2026, 2, 15)).id == february.id  # re-issued: the same invoice
    (line,) = _usage_lines(february)
    assert line[1] == Decimal("0.45") and "2026-01-01 to 2026-01-31 (late records), 1 record" in line[0]
    march = invoice_for(db_url, account_id, spec, date(2026, 3, 15))
    assert _usage_lines(march) == []
    with session_scope(db_url) as session:
        assert {r.id: r.invoice_id for r in session.exec(select(UsageRecord).where(UsageRecord.id.in_([on_time, late])))} == {
            on_time: january.id, late: february.id}


def test_with_a_grace_period_a_cdr_arriving_after_the_cut_off_waits(db_url):
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    january = period_containing(spec, at(date(2026, 1, 15)))
    in_grace = _call(db_url, account_id, product_id, at(date(2026, 1, 31), 22), january.end + timedelta(hours=1))
    after = _call(db_url, account_id, product_id, at(date(2026, 1, 31), 23), january.end + timedelta(hours=3))
    with session_scope(db_url) as session:
        products = list(session.exec(select(Product).where(Product.billing_account_id == account_id)))
        charges = cycle_charges(session, account_id, products, load_catalog(Settings().catalog_path), spec, january, grace=timedelta(hours=2))
        session.rollback()
    usage = [c for c in charges if c.line.kind == "usage"]
    assert [c.usage_ids for c in usage] == [[in_grace]]
    assert after not in {u for c in charges for u in c.usage_ids}


# --- calendar -------------------------------------------------------------------------------------


def test_bill_cycle_day_31_and_a_dst_month_in_berlin(db_url):
    spec = spec_for(31)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 3, 10), 12), bcd=31)
    change_plan(db_url, product_id, "mobile-l", at(date(2026, 3, 29), 12))  # the day clocks go forward
    invoice = invoice_for(db_url, account_id, spec, date(2026, 3, 15))
    # BCD 31 in February is the 28th: the period is 28 Feb .. 30 Mar (31 days), ending at CEST midnight.
    assert (invoice.local_period_start, invoice.local_period_end) == (date(2026, 2, 28), date(2026, 3, 31))
    assert (invoice.period_start, invoice.period_end) == (datetime(2026, 2, 27, 23, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC))
    msisdn = product(db_url, product_id).msisdn
    assert fee_lines(invoice) == [
        ("recurring", f"Mobile S monthly fee ({msisdn}), 2026-03-10 to 2026-03-28 (19/31 days)", Decimal("6.13")),
        ("recurring", f"Mobile L monthly fee ({msisdn}), 2026-03-29 to 2026-03-30 (2/31 days)", Decimal("1.93")),
        ("recurring", "Mobile L monthly fee", Decimal("29.99")),  # 31 Mar .. 29 Apr in advance
    ]
    assert invoice.net_cents == 3805
    # Re-issuing returns the same invoice and stores nothing twice; the next one bills 30 Apr .. 30 May only.
    fees = billed_fee_count(db_url, product_id)
    assert invoice_for(db_url, account_id, spec, date(2026, 3, 15)).id == invoice.id
    assert billed_fee_count(db_url, product_id) == fees == 3
    april = invoice_for(db_url, account_id, spec, date(2026, 4, 15))
    assert fee_lines(april) == [("recurring", "Mobile L monthly fee", Decimal("29.99"))]
    assert (april.local_period_start, april.local_period_end) == (date(2026, 3, 31), date(2026, 4, 30))  # April's BCD-31 day is the 30th
    assert next_period(spec, period_containing(spec, at(date(2026, 4, 15)))).local_start == date(2026, 4, 30)


def test_a_reverse_charge_invoice_stores_its_billed_fees_too(db_url):
    """The issuer rebuilds each charge for a reverse-charge buyer; the plan change's credit and charge must
    still be stored, or the next invoice would bill them again."""
    spec = spec_for(1)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    with session_scope(db_url) as session:
        from persistence.tables import Customer

        customer = session.get(Customer, session.get(BillingAccount, account_id).customer_id)
        customer.vat_id, customer.address = "ATU57194903", {"street1": "Ringstraße 1", "postCode": "1010", "city": "Wien", "country": "AT"}
        session.add(customer)
    invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    change_plan(db_url, product_id, "mobile-l", at(date(2026, 1, 16), 12))
    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    assert [Decimal(line["net_amount"]) for line in january.lines] == [Decimal("-5.16"), Decimal("15.48"), Decimal("29.99")]
    assert {line["vat_category"] for line in january.lines} == {"AE"} and january.vat_cents == 0
    assert billed_fee_count(db_url, product_id) == 4  # January on S; January's credit and L part; February on L
    february = invoice_for(db_url, account_id, spec, date(2026, 2, 15))
    assert [Decimal(line["net_amount"]) for line in february.lines] == [Decimal("29.99")]


def test_a_pending_one_time_charge_is_billed_once_by_the_next_cycle_invoice(db_url):
    from services.pending_charges import add_pending_charge

    spec = spec_for(1)
    account_id, _ = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    with session_scope(db_url) as session:
        row, _ = add_pending_charge(session, key=f"sim-swap:{account_id}", billing_account_id=account_id, amount=Decimal("14.95"),
                                    description="Replacement SIM card", kind="hardware", vat_rate=Decimal("19"), vat_category="S")
        key = row.key
    december = invoice_for(db_url, account_id, spec, date(2025, 12, 15))
    january = invoice_for(db_url, account_id, spec, date(2026, 1, 15))
    assert [(line["description"], line["net_amount"]) for line in december.lines if line["kind"] == "one_time"] == [("Replacement SIM card", "14.95")]
    assert [line["kind"] for line in january.lines] == ["recurring"]
    with session_scope(db_url) as session:
        from persistence.tables import PendingOneTimeCharge

        stored = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.key == key)).one()
    assert (stored.status, stored.invoice_id) == ("billed", december.id)
