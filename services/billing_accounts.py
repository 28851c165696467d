"""TMF666 billing accounts."""
from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session, select
from temporalio.service import RPCError

from domain.billing_profile import BillingProfile
from domain.money import to_minor
from domain.spending import SpendingLimit
from persistence.tables import BillingAccount, BusinessEvent, Customer, OutboxMessage
from services.errors import Conflict, Invalid, NotFound, Unavailable, field_error
from services.query import Page, new_id, paginate, run_tx, utcnow
from services.workflows import LazyWorkflows, is_not_found
from workflows.messages import SIGNAL_ROAMING_DATA_CONTINUE, RoamingDataContinue, billing_account_workflow_id

log = logging.getLogger(__name__)

# An opt-out of the EU roaming data limit, for the account's workflow (it lifts a roaming data barring of the cycle).
ROAMING_OPT_OUT_TOPIC = "roaming_data.opt_out"
OPT_OUT_REASON = "opted out of the roaming data limit"


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
    account_id: str | None = None,
    roaming_data_cap_opt_out: bool = False,
) -> BillingAccount:
    customer, profile = check_new_account(session, customer_id=customer_id, billing_profile=billing_profile, profiles=profiles,
                                          customer_field=customer_field)
    now = utcnow()
    row = BillingAccount(
        id=account_id or new_id(),
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
        roaming_data_cap_opt_out=roaming_data_cap_opt_out,
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


def check_new_account(session: Session, *, customer_id: str, billing_profile: str, profiles: dict[str, BillingProfile],
                      customer_field: str = "relatedParty[0].id") -> tuple[Customer, BillingProfile]:
    """The customer and billing profile a new account refers to, or Invalid (before anything is created anywhere)."""
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
    return customer, profile


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


def set_roaming_data_cap_opt_out(session: Session, account_id: str, opt_out: bool) -> tuple[BillingAccount, bool]:
    """Opts the account out of the EU roaming data limit (or back in); the answer says whether it changed. It applies
    to roaming data rated from now on; an account that opts out while barred is lifted by its workflow, told through
    an outbox message written with the opt-out (adapters.temporal.outbox_relay delivers it, however long Temporal is away)."""
    row = get_billing_account(session, account_id)
    changed = row.roaming_data_cap_opt_out != opt_out
    if changed:
        now = utcnow()
        row.roaming_data_cap_opt_out = opt_out
        session.add(row)
        session.add(BusinessEvent(customer_id=row.customer_id, billing_account_id=row.id, kind="roaming_data_cap_changed",
                                  message="Opted out of the EU roaming data limit" if opt_out else "The EU roaming data limit applies again",
                                  data={"optOut": opt_out}, at=now))
        if opt_out:
            request = f"opt-out:{new_id()}"
            session.add(OutboxMessage(key=f"{ROAMING_OPT_OUT_TOPIC}:{row.id}:{request}", topic=ROAMING_OPT_OUT_TOPIC, created_at=now,
                                      payload={"billingAccountId": row.id, "requestId": request, "reason": OPT_OUT_REASON}))
    return row, changed


def roaming_opt_out_signal(payload: dict[str, Any]) -> tuple[str, RoamingDataContinue]:
    """(billing account id, signal) for a `roaming_data.opt_out` outbox message: the workflow lifts a roaming data
    barring of this cycle (as when the customer asks to continue); a repeat does nothing (it acts once a cycle)."""
    return payload["billingAccountId"], RoamingDataContinue(request_id=payload["requestId"], reason=payload["reason"])


def roaming_data_cap_view(row: BillingAccount) -> dict[str, bool]:
    return {"optOut": row.roaming_data_cap_opt_out}


def traffic_data_hold_view(row: BillingAccount) -> dict[str, str] | None:
    if row.traffic_data_hold_reason is None:
        return None
    return {"reason": row.traffic_data_hold_reason, "since": row.traffic_data_hold_since.isoformat() if row.traffic_data_hold_since else None}


def set_traffic_data_hold(session: Session, account_id: str, reason: str | None) -> BillingAccount:
    """Places (reason) or releases (None) the complaint hold that keeps the account's traffic data past retention
    (services.traffic_retention). Placing it again changes the reason and keeps its start."""
    row = get_billing_account(session, account_id)
    if row.traffic_data_hold_reason == reason:
        return row
    now = utcnow()
    if reason is None:
        message, kind = "Traffic data hold released: the data goes at the next retention run once past six months", "traffic_data_hold_released"
        row.traffic_data_hold_since = None
    else:
        message, kind = f"Traffic data kept past retention while a complaint is open: {reason}", "traffic_data_hold_placed"
        row.traffic_data_hold_since = row.traffic_data_hold_since or now
    row.traffic_data_hold_reason = reason
    session.add(row)
    session.add(BusinessEvent(customer_id=row.customer_id, billing_account_id=row.id, kind=kind, message=message,
                              data={"reason": reason}, at=now))
    return row


def _continuable(session: Session, account_id: str) -> BillingAccount:
    row = get_billing_account(session, account_id)
    if row.roaming_data_cap_opt_out:
        raise Conflict(f"billing account {account_id} opted out of the roaming data limit; roaming data is never cut off",
                       code="roaming_data_cap_opted_out")
    return row


async def continue_roaming_data(db_url: str, workflows: LazyWorkflows, account_id: str, *, request_id: str, reason: str) -> BillingAccount:
    """The customer asks to go on using roaming data this cycle past the roaming data limit: the account's workflow
    lifts the roaming data barring (if the limit cut it off) and does not cut it off again until the cycle ends.
    Repeating it is harmless (the workflow acts once a cycle). Recorded as a business event once the workflow is told."""
    await run_tx(db_url, _continuable, account_id)
    signal = RoamingDataContinue(request_id=request_id, reason=reason)
    try:
        await workflows.call(lambda gateway: gateway.client.get_workflow_handle(billing_account_workflow_id(account_id))
                             .signal(SIGNAL_ROAMING_DATA_CONTINUE, signal))
    except RPCError as exc:
        if is_not_found(exc):
            raise Conflict(f"billing account {account_id} is not being billed (no live products): there is no roaming data to continue",
                           code="billing_not_started") from exc
        raise

    def record(session: Session) -> BillingAccount:
        row = get_billing_account(session, account_id)
        session.add(BusinessEvent(customer_id=row.customer_id, billing_account_id=row.id, kind="roaming_data_cap.continue_requested",
                                  message=f"The customer asked to continue roaming data this cycle past the roaming data limit: {reason}",
                                  data={"requestId": request_id, "reason": reason}, at=utcnow()))
        return row

    return await run_tx(db_url, record)


async def lift_roaming_data_after_opt_out(workflows: LazyWorkflows, account_id: str, request_id: str) -> None:
    """Prompt, best effort: tells the account's workflow at once that the customer opted out, so a roaming data barring
    of this cycle is lifted without waiting for the relay. The outbox message set_roaming_data_cap_opt_out wrote is what
    guarantees it (a second signal does nothing). Without a workflow nothing is barred."""
    signal = RoamingDataContinue(request_id=request_id, reason=OPT_OUT_REASON)
    try:
        await workflows.call(lambda gateway: gateway.client.get_workflow_handle(billing_account_workflow_id(account_id))
                             .signal(SIGNAL_ROAMING_DATA_CONTINUE, signal))
    except Unavailable as exc:
        log.warning("billing account %s opted out of the roaming data limit; its workflow was not told (%s)", account_id, exc.message)
    except RPCError as exc:
        if not is_not_found(exc):
            log.warning("billing account %s opted out of the roaming data limit; signalling its workflow failed: %s", account_id, exc)


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
