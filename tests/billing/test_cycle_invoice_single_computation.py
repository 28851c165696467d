"""BillingActivities.issue_cycle_invoice as one computation (activities.invoice_charges.cycle_charges) on both
databases: the billing profile's `usage_grace` is the late-usage cut-off, an invoice-wide promotion sees the
usage lines, and a reverse-charge buyer's charges keep their billed fees and BT-120 reason
(invoice_issuer._apply_vat_treatment).

Prices: mobile-s 9.99 net; Europe/Berlin; 19 % VAT."""
from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlmodel import select

from activities.billing import BillingActivities
from activities.invoice_charges import PendingCharge
from activities.invoice_issuer import _apply_vat_treatment
from config.catalog_loader import load_catalog
from config.profiles import load_billing_profiles
from config.settings import Settings
from domain.billing_cycle import period_containing
from domain.billing_profile import BillingProfile
from domain.charges import BilledFee
from domain.invoicing import ChargeLine
from domain.vat import Buyer, vat_treatment
from persistence.db import session_scope
from persistence.tables import Invoice, ProductDiscount, UsageRecord
from tests.billing.test_cycle_charges_invoicing import _call, _usage_lines, at, open_line, spec_for


def activities(db_url: str, grace: timedelta | None) -> BillingActivities:
    settings = Settings(database_url=db_url)
    profiles = load_billing_profiles()
    profiles["standard"] = profiles["standard"].model_copy(update={"usage_grace": grace})
    return BillingActivities(settings, load_catalog(settings.catalog_path), profiles, gateway=None, oss=None, notifier=None)


def cycle_invoice(acts: BillingActivities, db_url: str, account_id: str, day: date) -> Invoice:
    spec = spec_for(1)
    issued = acts.issue_cycle_invoice(account_id, spec, period_containing(spec, at(day, 12)), 14 * 86400)
    with session_scope(db_url) as session:
        return session.get(Invoice, issued.invoice_id)


def test_with_a_two_day_grace_a_cdr_after_the_cut_off_goes_on_the_next_invoice_exactly_once(db_url):
    acts = activities(db_url, timedelta(days=2))
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    cycle_invoice(acts, db_url, account_id, date(2025, 12, 15))
    # January ends at 1 February 00:00 Berlin; the cut-off is 3 February 00:00.
    in_grace = _call(db_url, account_id, product_id, at(date(2026, 1, 31), 20), at(date(2026, 2, 2), 23))
    late = _call(db_url, account_id, product_id, at(date(2026, 1, 31), 21), at(date(2026, 2, 3), 1), micros=450_000)

    january = cycle_invoice(acts, db_url, account_id, date(2026, 1, 15))
    assert [amount for _, amount in _usage_lines(january)] == [Decimal("0.90")]
    february = cycle_invoice(acts, db_url, account_id, date(2026, 2, 15))
    (line,) = _usage_lines(february)
    assert line[1] == Decimal("0.45") and "(late records), 1 record" in line[0]
    assert cycle_invoice(acts, db_url, account_id, date(2026, 2, 15)).id == february.id  # retried: the same invoice
    march = cycle_invoice(acts, db_url, account_id, date(2026, 3, 15))
    assert _usage_lines(march) == []
    with session_scope(db_url) as session:
        rows = session.exec(select(UsageRecord).where(UsageRecord.id.in_([in_grace, late])))
        assert {r.id: r.invoice_id for r in rows} == {in_grace: january.id, late: february.id}


def test_without_a_grace_the_same_late_cdr_is_still_on_the_closing_invoice(db_url):
    acts = activities(db_url, None)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    cycle_invoice(acts, db_url, account_id, date(2025, 12, 15))
    _call(db_url, account_id, product_id, at(date(2026, 1, 31), 21), at(date(2026, 2, 3), 1), micros=450_000)
    january = cycle_invoice(acts, db_url, account_id, date(2026, 1, 15))
    assert [amount for _, amount in _usage_lines(january)] == [Decimal("0.45")]


def test_an_invoice_wide_promotion_sees_the_usage_lines(db_url):
    acts = activities(db_url, None)
    account_id, product_id = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    with session_scope(db_url) as session:
        session.add(ProductDiscount(id=f"{product_id}:ten", product_id=product_id, billing_account_id=account_id, promotion_id=f"ten-{uuid.uuid4()}",
                                    name="10 % off the bill", kind="percent", value="10", applies_to="invoice", cycles=None,
                                    first_cycle_at=at(date(2026, 1, 1))))
    cycle_invoice(acts, db_url, account_id, date(2025, 12, 15))
    _call(db_url, account_id, product_id, at(date(2026, 1, 20), 10), at(date(2026, 1, 20), 10))  # 0.90
    january = cycle_invoice(acts, db_url, account_id, date(2026, 1, 15))
    discounts = [Decimal(line["net_amount"]) for line in january.lines if line["kind"] == "discount"]
    # 10 % of the whole invoice, usage included: (9.99 February in advance + 0.90 usage) * 10 % = 1.089 -> 1.09
    # (without the usage line it would be 1.00).
    assert discounts == [Decimal("-1.09")]
    assert january.net_cents == 999 + 90 - 109


def test_reverse_charge_keeps_billed_fees_and_the_exemption_reason():
    fee = BilledFee(product_id="p1", plan_id="mobile-s", period_start=at(date(2026, 1, 1)), covered_from=at(date(2026, 1, 1)),
                    covered_to=at(date(2026, 2, 1)), monthly_fee=Decimal("9.99"), net_fee=Decimal("9.99"), direction="charge")
    charge = PendingCharge(ChargeLine(kind="recurring", description="Mobile S", net_amount=Decimal("9.99")), ["k"], [], [fee])
    fee_charge = PendingCharge(ChargeLine(kind="one_time", description="Fee", net_amount=Decimal("5"), vat_rate=Decimal(0), vat_category="O"),
                               ["f"], [], vat_exemption="Nicht steuerbarer Schadensersatz")
    treatment = vat_treatment(Buyer(country="AT", is_business=True, vat_id="ATU57194903"))
    assert treatment.kind == "reverse_charge"
    moved, kept = _apply_vat_treatment([charge, fee_charge], treatment)
    assert (moved.line.vat_category, moved.billed_fees, moved.charge_keys) == ("AE", [fee], ["k"])
    assert (kept.line.vat_category, kept.vat_exemption) == ("O", "Nicht steuerbarer Schadensersatz")  # no supply: never reverse charge


@pytest.mark.parametrize("grace", ["P2D", 172800])
def test_the_profile_loader_reads_usage_grace(tmp_path, grace):
    path = tmp_path / "profiles.yaml"
    path.write_text(f"profiles:\n  p:\n    description: d\n    payment_terms: P14D\n    usage_grace: {grace}\n"
                    "    dunning:\n      steps:\n        - {name: r, after: P3D, action: reminder}\n", encoding="utf-8")
    assert load_billing_profiles(path)["p"].usage_grace == timedelta(days=2)
    assert load_billing_profiles()["standard"].usage_grace is None
    with pytest.raises(ValueError, match="usage_grace"):
        BillingProfile.model_validate({**load_billing_profiles(path)["p"].model_dump(), "usage_grace": timedelta(hours=-1)})


async def test_blocking_work_runs_off_the_event_loop_in_the_callers_context():
    """activities.billing.BlockingWork: the DB parts of async activities run in the pool's threads, and see the
    caller's context variables (the activity context, which activities.order_records.utcnow reads)."""
    import contextvars
    import threading

    from activities.billing import BlockingWork

    marker = contextvars.ContextVar("marker", default="unset")
    marker.set("activity")
    work = BlockingWork()
    loop_thread = threading.current_thread().name
    name, seen = await work._in_thread(lambda: (threading.current_thread().name, marker.get()))
    assert name != loop_thread and name.startswith("activity-blocking") and seen == "activity"
