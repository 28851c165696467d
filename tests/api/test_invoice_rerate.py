"""Usage periods flagged for re-rating are priced again, for the account being invoiced only, before its
invoice gathers the usage: the invoice bills the re-rated amounts.

Prices (tariff de-mobile-2026, mobile-s with 100 min = 6000 s in the bundle): German mobile calls 60/1,
peak Mon-Fri 08:00-19:00 0.09/min, off-peak 0.05/min. February 2026, Europe/Berlin, cycle day 1."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import select

from activities.billing import BillingActivities
from config.catalog_loader import load_catalog
from config.settings import Settings
from domain.billing_cycle import CycleSpec, period_containing
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, BusinessEvent, Invoice, UsageRecord
from tests.api.conftest import CRM, USAGE_PATH
from tests.api.test_usage import rated, record, subscriber

SPEC = CycleSpec(kind="monthly", bill_cycle_day=1, timezone="Europe/Berlin")
FEBRUARY = period_containing(SPEC, datetime(2026, 2, 10, tzinfo=timezone.utc))


async def out_of_order_usage(client, msisdn: str) -> tuple[str, str]:
    """The whole allowance used off-peak on the 11th, then a peak call of the 10th arriving late."""
    later = record(msisdn, duration=6000, when="2026-02-11T20:00:00+01:00")
    early = record(msisdn, duration=120, when="2026-02-10T10:00:00+01:00")
    for body, price in ((later, "0.00"), (early, "0.18")):  # rated on arrival: the late call finds no allowance left
        response = await client.post(USAGE_PATH, headers=CRM, json=body)
        assert response.status_code == 201, response.text
        assert rated(response.json())["taxExcludedRatingAmount"]["value"] == price
    return early["id"], later["id"]


def counter_flag(db_url: str, product_id: str) -> bool:
    with session_scope(db_url) as session:
        return session.exec(select(AllowanceCounter.needs_rerate).where(AllowanceCounter.product_id == product_id)).one()


async def test_flagged_usage_is_rerated_before_the_invoice_takes_it(client, db_url):
    account, msisdn, product_id = await subscriber(client, db_url)
    early_id, later_id = await out_of_order_usage(client, msisdn)
    _, other_msisdn, other_product = await subscriber(client, db_url)
    await out_of_order_usage(client, other_msisdn)
    assert counter_flag(db_url, product_id) and counter_flag(db_url, other_product)

    settings = Settings(database_url=db_url)
    activities = BillingActivities(settings, load_catalog(settings.catalog_path), {}, gateway=None, oss=None, notifier=None)
    issued = activities.issue_cycle_invoice(account["id"], SPEC, FEBRUARY, 14 * 86400)

    with session_scope(db_url) as session:
        invoice = session.get(Invoice, issued.invoice_id)
        early, later = session.get(UsageRecord, early_id), session.get(UsageRecord, later_id)
        rerated = session.exec(select(BusinessEvent).where(BusinessEvent.billing_account_id == account["id"], BusinessEvent.kind == "usage.rerated")).all()
    # In time order the early call is free and the later one pays its last 120 s off-peak: 2 x 0.05.
    assert (early.amount_micros, later.amount_micros) == (0, 100_000)
    assert (early.invoice_id, later.invoice_id, early.status, later.status) == (invoice.id, invoice.id, "billed", "billed")
    usage_lines = [line for line in invoice.lines if line["kind"] == "usage"]
    assert [(line["net_amount"], line["quantity"]) for line in usage_lines] == [("0.10", "2")]
    assert not counter_flag(db_url, product_id)
    assert len(rerated) == 1 and rerated[0].data["appliedDelta"] == "-0.080000"
    # Another account's flagged period waits for its own invoice.
    assert counter_flag(db_url, other_product)
