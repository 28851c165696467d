"""What the console shows, read in one transaction per page (plus Temporal, with short time-outs and a
note instead of an error when it cannot be reached)."""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from api.console import charts
from domain.billing_cycle import period_containing
from domain.catalog import Catalog
from persistence.tables import (
    AllowanceCounter,
    AuditLog,
    BillingAccount,
    BusinessEvent,
    Customer,
    Invoice,
    ManualSuspension,
    Payment,
    Product,
    ProductDiscount,
    ProductOrder,
    ProductPlanSpan,
    ProductStatusChange,
    Refund,
    SavedPaymentMethod,
    UsageRecord,
)
from services import audit, orders, payment_methods, plan_changes, refunds, service_state
from services.query import utcnow
from services.workflows import LazyWorkflows

log = logging.getLogger(__name__)

TEMPORAL_TIMEOUT_S = 3.0
MAX_WORKFLOWS = 12
MAX_HISTORY_EVENTS = 400

try:  # dunning episodes (migration 0008) and their workflow's status query, where that work is present
    from persistence.tables import DunningAction, DunningEpisode  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - degrade: no dunning section
    DunningAction = DunningEpisode = None  # type: ignore[assignment,misc]


# --- search ---------------------------------------------------------------------------------------


@dataclass
class SearchHit:
    customer: Customer
    why: str


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def search(session: Session, query: str, limit: int = 50) -> list[SearchHit]:
    """Customers by name (part, any case), customer id, MSISDN, invoice number or order id."""
    q = query.strip()
    if not q:
        return []
    hits: dict[str, SearchHit] = {}

    def add(customer: Customer | None, why: str) -> None:
        if customer is not None and customer.id not in hits:
            hits[customer.id] = SearchHit(customer, why)

    add(session.get(Customer, q), "customer number")
    order = session.get(ProductOrder, q)
    if order is None:
        order = session.exec(select(ProductOrder).where(ProductOrder.external_id == q)).first()
    if order is not None:
        add(session.get(Customer, order.customer_id), f"order {order.id}")
    invoice = session.exec(select(Invoice).where(Invoice.number == q.upper()).options(defer(Invoice.pdf))).first()
    if invoice is not None:
        add(session.get(Customer, invoice.customer_id), f"invoice {invoice.number}")
    digits = _digits(q)
    if len(digits) >= 6 and len(digits) >= len(q.replace(" ", "").replace("+", "")) - 1:
        if digits.startswith("00"):
            digits = digits[2:]
        for product in session.exec(select(Product).where(or_(Product.msisdn == digits, Product.msisdn == "49" + digits.lstrip("0"))).limit(limit)):
            add(session.get(Customer, product.customer_id), f"MSISDN {product.msisdn} ({product.status})")
    pattern = f"%{q.lower().replace('%', '').replace('_', '')}%"
    for customer in session.exec(select(Customer).where(func.lower(Customer.name).like(pattern)).order_by(Customer.name).limit(limit)):
        add(customer, "name")
    return list(hits.values())[:limit]


# --- the customer page ----------------------------------------------------------------------------


@dataclass
class AllowanceUse:
    product: Product
    name: str
    used: float
    included: float
    unit: str

    @property
    def percent(self) -> int:
        if self.included <= 0:
            return 0
        return min(100, round(100 * self.used / self.included))


@dataclass
class UsageDay:
    day: date
    cost_micros: int
    records: int


@dataclass
class AccountView:
    account: BillingAccount
    products: list[Product]
    invoices: list[tuple[Invoice, bool]]
    payments: list[Payment]
    cycle_start: datetime | None
    cycle_end: datetime | None
    cycle_source: str
    usage_days: list[UsageDay]
    usage_cost_micros: int
    allowances: list[AllowanceUse]
    balance_points: list[charts.BalancePoint]
    refunds: list[Refund] = field(default_factory=list)
    refundable: dict[str, int] = field(default_factory=dict)  # payment id -> cents that may still be refunded
    saved_method: SavedPaymentMethod | None = None
    episodes: list[Any] = field(default_factory=list)
    dunning_actions: list[Any] = field(default_factory=list)
    dunning_live: dict[str, Any] | None = None
    dunning_note: str | None = None
    usage_svg: str = ""
    balance_svg: str = ""

    @property
    def spending_percent(self) -> int | None:
        if self.account.spending_limit_cents in (None, 0):
            return None
        return min(999, round(self.usage_cost_micros / 10_000 * 100 / self.account.spending_limit_cents))

    @property
    def open_cents(self) -> int:
        return self.balance_points[-1].balance_cents if self.balance_points else 0

    @property
    def mandate_revoked(self) -> bool:
        return self.saved_method is not None and self.saved_method.status == payment_methods.REVOKED


@dataclass
class PlanChange:
    span: ProductPlanSpan
    name: str  # the plan it changes to
    direction: str  # downgrade | upgrade | change


@dataclass
class Promotion:
    discount: ProductDiscount
    cycles_left: int | None  # None: no end; counts the current cycle
    started: bool  # its first cycle has begun


@dataclass
class ProductDetail:
    """What a product's row needs beyond the product: its plan, plan change waiting for the cycle end,
    promotions, and why it is suspended (status history, a staff suspension and the bar under it)."""

    product: Product
    plan: str
    pending: PlanChange | None = None
    promotions: list[Promotion] = field(default_factory=list)
    history: list[ProductStatusChange] = field(default_factory=list)
    hold: ManualSuspension | None = None

    @property
    def latest_change(self) -> ProductStatusChange | None:
        return self.history[-1] if self.history else None


@dataclass
class CustomerView:
    customer: Customer
    accounts: list[AccountView]
    orders: list[orders.OrderView]
    events: list[BusinessEvent]
    audit_entries: list[AuditLog]
    products: list[Product]
    manually_suspended: set[str] = field(default_factory=set)  # product ids a staff suspension holds
    details: dict[str, ProductDetail] = field(default_factory=dict)  # by product id


def load_customer(session: Session, customer_id: str, catalog: Catalog, cycles: dict[str, tuple[datetime, datetime]]) -> CustomerView | None:
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    accounts = list(session.exec(select(BillingAccount).where(BillingAccount.customer_id == customer_id).order_by(BillingAccount.created_at)))
    products = list(session.exec(select(Product).where(Product.customer_id == customer_id).order_by(col(Product.start_date).desc())))
    order_page = orders.list_orders(session, state=None, customer_id=customer_id, limit=50, offset=0)
    events = list(session.exec(select(BusinessEvent).where(BusinessEvent.customer_id == customer_id)
                               .order_by(col(BusinessEvent.at).desc(), col(BusinessEvent.id).desc()).limit(200)))
    entries = audit.customer_entries(session, customer_id, limit=100, offset=0).items
    views = [_account_view(session, account, [p for p in products if p.billing_account_id == account.id], catalog, cycles.get(account.id))
             for account in accounts]
    accounts_by_id = {a.id: a for a in accounts}
    details = {p.id: product_detail(session, p, catalog, accounts_by_id.get(p.billing_account_id)) for p in products}
    held = {pid for pid, d in details.items() if d.hold is not None}
    return CustomerView(customer=customer, accounts=views, orders=order_page.items, events=events, audit_entries=entries, products=products,
                        manually_suspended=held, details=details)


def product_detail(session: Session, product: Product, catalog: Catalog, account: BillingAccount | None,
                   now: datetime | None = None) -> ProductDetail:
    now = now or utcnow()
    offering = catalog.offering(product.offering_id)
    detail = ProductDetail(product=product, plan=offering.name if offering else product.name,
                           history=service_state.history(session, product.id), hold=service_state.manual_suspension(session, product.id))
    span = session.exec(select(ProductPlanSpan).where(ProductPlanSpan.product_id == product.id, ProductPlanSpan.applied.is_(False),
                                                      col(ProductPlanSpan.effective_at) > now)
                        .order_by(col(ProductPlanSpan.effective_at).desc())).first()
    if span is not None:
        new = catalog.offering(span.offering_id)
        direction = "change"
        if offering is not None and new is not None and new.monthly_fee != offering.monthly_fee:
            direction = "downgrade" if new.monthly_fee < offering.monthly_fee else "upgrade"
        detail.pending = PlanChange(span, new.name if new else span.offering_id, direction)
    try:
        spec = plan_changes.account_cycle(account) if account is not None else None
    except (KeyError, ValueError):  # an account on a billing profile this build does not know
        spec = None
    if spec is not None:
        current = period_containing(spec, now)
        for discount in session.exec(select(ProductDiscount).where(ProductDiscount.product_id == product.id).order_by(col(ProductDiscount.first_cycle_at))):
            left = promotion_cycles_left(spec, discount, current)
            if left is None or left > 0:
                detail.promotions.append(Promotion(discount, left, discount.first_cycle_at < current.end))
    return detail


def promotion_cycles_left(spec, discount: ProductDiscount, current) -> int | None:
    """Cycles of the promotion still to bill, the current one included (domain.charges counts its window the
    same way: `cycles` cycles from the one containing first_cycle_at). None: the promotion has no end."""
    if discount.cycles is None:
        return None
    first = period_containing(spec, discount.first_cycle_at)
    if spec.kind == "monthly":
        index = (current.local_start.year * 12 + current.local_start.month) - (first.local_start.year * 12 + first.local_start.month)
    else:
        index = (current.start - first.start) // timedelta(seconds=spec.period_seconds)
    return discount.cycles - max(index, 0)


def _account_view(session: Session, account: BillingAccount, products: list[Product], catalog: Catalog,
                  cycle: tuple[datetime, datetime] | None) -> AccountView:
    invoices = list(session.exec(
        select(Invoice, col(Invoice.pdf).is_not(None).label("has_pdf")).options(defer(Invoice.pdf))
        .where(Invoice.billing_account_id == account.id).order_by(col(Invoice.issued_at).desc()).limit(60)))
    payments = list(session.exec(select(Payment).where(Payment.billing_account_id == account.id).order_by(col(Payment.created_at).desc()).limit(60)))

    # This cycle: the workflow's, when it answered; else the latest period usage was rated into.
    if cycle is not None:
        start, end, source = cycle[0], cycle[1], "billing workflow"
        usage_filter = [col(UsageRecord.event_time) >= start, col(UsageRecord.event_time) < end]
    else:
        start = session.exec(select(func.max(UsageRecord.period_start)).where(UsageRecord.billing_account_id == account.id)).one()
        end, source = None, "latest rated usage"
        usage_filter = [UsageRecord.period_start == start] if start is not None else []
    days: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    total = 0
    if start is not None:
        rows = session.exec(select(UsageRecord.event_time, UsageRecord.amount_micros)
                            .where(UsageRecord.billing_account_id == account.id, *usage_filter).limit(200_000))
        for event_time, amount in rows:
            bucket = days[event_time.astimezone(timezone.utc).date()]
            bucket[0] += amount
            bucket[1] += 1
            total += amount
    usage_days = _fill_days(days, start, end)

    allowances: list[AllowanceUse] = []
    for product in products:
        offering = catalog.offering(product.offering_id)
        counter = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product.id)
                               .order_by(col(AllowanceCounter.period_start).desc())).first()
        if offering is None or product.status not in ("active", "suspended"):
            continue
        a = offering.allowances
        voice_min = (counter.voice_s / 60) if counter else 0.0
        allowances += [
            AllowanceUse(product, "Voice", round(voice_min, 1), float(a.voice_minutes), "min"),
            AllowanceUse(product, "SMS", float(counter.sms if counter else 0), float(a.sms), "SMS"),
            AllowanceUse(product, "Data", round((counter.data_bytes / 1_000_000) if counter else 0.0, 1), float(a.data_mb), "MB"),
        ]

    refund_rows = list(session.exec(select(Refund).where(Refund.billing_account_id == account.id).order_by(col(Refund.created_at).desc()).limit(60)))
    view = AccountView(account=account, products=products, invoices=invoices, payments=payments, cycle_start=start, cycle_end=end,
                       cycle_source=source, usage_days=usage_days, usage_cost_micros=total, allowances=allowances,
                       balance_points=_balance_points(invoices, payments, refund_rows), refunds=refund_rows,
                       refundable={p.id: refunds.refundable_cents(session, p) for p in payments if p.status == "succeeded"},
                       saved_method=payment_methods.current(session, account.id))
    if DunningEpisode is not None:
        view.episodes = list(session.exec(select(DunningEpisode).where(DunningEpisode.billing_account_id == account.id)
                                          .order_by(col(DunningEpisode.started_at).desc()).limit(10)))
        if view.episodes:
            view.dunning_actions = list(session.exec(select(DunningAction).where(DunningAction.episode_id == view.episodes[0].id)
                                                     .order_by(col(DunningAction.at).desc()).limit(50)))
    view.usage_svg = charts.bar_chart([charts.Bar(charts.day_label(d.day), d.cost_micros / 1_000_000,
                                                  f"{d.day:%Y-%m-%d}: {d.cost_micros / 1_000_000:.2f} EUR, {d.records} records") for d in usage_days],
                                      title=f"Usage cost per day this cycle, account {account.name}", unit="EUR",
                                      chart_id=f"usage-{account.id}")
    view.balance_svg = charts.balance_chart(view.balance_points, title=f"Open balance and payments, account {account.name}",
                                            chart_id=f"balance-{account.id}")
    return view


def _fill_days(days: dict[date, list[int]], start: datetime | None, end: datetime | None) -> list[UsageDay]:
    if start is None:
        return []
    first = start.astimezone(timezone.utc).date()
    last = max([first, *days.keys()])
    if end is not None:
        last = max(last, min((end - timedelta(microseconds=1)).astimezone(timezone.utc).date(), first + timedelta(days=40)))
    out = []
    day = first
    while day <= last and len(out) < 62:
        cost, count = days.get(day, [0, 0])
        out.append(UsageDay(day, cost, count))
        day += timedelta(days=1)
    return out


def _balance_points(invoices: list[tuple[Invoice, bool]], payments: list[Payment], refund_rows: list[Refund] = ()) -> list[charts.BalancePoint]:
    moves: list[tuple[datetime, int, str, str]] = []
    for invoice, _pdf in invoices:
        if invoice.number is None:
            continue  # an onHold draft is not owed yet
        if invoice.kind == "credit_note":
            moves.append((invoice.issued_at, invoice.gross_cents, "credit", f"credit note {invoice.number}"))
        else:
            moves.append((invoice.issued_at, invoice.gross_cents, "invoice", f"invoice {invoice.number}"))
    for payment in payments:
        if payment.status == "succeeded":
            moves.append((payment.created_at, -payment.amount_cents, "payment", f"payment ({payment.method})"))
    for row in refund_rows:
        # Money a refund or chargeback currently takes back from a payment is owed again (or no longer credit);
        # a failed refund and a dispute o2c won put it back (reversed false): no move.
        if row.reversed:
            what = "chargeback" if row.kind == "chargeback" else "refund"
            moves.append((row.created_at, row.amount_cents, what, f"{what} of payment {row.payment_id}"))
    moves.sort(key=lambda m: m[0])
    balance = 0
    points = []
    for at, delta, kind, label in moves:
        balance += delta
        points.append(charts.BalancePoint(at=at, balance_cents=balance, kind=kind, label=f"{label}: {delta / 100:+.2f} EUR", amount_cents=delta))
    return points


# --- Temporal: cycles, dunning status, workflow histories ---------------------------------------------


async def account_cycles(workflows: LazyWorkflows, account_ids: list[str]) -> tuple[dict[str, tuple[datetime, datetime]], str | None]:
    """Each account's current cycle from its BillingAccountWorkflow (query current_cycle)."""
    from workflows.messages import QUERY_CURRENT_CYCLE, CycleView, billing_account_workflow_id

    found: dict[str, tuple[datetime, datetime]] = {}
    try:
        gateway = await asyncio.wait_for(workflows.get(), TEMPORAL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - Temporal down: the page says so
        return found, f"Temporal not reachable ({exc})"

    async def one(account_id: str) -> None:
        try:
            cycle = await gateway.client.get_workflow_handle(billing_account_workflow_id(account_id)).query(
                QUERY_CURRENT_CYCLE, result_type=CycleView, rpc_timeout=timedelta(seconds=TEMPORAL_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - no running workflow (no active product yet) or no worker
            return
        if cycle is not None:
            found[account_id] = (cycle.start, cycle.end)

    await asyncio.gather(*(one(a) for a in account_ids))
    return found, None


async def dunning_live(workflows: LazyWorkflows, view: AccountView) -> None:
    """The active episode's live status (DunningWorkflow query), else the billing-account workflow's dunning_state."""
    try:
        gateway = await asyncio.wait_for(workflows.get(), TEMPORAL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        view.dunning_note = f"live dunning state not available: Temporal not reachable ({exc})"
        return
    active = next((e for e in view.episodes if getattr(e, "state", None) == "active"), None)
    if active is not None:
        try:
            from domain.dunning_timeline import QUERY_DUNNING_STATUS, DunningStatus

            status = await gateway.client.get_workflow_handle(active.id).query(
                QUERY_DUNNING_STATUS, result_type=DunningStatus, rpc_timeout=timedelta(seconds=TEMPORAL_TIMEOUT_S))
            if status is not None:
                view.dunning_live = {"source": "dunning workflow", **status.model_dump(mode="json")}
                return
        except Exception as exc:  # noqa: BLE001 - the episode's workflow may have no worker right now
            view.dunning_note = f"the dunning workflow did not answer ({type(exc).__name__})"
    try:
        from workflows.messages import QUERY_DUNNING_STATE, DunningView, billing_account_workflow_id

        state = await gateway.client.get_workflow_handle(billing_account_workflow_id(view.account.id)).query(
            QUERY_DUNNING_STATE, result_type=DunningView, rpc_timeout=timedelta(seconds=TEMPORAL_TIMEOUT_S))
        view.dunning_live = {"source": "billing-account workflow", **state.model_dump(mode="json")}
    except Exception as exc:  # noqa: BLE001
        if view.dunning_note is None:
            view.dunning_note = f"no live dunning state ({type(exc).__name__}: the account's workflow is not running or not answering)"


@dataclass
class TimelineEntry:
    at: datetime
    source: str  # "event" | "workflow"
    text: str
    detail: str | None = None
    workflow_id: str | None = None
    link: str | None = None
    tone: str = "info"  # info | warn | bad | good


_FRIENDLY = {
    "submit_service_order": "Service order sent to the OSS",
    "get_service_order_state": "Asked the OSS for the service order state",
    "cancel_service_order": "Service order cancelled at the OSS",
    "reserve_msisdn": "MSISDN reserved",
    "release_msisdn": "MSISDN released",
    "create_product": "Product created in inventory",
    "start_billing": "Billing started",
    "finish_order": "Order finished",
    "issue_cycle_invoice": "Cycle invoice issued",
    "issue_on_demand_invoice": "Bill on demand issued",
    "send_invoice": "Invoice e-mailed",
    "charge_invoice": "Payment collection attempted",
    "apply_payments": "Payments allocated",
    "send_dunning_notice": "Dunning notice sent",
    "send_notice": "Dunning notice sent",
    "set_service_barring": "Service barring changed at the OSS",
    "set_barring": "Service barring changed at the OSS",
    "retry_payment": "Payment retried",
    "add_late_fee": "Late fee added",
    "waive_fees": "Fees waived",
    "send_spending_notice": "Spending notice sent",
    "oss_update": "OSS callback received",
    "cancel_order": "Cancellation requested",
    "product_activated": "Product activated",
    "payment_received": "Payment received",
    "spending_threshold_crossed": "Spending threshold crossed",
    "invoice_approved": "Held invoice approved",
    "credit_note_issued": "Credit note issued",
    "bill_on_demand": "Bill on demand requested",
}


def _friendly(name: str) -> str:
    return _FRIENDLY.get(name, name.replace("_", " ").capitalize())


def workflow_link(ui_base: str, namespace: str, workflow_id: str) -> str:
    from urllib.parse import quote

    return f"{ui_base.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"


async def workflow_timeline(workflows: LazyWorkflows, customer_id: str, ui_base: str, namespace: str) -> tuple[list[TimelineEntry], str | None]:
    """The customer's workflows (search attribute CustomerId) and what their histories say, newest first."""
    try:
        return await asyncio.wait_for(_workflow_timeline(workflows, customer_id, ui_base, namespace), TEMPORAL_TIMEOUT_S * 2)
    except Exception as exc:  # noqa: BLE001 - the page shows the business events alone, with a note
        log.info("workflow timeline for %s not available: %s", customer_id, exc)
        return [], f"Workflow histories are not shown: Temporal did not answer ({type(exc).__name__})."


async def _workflow_timeline(workflows: LazyWorkflows, customer_id: str, ui_base: str, namespace: str) -> tuple[list[TimelineEntry], str | None]:
    from temporalio.api.enums.v1 import EventType

    gateway = await workflows.get()
    client = gateway.client
    escaped = customer_id.replace("\\", "\\\\").replace('"', '\\"')
    executions = []
    async for execution in client.list_workflows(f'CustomerId="{escaped}"', limit=MAX_WORKFLOWS):
        executions.append(execution)
    entries: list[TimelineEntry] = []

    async def one(execution) -> list[TimelineEntry]:
        link = workflow_link(ui_base, namespace, execution.id)
        out: list[TimelineEntry] = []
        scheduled: dict[int, str] = {}
        count = 0
        async for event in client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history_events():
            count += 1
            if count > MAX_HISTORY_EVENTS:
                break
            at = event.event_time.ToDatetime().replace(tzinfo=timezone.utc)
            kind = event.event_type
            entry = None
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                entry = TimelineEntry(at, "workflow", f"{execution.workflow_type} started", None, execution.id, link)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
                entry = TimelineEntry(at, "workflow", _friendly(name), f"activity {name}", execution.id, link)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                attrs = event.activity_task_failed_event_attributes
                name = scheduled.get(attrs.scheduled_event_id, "activity")
                entry = TimelineEntry(at, "workflow", f"{_friendly(name)} failed", attrs.failure.message[:300], execution.id, link, "bad")
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                name = scheduled.get(event.activity_task_timed_out_event_attributes.scheduled_event_id, "activity")
                entry = TimelineEntry(at, "workflow", f"{_friendly(name)} timed out", None, execution.id, link, "bad")
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                name = event.workflow_execution_signaled_event_attributes.signal_name
                entry = TimelineEntry(at, "workflow", _friendly(name), f"signal {name}", execution.id, link)
            elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
                seconds = event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
                waiting = "Waiting for the OSS" if execution.workflow_type == "OrderWorkflow" else "Waiting"
                entry = TimelineEntry(at, "workflow", f"{waiting} (timer {_duration(seconds)})", None, execution.id, link)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                entry = TimelineEntry(at, "workflow", f"{execution.workflow_type} completed", None, execution.id, link, "good")
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                message = event.workflow_execution_failed_event_attributes.failure.message[:300]
                entry = TimelineEntry(at, "workflow", f"{execution.workflow_type} failed", message, execution.id, link, "bad")
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                entry = TimelineEntry(at, "workflow", f"{execution.workflow_type} continued as new (next cycle)", None, execution.id, link)
            elif kind in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
                          EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT):
                entry = TimelineEntry(at, "workflow", f"{execution.workflow_type} {EventType.Name(kind).rsplit('_', 1)[-1].lower()}", None,
                                      execution.id, link, "bad")
            if entry is not None:
                out.append(entry)
        return out

    for found in await asyncio.gather(*(one(e) for e in executions), return_exceptions=True):
        if isinstance(found, BaseException):
            continue
        entries.extend(found)
    note = None if executions else "No workflows found for this customer (search attribute CustomerId)."
    return entries, note


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


_TONES = {"chargeback.won": "good", "chargeback": "bad", "revoked": "bad", "refund": "warn", "payment_failed": "bad", "dunning": "warn", "barr": "bad", "restored": "good", "activated": "good", "payment_recorded": "good",
          "credited": "good", "failed": "bad", "cancel": "warn"}


def merged_timeline(events: list[BusinessEvent], workflow_entries: list[TimelineEntry]) -> list[TimelineEntry]:
    out = list(workflow_entries)
    for event in events:
        tone = next((t for key, t in _TONES.items() if key in event.kind or key in event.message.lower()), "info")
        out.append(TimelineEntry(event.at, "event", event.message, event.kind, None, None, tone))
    out.sort(key=lambda e: e.at, reverse=True)
    return out[:300]
