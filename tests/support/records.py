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


def create_account_with_email(db_url: str, *, vat_id: str | None = None) -> tuple[str, str]:
    """A customer with an e-mail address of its own (and a VAT ID if given) and a standard billing account: (account id, e-mail)."""
    email = f"kunde-{uuid.uuid4().hex[:10]}@example.org"
    customer_id = create_customer(db_url, email=email)
    if vat_id:
        with session_scope(db_url) as session:
            session.get(Customer, customer_id).vat_id = vat_id
    return create_billing_account(db_url, customer_id), email


def create_order(db_url: str, customer_id: str, account_id: str, offerings: list[str]) -> str:
    order_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(ProductOrder(id=order_id, customer_id=customer_id, billing_account_id=account_id, state="acknowledged",
                                 request={}, order_date=now()))
        session.flush()
        for index, offering in enumerate(offerings, start=1):
            session.add(ProductOrderItem(order_id=order_id, item_id=str(index), action="add", offering_id=offering))
    return order_id


def create_modify_order(db_url: str, customer_id: str, account_id: str, product_id: str, offering: str, promotion: str | None = None) -> str:
    """An acknowledged order with one `modify` item moving `product_id` to `offering` (with `promotion`'s price alteration if given)."""
    order_id = str(uuid.uuid4())
    item = {"id": "1", "action": "modify", "product": {"id": product_id}, "productOffering": {"id": offering}}
    if promotion is not None:
        item["itemPrice"] = [{"priceAlteration": [{"productOfferingPrice": {"id": promotion}}]}]
    with session_scope(db_url) as session:
        session.add(ProductOrder(id=order_id, customer_id=customer_id, billing_account_id=account_id, state="acknowledged", request={"productOrderItem": [item]},
                                 order_date=now()))
        session.flush()
        session.add(ProductOrderItem(order_id=order_id, item_id="1", action="modify", offering_id=offering, product_id=product_id))
    return order_id
