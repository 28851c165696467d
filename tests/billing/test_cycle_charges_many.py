"""activities.invoice_charges.cycle_charges_many (a bill run's set-based gathering) gives every account exactly
the charges cycle_charges gives it alone, on both databases, for accounts that differ in what the per-account
reads find: an earlier invoice (stored billed fees), a mid-cycle upgrade, a staff suspension, a promotion,
late and on-time usage, a pending one-time charge, an activation fee, and an account with no products."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlmodel import select

from activities.invoice_charges import CycleRequest, cycle_charges, cycle_charges_many
from config.catalog_loader import load_catalog
from config.settings import Settings
from domain.billing_cycle import period_containing
from persistence.db import session_scope
from persistence.tables import Product, ProductStatusChange
from services.pending_charges import add_pending_charge
from services.plan_changes import grant_promotions
from tests.billing.test_cycle_charges_invoicing import _call, at, change_plan, invoice_for, open_line, spec_for
from tests.support.records import create_billing_account, create_customer


def _snapshot(charges) -> list[tuple]:
    return [(c.line.model_dump(), list(c.charge_keys), list(c.usage_ids), [f.model_dump() for f in c.billed_fees], c.vat_exemption)
            for c in charges]


def _accounts(db_url: str) -> list[str]:
    spec = spec_for(1)
    catalog = load_catalog(Settings().catalog_path)
    plain, _ = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    invoice_for(db_url, plain, spec, date(2025, 12, 15))  # December's invoice stored January's fee in advance

    upgraded, upgraded_product = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    invoice_for(db_url, upgraded, spec, date(2025, 12, 15))
    change_plan(db_url, upgraded_product, "mobile-l", at(date(2026, 1, 10), 12))

    suspended, suspended_product = open_line(db_url, "mobile-l", at(date(2026, 1, 5)))  # activation fee, prorated January
    with session_scope(db_url) as session:
        for before, after, day in (("active", "suspended", 11), ("suspended", "active", 21)):
            session.add(ProductStatusChange(product_id=suspended_product, from_status=before, to_status=after, source="manual",
                                            at=at(date(2026, 1, day), 9)))

    promoted, promoted_product = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    with session_scope(db_url) as session:
        grant_promotions(session, catalog, session.get(Product, promoted_product), ["half-price-3"], at(date(2026, 1, 1)), None)
        add_pending_charge(session, key=f"sim-swap:{promoted}", billing_account_id=promoted, amount=Decimal("14.95"),
                           description="Replacement SIM card", kind="hardware", vat_rate=Decimal("19"), vat_category="S")
    for day, hour in ((3, 10), (20, 8), (20, 9)):
        _call(db_url, promoted, promoted_product, at(date(2026, 1, day), hour), at(date(2026, 1, day), hour))
    _call(db_url, promoted, promoted_product, at(date(2025, 12, 30), 10), at(date(2026, 1, 2), 10), micros=450_000)  # late

    empty = create_billing_account(db_url, create_customer(db_url))
    return [plain, upgraded, suspended, promoted, empty]


def _products(session, account_id: str) -> list[Product]:
    return list(session.exec(select(Product).where(Product.billing_account_id == account_id).order_by(Product.id)))


def test_set_based_gathering_gives_each_account_its_own_charges(db_url):
    accounts = _accounts(db_url)
    spec = spec_for(1)
    january = period_containing(spec, at(date(2026, 1, 15), 12))
    catalog = load_catalog(Settings().catalog_path)
    with session_scope(db_url) as session:
        alone = {a: _snapshot(cycle_charges(session, a, _products(session, a), catalog, spec, january)) for a in accounts}
        session.rollback()
    with session_scope(db_url) as session:
        requests = [CycleRequest(a, _products(session, a), spec, january) for a in reversed(accounts)]
        together = {a: _snapshot(charges) for a, charges in cycle_charges_many(session, requests, catalog).items()}
        session.rollback()

    assert together == alone
    kinds = {a: sorted({line["kind"] for line, *_ in alone[a]}) for a in accounts}
    # The scenarios did reach the reads they are meant to cover (a comparison of empty results proves nothing).
    assert kinds[accounts[1]] == ["recurring"] and len(alone[accounts[1]]) >= 3  # the upgrade: credit, new fee, February
    assert kinds[accounts[2]] == ["one_time", "recurring"]
    assert kinds[accounts[3]] == ["discount", "one_time", "recurring", "usage"]
    assert alone[accounts[4]] == []
    assert any(billed for *_, billed, _exemption in alone[accounts[0]])


def test_an_account_twice_in_one_call_is_refused(db_url):
    account_id, _ = open_line(db_url, "mobile-s", at(date(2026, 1, 1)))
    spec = spec_for(1)
    january = period_containing(spec, at(date(2026, 1, 15), 12))
    with session_scope(db_url) as session, pytest.raises(ValueError, match="once per call"):
        products = _products(session, account_id)
        cycle_charges_many(session, [CycleRequest(account_id, products, spec, january)] * 2, load_catalog(Settings().catalog_path))
