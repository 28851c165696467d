"""TMF637 product inventory (read side; products are created by the order workflow)."""
from __future__ import annotations

from sqlmodel import Session, col, select

from persistence.tables import Product
from services.errors import NotFound
from services.query import Page, paginate


def get_product(session: Session, product_id: str) -> Product:
    row = session.get(Product, product_id)
    if row is None:
        raise NotFound("product", product_id)
    return row


def list_products(session: Session, *, status: str | None, customer_id: str | None, billing_account_id: str | None, limit: int, offset: int) -> Page[Product]:
    statement = select(Product).order_by(col(Product.start_date).desc(), Product.id)
    if status is not None:
        statement = statement.where(Product.status == status)
    if customer_id is not None:
        statement = statement.where(Product.customer_id == customer_id)
    if billing_account_id is not None:
        statement = statement.where(Product.billing_account_id == billing_account_id)
    return paginate(session, statement, limit, offset)
