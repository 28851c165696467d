"""Helpers for billing-account workflow tests: accounts with live products (no order workflow),
manual payments, and reading back invoices, payments and events."""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlmodel import select

from adapters.temporal.client import WorkflowGateway
from persistence.db import session_scope
from persistence.tables import BilledCharge, BusinessEvent, Invoice, Payment, Product
from tests.support.records import create_billing_account, create_customer, now
from workflows.messages import PaymentReceived, ProductActivated, billing_account_workflow_id

OFFERINGS = {"mobile-s": ("Mobile S", "1"), "mobile-l": ("Mobile L", "1")}
BERLIN = ZoneInfo("Europe/Berlin")
DECLINING_CARD = "4000000000000002"  # the sandbox's generic_decline: a soft decline, so dunning retries it
STEP = timedelta(days=35)  # at most one month of skipped time per sleep, so each cycle continues-as-new on its own


@dataclass
class Account:
    customer_id: str
    account_id: str
    email: str
    products: list[ProductActivated]

    @property
    def workflow_id(self) -> str:
        return billing_account_workflow_id(self.account_id)

    @property
    def msisdns(self) -> list[str]:
        return [p.msisdn for p in self.products]


def unique_msisdn() -> str:
    return "49151" + f"{uuid.uuid4().int % 10**8:08d}"


async def activate_in_oss(oss_http: httpx.AsyncClient, msisdn: str, offering_id: str, customer_id: str) -> None:
    """Makes the simulator know the line as active, as the order workflow's activation would."""
    body = {
        "externalId": f"test-activation:{msisdn}",
        "serviceOrderItem": [{
            "id": "1", "action": "add",
            "service": {"serviceCharacteristic": [
                {"name": "msisdn", "value": msisdn}, {"name": "productOfferingId", "value": offering_id}, {"name": "customerId", "value": customer_id},
            ]},
        }],
    }
    response = await oss_http.post("/tmf-api/serviceOrdering/v4/serviceOrder", json=body)
    assert response.status_code == 201, response.text
    for _ in range(200):
        service = (await oss_http.get(f"/sim/services/{msisdn}")).json()
        if service["state"] == "active":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the simulator did not activate {msisdn}: {service}")


async def open_account(db_url: str, oss_http: httpx.AsyncClient, offerings: list[str], *, activated_at: datetime | None = None, **account) -> Account:
    """Customer, billing account and active products straight in the database, and the lines live in the OSS."""
    email = f"kunde-{uuid.uuid4().hex[:10]}@example.org"
    customer_id = create_customer(db_url, email=email)
    account_id = create_billing_account(db_url, customer_id, **account)
    activated_at = activated_at or now()
    products = []
    with session_scope(db_url) as session:
        for index, offering_id in enumerate(offerings, start=1):
            name, version = OFFERINGS[offering_id]
            product = Product(
                id=str(uuid.uuid4()), customer_id=customer_id, billing_account_id=account_id, offering_id=offering_id, offering_version=version,
                catalog_version="2026.1", name=name, msisdn=unique_msisdn(), status="active", order_id=f"test-{account_id}", order_item_id=str(index),
                start_date=activated_at, billing_start=activated_at,
            )
            session.add(product)
            products.append(ProductActivated(product_id=product.id, msisdn=product.msisdn, offering_id=offering_id, activated_at=activated_at))
    for product in products:
        await activate_in_oss(oss_http, product.msisdn, product.offering_id, customer_id)
    return Account(customer_id=customer_id, account_id=account_id, email=email, products=products)


async def start_billing(client, task_queue: str, account: Account) -> None:
    gateway = WorkflowGateway(client, task_queue)
    for product in account.products:
        await gateway.product_activated(account.account_id, account.customer_id, product)


async def pay_by_bank_transfer(client, task_queue: str, db_url: str, account: Account, amount_cents: int, *, at: datetime | None = None) -> str:
    """Records a received bank transfer (as the payments API would) and tells the account's workflow."""
    payment_id = f"bt-{uuid.uuid4()}"
    with session_scope(db_url) as session:
        session.add(Payment(id=payment_id, correlator_id=payment_id, billing_account_id=account.account_id, amount_cents=amount_cents,
                            method="bank_transfer", status="succeeded", recorded_by="test", created_at=at or now()))
    await WorkflowGateway(client, task_queue).payment_received(account.account_id, PaymentReceived(payment_id=payment_id, amount_cents=amount_cents, source="bank_transfer"))
    return payment_id


def invoices(db_url: str, account_id: str) -> list[Invoice]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Invoice).where(Invoice.billing_account_id == account_id).order_by(Invoice.period_start)))


def payments(db_url: str, account_id: str) -> list[Payment]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Payment).where(Payment.billing_account_id == account_id).order_by(Payment.created_at, Payment.id)))


def products(db_url: str, account_id: str) -> list[Product]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Product).where(Product.billing_account_id == account_id)))


def billed_charges(db_url: str, invoice_ids: list[str]) -> list[BilledCharge]:
    with session_scope(db_url) as session:
        return list(session.exec(select(BilledCharge).where(BilledCharge.invoice_id.in_(invoice_ids))))


def events(db_url: str, account_id: str) -> list[BusinessEvent]:
    with session_scope(db_url) as session:
        return list(session.exec(select(BusinessEvent).where(BusinessEvent.billing_account_id == account_id).order_by(BusinessEvent.id)))


def mails_to(mail_sink, recipient: str) -> list:
    return [m for m in mail_sink.messages() if m["To"] == recipient]


# --- the clock and waiting under time skipping ------------------------------------------------


def local_midnight(day: date) -> datetime:
    """Independent of domain.billing_cycle: the UTC instant of 00:00 Berlin time on `day`."""
    return datetime.combine(day, time(0), tzinfo=BERLIN).astimezone(UTC)


async def pin_clock(ts_env, month: int, day: int) -> datetime:
    """Moves the server clock to the next `day`.`month`. at 12:00 Berlin (before any workflow runs)."""
    now = await ts_env.get_current_time()
    target = datetime(now.astimezone(BERLIN).year, month, day, 12, tzinfo=BERLIN)
    if target < now:
        target = target.replace(year=target.year + 1)
    await ts_env.sleep(target - now)
    return target.astimezone(UTC)


async def advance_to(ts_env, instant: datetime) -> None:
    """Skips time up to `instant` in steps of at most STEP while the worker runs."""
    while (remaining := instant - await ts_env.get_current_time()) > timedelta(0):
        await ts_env.sleep(min(remaining, STEP))


async def first_invoice(ts_env, db_url: str, account: Account, year: int) -> Invoice:
    """Skips to just after the first cycle of an account with cycle day 15 closes (15 December of `year`) and returns its invoice."""
    await advance_to(ts_env, local_midnight(date(year, 12, 15)) + timedelta(hours=1))
    return (await eventually(lambda: invoices(db_url, account.account_id)))[0]


async def eventually(check, timeout_s: float = 15.0):
    """Polls in real time (no time is skipped meanwhile) until `check()` returns a truthy value without
    raising; returns that value. Covers activities still finishing when a sleep returns."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            error: BaseException | None = None
        except Exception as caught:  # e.g. a query racing a continue-as-new
            error = caught
        if asyncio.get_running_loop().time() > deadline:
            if error is not None:
                raise error
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def barring(oss_http, msisdn: str) -> str:
    return (await oss_http.get(f"/sim/services/{msisdn}")).json()["barring"]
