"""Service state in the database: the product status history, staff (manual) suspensions in force, and
the checks a suspend / restore request must pass. The rules are in domain.service_state and
docs/service-state.md; the OSS calls are made by activities.service_state."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from domain.orders import FieldError
from domain.service_state import LIVE_STATUSES, Barring, BarPurpose, expected_barring, is_manual_reason, purpose_of, underlying_after
from persistence.tables import ManualSuspension, Product, ProductStatusChange
from services.errors import Conflict, Invalid, NotFound
from services.query import utcnow

# What a request may do to a product, after checking: start the change, or nothing (already so).
START, ALREADY = "start", "already"


def record_status_change(session: Session, product: Product, from_status: str | None, *, reason: str | None, source: str,
                         actor: str = "system", at: datetime | None = None) -> ProductStatusChange:
    """Appends one history row for the product's current status (call it after changing the row)."""
    row = ProductStatusChange(product_id=product.id, from_status=from_status, to_status=product.status, reason=reason,
                              source=source, actor=actor, at=at or utcnow())
    session.add(row)
    return row


def history(session: Session, product_id: str) -> list[ProductStatusChange]:
    return list(session.exec(select(ProductStatusChange).where(ProductStatusChange.product_id == product_id)
                             .order_by(col(ProductStatusChange.at), col(ProductStatusChange.id))))


def manual_suspension(session: Session, product_id: str) -> ManualSuspension | None:
    return session.get(ManualSuspension, product_id)


def split_manual_holds(session: Session, products: Iterable[Product]) -> tuple[list[Product], list[Product]]:
    """(products dunning / a spending cap may bar or lift, products a staff suspension holds)."""
    free: list[Product] = []
    held: list[Product] = []
    for product in products:
        (held if session.get(ManualSuspension, product.id) is not None else free).append(product)
    return free, held


class HoldReleased(RuntimeError):
    """A line a staff suspension held when the barring started was restored meanwhile: the barring must run
    again (a retried activity: the same OSS externalIds) so the line, now free, gets the bar."""


def note_underlying(session: Session, held: Iterable[Product], barring: str, reason: str | None, *,
                    purpose: BarPurpose | None = None) -> None:
    """Dunning (purpose "arrears") or a spending cap ("spending"; by default the purpose its reason names)
    changed its bar on lines a staff suspension holds: the OSS and the product stay as staff left them; the bar
    is remembered and re-applied when staff restore the line. Each party changes only its own bar
    (domain.service_state.underlying_after). Raises HoldReleased when a hold went away meanwhile (restored)."""
    purpose = purpose or purpose_of(reason)
    released: list[str] = []
    for product in held:
        hold = session.get(ManualSuspension, product.id, with_for_update=True)
        if hold is None:
            released.append(product.id)
            continue
        new_barring, new_reason = underlying_after((hold.underlying_barring, hold.underlying_reason), barring,
                                                   None if barring == "none" else reason, purpose)
        if (new_barring, new_reason) != (hold.underlying_barring, hold.underlying_reason):
            hold.underlying_barring, hold.underlying_reason = new_barring, new_reason
            session.add(hold)
    if released:
        raise HoldReleased(f"staff restored {', '.join(released)} while it was being barred; barring again")


def hold_pending(product: Product, hold: ManualSuspension | None) -> bool:
    """A hold written by a suspension whose OSS order is still under way: the line counts as held (dunning and the
    cap leave it alone), the product does not show the suspension yet."""
    return hold is not None and not is_manual_reason(product.status_reason)


def place_hold(session: Session, product: Product, *, request_id: str, reason: str, actor: str, at: datetime) -> ManualSuspension:
    """Writes a (pending) staff hold before its OSS order goes out, keeping the bar the line has now underneath."""
    underlying = expected_barring(product.status, product.status_reason) or "none"
    hold = ManualSuspension(product_id=product.id, request_id=request_id, reason=reason, actor=actor, at=at, underlying_barring=underlying,
                            underlying_reason=product.status_reason if underlying != "none" else None)
    session.add(hold)
    return hold


def expected_barring_of(session: Session, product: Product) -> Barring | None:
    """The OSS barring o2c's view says the product's line should have (None: not live)."""
    return expected_barring(product.status, product.status_reason, manually_suspended=manual_suspension(session, product.id) is not None)


def check_request(session: Session, product_id: str, target: str) -> tuple[Product, str]:
    """Checks a staff suspend / restore. Returns the product and START or ALREADY; raises NotFound,
    Invalid (422: the product is not live) or Conflict (409: restoring a line only dunning or a spending cap bars)."""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    if product.status not in LIVE_STATUSES:
        raise Invalid([FieldError(field="status", code="product_not_live", message=f"product {product_id} is {product.status}")],
                      f"product {product_id} is {product.status}: only an active or suspended product can be suspended or restored",
                      code="product_not_live")
    hold = manual_suspension(session, product_id)
    if hold_pending(product, hold):  # a suspension still under way: its workflow answers (409 in progress) or, gone, is taken over
        return product, START
    held = hold is not None
    if target == "suspended":
        return product, ALREADY if held else START
    if held:
        return product, START
    if product.status == "suspended":
        raise Conflict(f"product {product_id} is not suspended by staff but {product.status_reason or 'barred'}: "
                       "that bar ends with its cause (payment, dunning pause, next cycle)", code="not_manually_suspended")
    return product, ALREADY
