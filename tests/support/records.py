"""Creating customers, accounts and orders straight in the database, for tests below the API."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from persistence.db import session_scope
from persistence.tables import BillingAccount, Customer, ProductOrder, ProductOrderItem


def now() -> datetime:
    return datetime.now(timezone.utc)


def create_customer(db_url: str, *, email: str | None = "kunde@example.org") -> str:
    customer_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Customer(id=customer_id, name="Erika Mustermann", email=email,
                             address={"street1": "Hauptstraße 5", "postCode": "10115", "city": "Berlin", "country": "DE"}, created_at=now()))
    return customer_id


def create_billing_account(db_url: str, customer_id: str, *, profile: str = "standard", bill_cycle_day: int = 1,
                           timezone_name: str = "Europe/Berlin", payment_method: str | None = "4242424242424242") -> str:
    account_id = str(uuid.uuid4())
    created = now()
    with session_scope(db_url) as session:
        session.add(BillingAccount(id=account_id, customer_id=customer_id, name="Main account", timezone=timezone_name, bill_cycle_day=bill_cycle_day,
                                   billing_profile=profile, payment_method=payment_method, cycle_anchor=created, created_at=created))
    return account_id


def create_order(db_url: str, customer_id: str, account_id: str, offerings: list[str]) -> str:
    order_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(ProductOrder(id=order_id, customer_id=customer_id, billing_account_id=account_id, state="acknowledged",
                                 request={}, order_date=now()))
        session.flush()
        for index, offering in enumerate(offerings, start=1):
            session.add(ProductOrderItem(order_id=order_id, item_id=str(index), action="add", offering_id=offering))
    return order_id
