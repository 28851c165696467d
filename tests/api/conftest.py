"""API tests: the real app on each database backend (`db_url`) and a real Temporal dev server.

No worker runs: workflows that the API starts stay pending, which is exactly what lets the tests
read their search attributes and the signals the API sent them."""
from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from adapters.temporal.client import WorkflowGateway
from api.app import create_app
from config.settings import Settings
from persistence.db import session_scope
from persistence.tables import Product
from tests.fakes.stripe_server import FakeStripeServer
from workflows.messages import SEARCH_ATTRIBUTES

TASK_QUEUE = "o2c-api-tests"  # no worker polls it

ADMIN = {"X-API-Key": "dev-admin-key"}
CRM = {"X-API-Key": "dev-crm-key"}
SUPPORT = {"X-API-Key": "dev-support-key"}
FINANCE = {"X-API-Key": "dev-finance-key"}
OSS = {"X-API-Key": "dev-oss-key"}

CUSTOMER_PATH = "/tmf-api/customerManagement/v4/customer"
ACCOUNT_PATH = "/tmf-api/accountManagement/v4/billingAccount"
OFFERING_PATH = "/tmf-api/productCatalogManagement/v4/productOffering"
ORDER_PATH = "/tmf-api/productOrderingManagement/v4/productOrder"
CANCEL_PATH = "/tmf-api/productOrderingManagement/v4/cancelProductOrder"
PRODUCT_PATH = "/tmf-api/productInventory/v4/product"
OSS_PATH = "/tmf-api/serviceOrdering/v4/listener/serviceOrderStateChangeEvent"
USAGE_PATH = "/tmf-api/usageManagement/v4/usage"
REJECTED_PATH = "/tmf-api/usageManagement/v4/rejectedUsage"
BILL_PATH = "/tmf-api/customerBillManagement/v4/customerBill"
PAYMENT_PATH = "/tmf-api/paymentManagement/v4/payment"


@pytest.fixture(scope="session")
async def temporal_env(temporal_cli) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env) -> Client:
    return temporal_env.client


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripeServer]:
    """A local server speaking Stripe's wire format, one per test module (the real SDK talks to it over HTTP)."""
    with FakeStripeServer() as server:
        yield server


@pytest.fixture
def fake_stripe(stripe_server: FakeStripeServer) -> FakeStripeServer:
    """The module's fake Stripe, emptied for each test."""
    stripe_server.reset()
    return stripe_server


def api_settings(db_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=db_url, task_queue=TASK_QUEUE, **overrides)


@pytest.fixture(scope="session")
def app(db_url, temporal_env) -> FastAPI:
    return create_app(api_settings(db_url), workflows=WorkflowGateway(temporal_env.client, TASK_QUEUE))


@pytest.fixture(scope="session")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o2c.test") as http:
        yield http


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o2c.test")


# --- builders ------------------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def new_msisdn() -> str:
    # 49 170 + 8 random digits: a German mobile number no other test uses.
    return f"49170{random.randrange(10**7, 10**8)}"


async def make_customer(client: httpx.AsyncClient, name: str | None = None) -> dict:
    response = await client.post(
        CUSTOMER_PATH,
        headers=CRM,
        json={
            "name": name or f"Kunde {uuid.uuid4().hex[:8]}",
            "contactMedium": [
                {"mediumType": "email", "characteristic": {"emailAddress": "erika@example.org"}},
                {"mediumType": "postalAddress", "characteristic": {"street1": "Hauptstraße 5", "city": "Berlin", "postCode": "10115", "country": "DE"}},
            ],
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


async def make_account(client: httpx.AsyncClient, customer_id: str | None = None, **extra: Any) -> dict:
    if customer_id is None:
        customer_id = (await make_customer(client))["id"]
    body = {"name": "Hauptkonto", "relatedParty": [{"id": customer_id, "role": "customer"}], **extra}
    response = await client.post(ACCOUNT_PATH, headers=CRM, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def order_body(customer_id: str, account_id: str, *offerings: str) -> dict:
    return {
        "relatedParty": [{"id": customer_id, "role": "customer"}],
        "billingAccount": {"id": account_id},
        "productOrderItem": [{"id": str(i), "action": "add", "productOffering": {"id": o}} for i, o in enumerate(offerings or ("mobile-s",), start=1)],
    }


def insert_product(db_url: str, account: dict, msisdn: str, *, offering_id: str = "mobile-s", start: datetime, end: datetime | None = None) -> str:
    """A product as the order workflow would leave it, so usage can be guided to it."""
    product_id = str(uuid.uuid4())
    customer_id = account["relatedParty"][0]["id"]
    with session_scope(db_url) as session:
        session.add(
            Product(
                id=product_id,
                customer_id=customer_id,
                billing_account_id=account["id"],
                offering_id=offering_id,
                offering_version="1",
                catalog_version="2026.1",
                name=offering_id,
                msisdn=msisdn,
                status="active" if end is None else "terminated",
                order_id=str(uuid.uuid4()),
                order_item_id="1",
                start_date=start,
                termination_date=end,
                billing_start=start,
            )
        )
    return product_id


async def signals_received(client: Client, workflow_id: str) -> list[tuple[str, list[Any]]]:
    """(signal name, decoded payloads) for every signal in the workflow's history."""
    found = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            payloads = await client.data_converter.decode(attrs.input.payloads) if attrs.input.payloads else []
            found.append((attrs.signal_name, payloads))
    return found

