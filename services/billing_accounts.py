"""TMF666 billing accounts."""
from __future__ import annotations

from sqlmodel import Session, select

from domain.billing_profile import BillingProfile
from domain.money import to_minor
from domain.spending import SpendingLimit
from persistence.tables import BillingAccount, BusinessEvent, Customer
from services.errors import Invalid, NotFound, field_error
from services.query import Page, new_id, paginate, utcnow


def create_billing_account(
    session: Session,
    *,
    name: str,
    customer_id: str,
    bill_cycle_day: int,
    timezone: str,
    billing_profile: str,
    payment_method: str | None,
    profiles: dict[str, BillingProfile],
    customer_field: str = "relatedParty[0].id",
    spending_limit: SpendingLimit | None = None,
    leitweg_id: str | None = None,
    itemised_bill: bool = False,
    itemised_mask_last3: bool = False,
) -> BillingAccount:
    errors = []
    customer = session.get(Customer, customer_id)
    if customer is None:
        errors.append(field_error(customer_field, "unknown_customer", f"no customer {customer_id!r}"))
    profile = profiles.get(billing_profile)
    if profile is None:
        errors.append(field_error("billingProfile", "unknown_billing_profile", f"no billing profile {billing_profile!r}; known: {sorted(profiles)}"))
    if errors:
        raise Invalid(errors)
    assert customer is not None and profile is not None
    now = utcnow()
    row = BillingAccount(
        id=new_id(),
        customer_id=customer_id,
        name=name,
        timezone=timezone,
        bill_cycle_day=bill_cycle_day,
        billing_profile=billing_profile,
        payment_method=payment_method,
        # Bills go to the customer's e-mail address unless the account is changed later.
        email=customer.email,
        # Fixed-length (demo) cycles count from the account's creation; monthly ones use the BCD.
        cycle_anchor=now if profile.cycle_kind == "fixed" else None,
        created_at=now,
        spending_limit_cents=None if spending_limit is None else to_minor(spending_limit.amount),
        spending_hard_cap=spending_limit.hard_cap if spending_limit is not None else False,
        leitweg_id=leitweg_id,
        itemised_bill=itemised_bill,
        itemised_mask_last3=itemised_mask_last3,
    )
    session.add(row)
    session.add(
        BusinessEvent(
            customer_id=customer_id,
            billing_account_id=row.id,
            kind="billing_account_created",
            message=f"Billing account {name} created ({billing_profile}, cycle day {bill_cycle_day}, {timezone})",
            at=now,
        )
    )
    return row


def set_spending_limit(session: Session, account_id: str, limit: SpendingLimit | None) -> BillingAccount:
    """Sets or removes the limit. It applies to usage rated from now on; thresholds already reported
    in the running cycle are not reported again for the same limit."""
    row = get_billing_account(session, account_id)
    before = _limit_text(row)
    row.spending_limit_cents = None if limit is None else to_minor(limit.amount)
    row.spending_hard_cap = limit.hard_cap if limit is not None else False
    after = _limit_text(row)
    if before != after:
        session.add(row)
        session.add(BusinessEvent(customer_id=row.customer_id, billing_account_id=row.id, kind="spending_limit_changed",
                                  message=f"Spending limit changed from {before} to {after}", data={"before": before, "after": after}, at=utcnow()))
    return row


DOCUMENT_OPTIONS = ("leitweg_id", "itemised_bill", "itemised_mask_last3")


def set_document_options(session: Session, account_id: str, changes: dict[str, object]) -> BillingAccount:
    """Sets the Leitweg-ID (XRechnung) and the itemised-bill (EVN) options; they apply to documents issued
    from now on (issued documents never change). Each change is a business event."""
    row = get_billing_account(session, account_id)
    before = {name: getattr(row, name) for name in DOCUMENT_OPTIONS}
    for name, value in changes.items():
        if name not in DOCUMENT_OPTIONS:
            raise ValueError(f"unknown document option {name!r}")
        setattr(row, name, value)
    after = {name: getattr(row, name) for name in DOCUMENT_OPTIONS}
    if before != after:
        session.add(row)
        changed = ", ".join(f"{name} {before[name]!r} -> {after[name]!r}" for name in DOCUMENT_OPTIONS if before[name] != after[name])
        session.add(BusinessEvent(customer_id=row.customer_id, billing_account_id=row.id, kind="document_options_changed",
                                  message=f"Invoice document options changed: {changed}", data={"before": before, "after": after}, at=utcnow()))
    return row


def _limit_text(row: BillingAccount) -> str:
    if row.spending_limit_cents is None:
        return "none"
    return f"{row.spending_limit_cents // 100}.{row.spending_limit_cents % 100:02d} EUR" + (" (hard cap)" if row.spending_hard_cap else "")


def get_billing_account(session: Session, account_id: str) -> BillingAccount:
    row = session.get(BillingAccount, account_id)
    if row is None:
        raise NotFound("billingAccount", account_id)
    return row


def list_billing_accounts(session: Session, *, customer_id: str | None, limit: int, offset: int) -> Page[BillingAccount]:
    statement = select(BillingAccount).order_by(BillingAccount.created_at, BillingAccount.id)
    if customer_id is not None:
        statement = statement.where(BillingAccount.customer_id == customer_id)
    return paginate(session, statement, limit, offset)


def account_events(session: Session, account_id: str, *, kind: str | None, limit: int, offset: int) -> Page[BusinessEvent]:
    """The account's story for support staff, oldest first."""
    get_billing_account(session, account_id)
    statement = select(BusinessEvent).where(BusinessEvent.billing_account_id == account_id).order_by(BusinessEvent.at, BusinessEvent.id)
    if kind is not None:
        statement = statement.where(BusinessEvent.kind == kind)
    return paginate(session, statement, limit, offset)
