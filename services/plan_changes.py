"""Plan changes and promotions ordered through TMF622.

A `modify` order item names a product (`product.id`) and its new plan (`productOffering.id`). An upgrade
(higher monthly fee) takes effect at once, a downgrade at the end of the account's current cycle, unless
the catalog says otherwise (offering `plan_change`, else catalog `plan_change`; domain.charges
.change_effective_at). The change is stored as a `product_plan_span` row, so invoicing knows the product's
plan timeline (activities.invoice_charges); Product.offering_id shows the plan in effect now, and a
downgrade waiting for the cycle end is applied by `apply_due_plan_changes` when its time has come (the
next invoice run of the account does it). A modify needs no new number or OSS service order.

Promotions: an order item may carry catalog promotions as TMF622 itemPrice[].priceAlteration[]
.productOfferingPrice.id; each becomes a `product_discount` row for the product, from the cycle in which
the product starts billing (add) or the change takes effect (modify).
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlmodel import Session, col, select

from domain.billing_cycle import CycleSpec, period_containing
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from domain.charges import change_effective_at
from domain.orders import TERMINAL_STATES, FieldError, OrderItemRequest, OrderState, validate_order_items
from domain.products import ProductStatus
from persistence.tables import BillingAccount, Product, ProductDiscount, ProductOrder, ProductOrderItem, ProductPlanSpan

MODIFY = "modify"
CLOSED_STATUSES = frozenset({ProductStatus.TERMINATED, ProductStatus.CANCELLED, ProductStatus.ABORTED, ProductStatus.PENDING_TERMINATE})


# --- what the request says beyond the stored item columns --------------------------------------------


def item_extras(request: dict[str, Any] | None) -> dict[str, tuple[str | None, list[str]]]:
    """Per order item id, as sent: (product.id for a modify, promotion ids from itemPrice[].priceAlteration[])."""
    extras: dict[str, tuple[str | None, list[str]]] = {}
    for item in (request or {}).get("productOrderItem") or []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        product = item.get("product") if isinstance(item.get("product"), dict) else {}
        promotions = [
            ref["id"]
            for price in item.get("itemPrice") or [] if isinstance(price, dict)
            for alteration in price.get("priceAlteration") or [] if isinstance(alteration, dict)
            if isinstance(ref := alteration.get("productOfferingPrice"), dict) and isinstance(ref.get("id"), str) and ref["id"]
        ]
        extras[item["id"]] = (product.get("id") if isinstance(product.get("id"), str) else None, promotions)
    return extras


# --- validation ----------------------------------------------------------------------------------------


def validate_items(session: Session, items: list[OrderItemRequest], request: dict[str, Any] | None, customer_id: str | None,
                   catalog: Catalog, *, order_id: str | None = None) -> list[FieldError]:
    """domain.orders.validate_order_items, plus `modify` items (checked against the product they name) and
    promotions. The same checks run when the order is taken and again when its workflow starts (`order_id`
    given): then the products to change are locked until the transaction ends, and a product that another
    started order is changing is refused, so of two orders for one product only one gets past its validation."""
    extras = item_extras(request)
    # The catalog checks of an added item hold for the new plan of a modify too.
    as_added = [item.model_copy(update={"action": "add"}) if item.action == MODIFY else item for item in items]
    errors = validate_order_items(as_added, catalog)
    modified = [extras.get(i.item_id, (None, []))[0] for i in items if i.action == MODIFY]
    if order_id is not None:
        for product_id in sorted({p for p in modified if p}):  # always in one order: concurrent validations cannot deadlock
            _lock_product(session, product_id)
    pending = _pending_changes(session, modified)
    changing = _changing_orders(session, modified, order_id) if order_id is not None else {}
    for index, item in enumerate(items):
        where = f"productOrderItem[{index}]"
        product_id, promotions = extras.get(item.item_id, (None, []))
        for number, promotion_id in enumerate(promotions):
            if catalog.promotion(promotion_id) is None:
                errors.append(FieldError(field=f"{where}.itemPrice.priceAlteration[{number}].productOfferingPrice.id", code="unknown_promotion",
                                         message=f"no promotion {promotion_id!r} in the catalog"))
        if item.action == MODIFY:
            found = _modify_errors(session, where, item, product_id, customer_id, pending)
            if not found and product_id in changing:
                found = [FieldError(field=f"{where}.product.id", code="plan_change_in_progress",
                                    message=f"product {product_id} is being changed by productOrder {changing[product_id]}")]
            errors.extend(found)
    return errors


def _pending_changes(session: Session, product_ids: list[str | None]) -> set[str]:
    ids = [p for p in product_ids if p]
    if not ids:
        return set()
    rows = session.exec(select(ProductPlanSpan.product_id).where(col(ProductPlanSpan.product_id).in_(ids), ProductPlanSpan.applied.is_(False)))
    return set(rows)


def _changing_orders(session: Session, product_ids: list[str | None], order_id: str | None) -> dict[str, str]:
    """Product id -> another started, unfinished order with a modify item for it not carried out yet."""
    ids = [p for p in product_ids if p]
    if not ids:
        return {}
    idle = {str(state) for state in TERMINAL_STATES} | {str(OrderState.ACKNOWLEDGED)}
    rows = session.exec(select(ProductOrderItem.product_id, ProductOrderItem.order_id).join(ProductOrder, col(ProductOrder.id) == ProductOrderItem.order_id)
                        .where(col(ProductOrderItem.product_id).in_(ids), ProductOrderItem.action == MODIFY, ProductOrderItem.order_id != order_id,
                               ProductOrderItem.state != "completed", col(ProductOrder.state).not_in(sorted(idle)))
                        .order_by(col(ProductOrder.order_date)))
    changing: dict[str, str] = {}
    for product_id, other in rows:
        changing.setdefault(product_id, other)
    return changing


def _modify_errors(session: Session, where: str, item: OrderItemRequest, product_id: str | None, customer_id: str | None,
                   pending: set[str]) -> list[FieldError]:
    if not product_id:
        return [FieldError(field=f"{where}.product.id", code="required", message="a modify item names the product to change (product.id)")]
    product = session.get(Product, product_id)
    if product is None:
        return [FieldError(field=f"{where}.product.id", code="unknown_product", message=f"no product {product_id!r}")]
    if customer_id is not None and product.customer_id != customer_id:
        return [FieldError(field=f"{where}.product.id", code="product_of_another_customer", message="the product belongs to another customer")]
    if product.status in CLOSED_STATUSES:
        return [FieldError(field=f"{where}.product.id", code="product_terminated", message=f"product {product_id} is {product.status}")]
    if product.billing_start is None:
        return [FieldError(field=f"{where}.product.id", code="product_not_active", message=f"product {product_id} is not active yet")]
    if item.offering_id and item.offering_id == product.offering_id:
        return [FieldError(field=f"{where}.productOffering.id", code="same_plan", message=f"product {product_id} already has {item.offering_id!r}")]
    if product_id in pending:
        return [FieldError(field=f"{where}.product.id", code="plan_change_pending",
                           message=f"product {product_id} has a plan change waiting for the cycle end")]
    return []


# --- carrying out ------------------------------------------------------------------------------------


class PlanChangeRefused(Exception):
    """A modify item that passed validation can no longer be carried out (another order changed the product
    meanwhile); `code` is one of _modify_errors' codes, e.g. plan_change_pending."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@lru_cache
def _profiles() -> dict[str, BillingProfile]:
    from config.profiles import load_billing_profiles

    return load_billing_profiles()


def account_cycle(account: BillingAccount, profiles: dict[str, BillingProfile] | None = None) -> CycleSpec:
    profile = (profiles or _profiles())[account.billing_profile]
    return profile.cycle_spec(account.bill_cycle_day, account.timezone, account.cycle_anchor or account.created_at)


def schedule_plan_change(session: Session, catalog: Catalog, item: ProductOrderItem, product_id: str, now: datetime,
                         *, profiles: dict[str, BillingProfile] | None = None) -> ProductPlanSpan:
    """Records the change a modify item orders (once per item): its span with the time it takes effect,
    and, when that is now, the product's new plan."""
    span_id = f"{item.order_id}:{item.item_id}"
    existing = session.get(ProductPlanSpan, span_id)
    if existing is not None:
        return existing
    product = _lock_product(session, product_id)
    # Two orders for one product can both pass validation; under the product's lock only the first one's change
    # is recorded, the other is refused with the reason (a second span at the same cycle end could never be stored).
    request = OrderItemRequest(item_id=item.item_id, action=MODIFY, offering_id=item.offering_id)
    refused = _modify_errors(session, "product", request, product_id, None, _pending_changes(session, [product_id]))
    if refused:
        raise PlanChangeRefused(refused[0].code, refused[0].message)
    assert product is not None
    old, new = catalog.offering(product.offering_id), catalog.offering(item.offering_id)
    if old is None or new is None:
        raise ValueError(f"plan change of {product_id}: offering {product.offering_id!r} or {item.offering_id!r} is not in the catalog")
    account = session.get(BillingAccount, product.billing_account_id)
    period = period_containing(account_cycle(account, profiles), now)
    effective_at = change_effective_at(now, old.monthly_fee, new.monthly_fee, period, catalog.plan_change_policy(new))
    span = ProductPlanSpan(id=span_id, product_id=product.id, offering_id=new.id, offering_version=new.version, previous_offering_id=old.id,
                           effective_at=effective_at, requested_at=now, order_id=item.order_id, applied=False)
    session.add(span)
    session.flush()
    apply_due_plan_changes(session, catalog, [product.id], now)
    return span


def _lock_product(session: Session, product_id: str) -> Product | None:
    """The product row, locked until the transaction ends (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
    transactions begin IMMEDIATE, so writers are serialised already) and read afresh."""
    return session.get(Product, product_id, with_for_update=True, populate_existing=True)


def apply_due_plan_changes(session: Session, catalog: Catalog, product_ids: list[str], now: datetime) -> list[ProductPlanSpan]:
    """Moves each product to the latest of its plan changes whose time has come; returns those applied."""
    if not product_ids:
        return []
    due = list(session.exec(select(ProductPlanSpan).where(col(ProductPlanSpan.product_id).in_(product_ids), ProductPlanSpan.applied.is_(False),
                                                          ProductPlanSpan.effective_at <= now).order_by(col(ProductPlanSpan.effective_at))))
    for span in due:
        product = session.get(Product, span.product_id)
        offering = catalog.offering(span.offering_id)
        if product is not None:
            product.offering_id, product.offering_version = span.offering_id, span.offering_version
            product.name = offering.name if offering else product.name
            session.add(product)
        span.applied = True
        session.add(span)
    if due:
        session.flush()
    return due


def grant_promotions(session: Session, catalog: Catalog, product: Product, promotion_ids: list[str], first_cycle_at: datetime,
                     order_id: str | None) -> list[ProductDiscount]:
    """One product_discount per promotion (once per product and promotion)."""
    granted = []
    for promotion_id in dict.fromkeys(promotion_ids):
        promotion = catalog.promotion(promotion_id)
        if promotion is None:
            raise ValueError(f"promotion {promotion_id!r} is not in the catalog")
        row_id = f"{product.id}:{promotion.id}"
        row = session.get(ProductDiscount, row_id)
        if row is None:
            row = ProductDiscount(id=row_id, product_id=product.id, billing_account_id=product.billing_account_id, promotion_id=promotion.id,
                                  name=promotion.name, kind=promotion.kind, value=str(promotion.value), applies_to=promotion.applies_to,
                                  cycles=promotion.cycles, first_cycle_at=first_cycle_at, order_id=order_id)
            session.add(row)
        granted.append(row)
    return granted
