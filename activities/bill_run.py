"""The nightly bill-run check's activities: find every account whose closed cycle has no invoice, and
write the run's report where support staff see it.

Billing at cycle end belongs to each account's workflow; this is the safety net for a workflow that
was terminated, failed or is stuck. The repair itself is the workflow's normal `issue_cycle_invoice`
activity, whose invoice id is fixed by (account, period, kind), so a repair and a late workflow can
never produce two invoices for one period."""
from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlmodel import col, select
from temporalio import activity

from domain.billing_cycle import BillingPeriod, CycleSpec, period_containing, previous_period
from domain.billing_profile import BillingProfile
from persistence.db import session_scope
from persistence.tables import BillingAccount, BusinessEvent, Invoice, Product


class MissingInvoice(BaseModel):
    billing_account_id: str
    customer_id: str
    cycle: CycleSpec
    period: BillingPeriod
    payment_terms_s: float


class BillRunReport(BaseModel):
    as_of: datetime
    accounts_checked: int
    found: int
    repaired: int  # invoices issued for cycles that had none
    nothing_to_bill: int = 0  # cycles that had no invoice because there was nothing to charge
    failed: list[str] = []  # "<account id> <period start>: <error>"


def closed_periods_to_check(spec: CycleSpec, as_of: datetime, settle: timedelta, lookback: int) -> list[BillingPeriod]:
    """The last `lookback` periods that ended at least `settle` before `as_of`, newest first. `settle`
    leaves the account's own workflow time to issue at cycle end before the check calls it missing."""
    period = previous_period(spec, period_containing(spec, as_of))
    while period.end + settle > as_of:
        period = previous_period(spec, period)
    found = []
    for _ in range(lookback):
        found.append(period)
        period = previous_period(spec, period)
    return found


def _billable(products: list[Product], period: BillingPeriod) -> bool:
    """A product was billing during some part of the period."""
    return any(p.billing_start is not None and p.billing_start < period.end
               and (p.termination_date is None or p.termination_date > period.start) for p in products)


class BillRunActivities:
    def __init__(self, db_url: str, profiles: dict[str, BillingProfile], *, settle: timedelta = timedelta(hours=1), lookback: int = 3) -> None:
        self.db_url = db_url
        self.profiles = profiles
        self.settle = settle
        self.lookback = lookback

    @activity.defn(name="find_missing_cycle_invoices")
    def find_missing_cycle_invoices(self, as_of: datetime, account_ids: list[str] | None = None) -> tuple[int, list[MissingInvoice]]:
        """(accounts checked, cycles that ended without an invoice, oldest first); all accounts, or those given."""
        missing: list[MissingInvoice] = []
        with session_scope(self.db_url) as session:
            products: dict[str, list[Product]] = {}
            statement = select(Product).where(col(Product.billing_start).is_not(None))
            if account_ids is not None:
                statement = statement.where(col(Product.billing_account_id).in_(account_ids))
            for product in session.exec(statement):
                products.setdefault(product.billing_account_id, []).append(product)
            accounts = list(session.exec(select(BillingAccount).where(col(BillingAccount.id).in_(sorted(products)))))
            invoiced = {(a, s) for a, s in session.exec(select(Invoice.billing_account_id, Invoice.period_start).where(Invoice.kind == "cycle"))}
            for account in accounts:
                profile = self.profiles.get(account.billing_profile)
                if profile is None:
                    continue
                spec = profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor or account.created_at)
                for period in reversed(closed_periods_to_check(spec, as_of, self.settle, self.lookback)):
                    if (account.id, period.start) not in invoiced and _billable(products[account.id], period):
                        missing.append(MissingInvoice(billing_account_id=account.id, customer_id=account.customer_id, cycle=spec,
                                                      period=period, payment_terms_s=profile.payment_terms.total_seconds()))
        return len(accounts), missing

    @activity.defn(name="record_bill_run_report")
    def record_bill_run_report(self, report: BillRunReport, repaired: list[MissingInvoice]) -> None:
        with session_scope(self.db_url) as session:
            for item in repaired:
                session.add(BusinessEvent(customer_id=item.customer_id, billing_account_id=item.billing_account_id, kind="bill_run.repaired",
                                          message=f"Nightly bill-run check: the cycle from {item.period.start:%Y-%m-%d} had no invoice; issued it",
                                          data={"periodStart": item.period.start.isoformat()}, at=report.as_of))
            session.add(BusinessEvent(kind="bill_run.checked", at=report.as_of,
                                      message=(f"Nightly bill-run check: {report.accounts_checked} accounts, {report.found} cycles without an invoice, "
                                               f"{report.repaired} repaired, {report.nothing_to_bill} with nothing to bill, "
                                               f"{len(report.failed)} failed"),
                                      data=report.model_dump(mode="json")))
