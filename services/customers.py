"""TMF629 customers."""
from __future__ import annotations

from sqlmodel import Session, select

from persistence.tables import BusinessEvent, Customer
from services.errors import NotFound
from services.query import Page, new_id, paginate, utcnow


def create_customer(session: Session, *, name: str, email: str | None, phone: str | None, address: dict, vat_id: str | None) -> Customer:
    now = utcnow()
    row = Customer(id=new_id(), name=name, email=email, phone=phone, address=address, vat_id=vat_id, created_at=now)
    session.add(row)
    session.add(BusinessEvent(customer_id=row.id, kind="customer_created", message=f"Customer {name} created", at=now))
    return row


def get_customer(session: Session, customer_id: str) -> Customer:
    row = session.get(Customer, customer_id)
    if row is None:
        raise NotFound("customer", customer_id)
    return row


def list_customers(session: Session, *, name: str | None, limit: int, offset: int) -> Page[Customer]:
    statement = select(Customer).order_by(Customer.created_at, Customer.id)
    if name is not None:
        statement = statement.where(Customer.name == name)
    return paginate(session, statement, limit, offset)
