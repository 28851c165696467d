"""TMF event hubs (issue 7): listeners registered through `POST {api}/hub` get o2c's events, signed,
in order per resource, retried with back-off, and can replay what finally failed.

The listener is a real process (tests/support/listener_app.py under uvicorn) that verifies every
signature itself. The dispatcher runs in the test with an injected clock, one pass at a time, so
back-off and the retry window are tested without waiting."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from activities.orders import OrderActivities
from adapters.http.hub_dispatcher import HubDispatcher, encode_body
from persistence.db import session_scope
from persistence.tables import HubDelivery, HubEvent, Product, ProductOrder
from services.hub_delivery import RetryPolicy, claim_due, signature, verify_signature
from services.hub_events import PRODUCT_STATE_CHANGE, emit_event, emit_order_event, emit_product_event
from tests.api.conftest import ADMIN, CRM, FINANCE, ORDER_PATH, SUPPORT, TASK_QUEUE, insert_product, make_account, new_msisdn, order_body, utc
from tests.support.listener_app import ListenerProcess

ORDERING_HUB = "/tmf-api/productOrderingManagement/v4/hub"
INVENTORY_HUB = "/tmf-api/productInventory/v4/hub"
BILL_HUB = "/tmf-api/customerBillManagement/v4/hub"
PAYMENT_HUB = "/tmf-api/paymentManagement/v4/hub"
ACCOUNT_HUB = "/tmf-api/accountManagement/v4/hub"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(scope="module")
def listener(tmp_path_factory) -> Iterator[ListenerProcess]:
    process = ListenerProcess(tmp_path_factory.mktemp("listener")).start()
    yield process
    process.stop()


@pytest.fixture
def own_listener(tmp_path_factory) -> Iterator[ListenerProcess]:
    """A listener process of the test's own, which the test may stop and start."""
    process = ListenerProcess(tmp_path_factory.mktemp("listener-own")).start()
    yield process
    process.stop()


@pytest.fixture
async def hubs(client):
    """Registers listeners through the API and deletes them after the test, so the next test's
    dispatcher passes do not meet them."""
    registered: list[tuple[str, str]] = []

    async def register(hub: str, callback: str, query: str | None = None) -> dict:
        body = {"callback": callback} if query is None else {"callback": callback, "query": query}
        response = await client.post(hub, headers=CRM, json=body)
        assert response.status_code == 201, response.text
        registered.append((hub, response.json()["id"]))
        return response.json()

    yield register
    for hub, listener_id in registered:
        await client.delete(f"{hub}/{listener_id}", headers=ADMIN)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def dispatcher(db_url, clock):
    async with HubDispatcher(db_url, clock=clock, timeout_s=5) as instance:
        yield instance


def mount_name() -> str:
    return f"crm-{uuid.uuid4().hex[:8]}"


async def new_order(client, app) -> str:
    account = await make_account(client)
    response = await client.post(ORDER_PATH, headers=CRM, json=order_body(account["relatedParty"][0]["id"], account["id"]))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def activities(db_url, app) -> OrderActivities:
    # The order workflow's own activities, called directly (no worker runs in the API tests).
    return OrderActivities(db_url, app.state.o2c.catalog, oss=None, task_queue=TASK_QUEUE)  # type: ignore[arg-type]


def complete_order(db_url, app, order_id: str) -> str:
    acts = activities(db_url, app)
    assert acts.start_order(order_id) == []
    acts.reserve_msisdn(order_id, "1")
    product = acts.create_product(order_id, "1", "completed")
    acts.finish_order(order_id, "completed", None)
    return product.product_id


def deliveries(db_url, listener_id: str) -> list[HubDelivery]:
    with session_scope(db_url) as session:
        return list(session.exec(select(HubDelivery).where(HubDelivery.listener_id == listener_id).order_by(HubDelivery.resource_key, HubDelivery.sequence)))


def of_resource(events: list[dict], resource_id: str) -> list[dict]:
    return [e for e in events if e["eventId"] and f":{resource_id}:" in e["eventId"]]


# --- registration ---------------------------------------------------------------------------------


async def test_registration_returns_the_secret_once(client, hubs):
    created = await hubs(ORDERING_HUB, "https://crm.example.org/o2c/", "eventType=ProductOrderStateChangeEvent")
    assert created["callback"] == "https://crm.example.org/o2c"
    assert created["query"] == "eventType=ProductOrderStateChangeEvent"
    assert created["@type"] == "EventSubscription"
    assert created["secret"].startswith("whsec_") and len(created["secret"]) >= 40
    assert created["href"] == f"{ORDERING_HUB}/{created['id']}"

    read = await client.get(f"{ORDERING_HUB}/{created['id']}", headers=CRM)
    assert read.status_code == 200
    assert read.json()["callback"] == "https://crm.example.org/o2c"
    assert "secret" not in read.json()
    listed = await client.get(ORDERING_HUB, headers=SUPPORT)
    assert created["id"] in [item["id"] for item in listed.json()]
    assert all("secret" not in item for item in listed.json())

    # Each API has its own hub: the listener is not found under another API's prefix.
    assert (await client.get(f"{INVENTORY_HUB}/{created['id']}", headers=CRM)).status_code == 404
    # Every hub exists, and a second registration gets another secret.
    for hub in (INVENTORY_HUB, BILL_HUB, PAYMENT_HUB, ACCOUNT_HUB):
        other = await hubs(hub, "https://crm.example.org/o2c")
        assert other["secret"] != created["secret"]


async def test_hub_access_by_role(client, hubs):
    body = {"callback": "https://crm.example.org/o2c"}
    assert (await client.post(ORDERING_HUB, json=body)).status_code == 401
    assert (await client.post(ORDERING_HUB, headers=FINANCE, json=body)).status_code == 403
    assert (await client.post(ORDERING_HUB, headers=SUPPORT, json=body)).status_code == 403
    created = await hubs(ORDERING_HUB, "https://crm.example.org/o2c")
    assert (await client.get(f"{ORDERING_HUB}/{created['id']}", headers=SUPPORT)).status_code == 200
    assert (await client.delete(f"{ORDERING_HUB}/{created['id']}", headers=SUPPORT)).status_code == 403
    assert (await client.get(f"{ORDERING_HUB}/{created['id']}", headers=FINANCE)).status_code == 403


@pytest.mark.parametrize(("callback", "reason"), [
    ("crm.example.org/o2c", "callback_not_absolute"),
    ("ftp://crm.example.org/o2c", "callback_scheme_not_allowed"),
    ("javascript:alert(1)", "callback_scheme_not_allowed"),
    ("http:///o2c", "callback_missing_host"),
    ("https://user:pw@crm.example.org/o2c", "callback_has_credentials"),
    ("https://crm.example.org/o2c?token=1", "callback_has_query"),
    ("https://crm.example.org/o2c#x", "callback_has_fragment"),
    ("https://crm.example.org:99999/o2c", "callback_malformed"),
    ("https://crm example.org/o2c", "callback_malformed"),
    ("http://0.0.0.0:8080/o2c", "callback_host_not_allowed"),
    ("", "callback_missing"),
])
async def test_bad_callback_is_refused_with_a_reason(client, callback, reason):
    response = await client.post(ORDERING_HUB, headers=CRM, json={"callback": callback})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_callback"
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("callback", reason)]


@pytest.mark.parametrize(("query", "reason"), [
    ("eventType=ProductCreateEvent", "unknown_event_type"),  # an inventory event at the ordering hub
    ("eventType=ProductOrderStateChangeEvent,Nonsense", "unknown_event_type"),
    ("ProductOrderStateChangeEvent", "query_malformed"),
    ("state=completed", "query_unknown_field"),
    ("eventType=", "query_malformed"),
])
async def test_bad_query_is_refused_with_a_reason(client, query, reason):
    response = await client.post(ORDERING_HUB, headers=CRM, json={"callback": "https://crm.example.org/o2c", "query": query})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_query"
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("query", reason)]


# --- delivery -------------------------------------------------------------------------------------


async def test_order_events_arrive_in_order_with_valid_signatures(client, app, db_url, listener, hubs, dispatcher):
    orders_mount, products_mount = mount_name(), mount_name()
    order_hub = await hubs(ORDERING_HUB, listener.callback(orders_mount))
    product_hub = await hubs(INVENTORY_HUB, listener.callback(products_mount))
    listener.mount(orders_mount, order_hub["secret"])
    listener.mount(products_mount, product_hub["secret"])

    order_id = await new_order(client, app)
    product_id = complete_order(db_url, app, order_id)
    activities(db_url, app).finish_order(order_id, "completed", None)  # an activity retried after it committed: no new event

    assert await dispatcher.drain() == 4
    received = of_resource(listener.accepted(orders_mount), order_id)
    assert [(e["eventType"], e["body"]["event"]["productOrder"]["state"]) for e in received] == [
        ("ProductOrderCreateEvent", "acknowledged"),
        ("ProductOrderStateChangeEvent", "inProgress"),
        ("ProductOrderStateChangeEvent", "completed"),
    ]
    assert [e["eventId"] for e in received] == [
        f"productOrder:{order_id}:acknowledged:1", f"productOrder:{order_id}:inProgress:1", f"productOrder:{order_id}:completed:1"]
    assert [e["sequence"] for e in received] == ["1", "2", "3"]
    assert [e["path"] for e in received] == ["productOrderCreateEvent", "productOrderStateChangeEvent", "productOrderStateChangeEvent"]
    assert all(e["signatureValid"] for e in listener.events(orders_mount))
    completed = received[-1]["body"]
    assert completed["domain"] == "productOrderingManagement"
    assert completed["eventTime"].endswith("Z")
    assert completed["event"]["productOrder"]["id"] == order_id
    assert completed["event"]["productOrder"]["productOrderItem"][0]["product"]["id"] == product_id
    assert "@o2cSteps" not in completed["event"]["productOrder"]

    [product_event] = of_resource(listener.accepted(products_mount), product_id)
    assert product_event["eventType"] == "ProductCreateEvent"
    assert product_event["path"] == "productCreateEvent"
    assert product_event["body"]["event"]["product"]["status"] == "active"
    assert product_event["eventId"] == f"product:{product_id}:active:1"

    # Every delivery is recorded as delivered, once.
    rows = deliveries(db_url, order_hub["id"])
    assert [(r.status, r.attempts) for r in rows if r.resource_key == f"productOrder:{order_id}"] == [("delivered", 1)] * 3


async def test_a_wrong_secret_is_refused_by_the_listener_and_retried(client, app, db_url, listener, hubs, dispatcher, clock):
    name = mount_name()
    hub = await hubs(ORDERING_HUB, listener.callback(name))
    listener.mount(name, "whsec_not-the-right-one")
    order_id = await new_order(client, app)

    assert await dispatcher.drain() == 0
    [row] = deliveries(db_url, hub["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 401)
    assert listener.events(name)[0]["signatureProblem"] == "signature mismatch"

    listener.mount(name, hub["secret"])
    clock.advance(timedelta(seconds=11))
    assert await dispatcher.drain() == 1
    assert [e["eventId"] for e in listener.accepted(name)] == [f"productOrder:{order_id}:acknowledged:1"]


async def test_a_listener_that_is_down_gets_the_events_later_in_order(client, app, db_url, own_listener, hubs, dispatcher, clock):
    name = mount_name()
    hub = await hubs(ORDERING_HUB, own_listener.callback(name))
    own_listener.mount(name, hub["secret"])
    order_id = await new_order(client, app)
    acts = activities(db_url, app)
    acts.start_order(order_id)
    acts.finish_order(order_id, "failed", "OSS rejected the service order")
    own_listener.stop()

    result = await dispatcher.deliver_due()
    assert (result.attempted, result.delivered) == (1, 0)  # only the first event of the order is tried; the others wait
    first, second, third = deliveries(db_url, hub["id"])
    assert (first.sequence, first.attempts, first.status) == (1, 1, "pending")
    assert "ConnectError" in first.last_error
    assert first.next_attempt_at == clock.now + timedelta(seconds=10)
    assert (second.attempts, third.attempts) == (0, 0)

    clock.advance(timedelta(seconds=9))
    assert (await dispatcher.deliver_due()).attempted == 0  # backing off
    clock.advance(timedelta(seconds=2))
    assert (await dispatcher.deliver_due()).attempted == 1
    first = deliveries(db_url, hub["id"])[0]
    assert first.attempts == 2 and first.next_attempt_at == clock.now + timedelta(seconds=20)  # exponential

    own_listener.start()
    clock.advance(timedelta(seconds=20))
    assert await dispatcher.drain() == 3
    received = of_resource(own_listener.accepted(name), order_id)
    assert [(e["eventType"], e["body"]["event"]["productOrder"]["state"]) for e in received] == [
        ("ProductOrderCreateEvent", "acknowledged"), ("ProductOrderStateChangeEvent", "inProgress"), ("ProductOrderStateChangeEvent", "failed")]
    assert received[-1]["body"]["event"]["productOrder"]["stateReason"] == "OSS rejected the service order"
    assert all(e["signatureValid"] for e in received)


async def test_after_the_retry_window_the_delivery_fails_is_listed_and_can_be_replayed(client, app, db_url, listener, hubs, dispatcher, clock):
    name = mount_name()
    hub = await hubs(ORDERING_HUB, listener.callback(name))
    listener.mount(name, hub["secret"], fail_next=10**6, fail_status=503)
    first_order = await new_order(client, app)
    second_order = await new_order(client, app)
    activities(db_url, app).start_order(second_order)

    policy = dispatcher.policy
    assert policy.window == timedelta(hours=24)  # the default
    await dispatcher.drain()
    for _ in range(23):  # a day of back-off (at most an hour apart): still trying
        clock.advance(timedelta(hours=1))
        await dispatcher.drain()
    rows = deliveries(db_url, hub["id"])
    assert {r.status for r in rows} == {"pending"}
    assert min(r.attempts for r in rows if r.sequence == 1) > 10
    clock.advance(timedelta(hours=1, minutes=1))
    await dispatcher.drain()
    await dispatcher.drain()  # the second order's later event gets its turn once the first has failed
    rows = deliveries(db_url, hub["id"])
    assert [r.status for r in rows] == ["failed"] * 3

    failed = await client.get(f"{ORDERING_HUB}/{hub['id']}/failedDelivery", headers=CRM)
    assert failed.status_code == 200
    listed = failed.json()
    assert failed.headers["X-Total-Count"] == "3"
    assert {item["eventId"] for item in listed} == {
        f"productOrder:{first_order}:acknowledged:1", f"productOrder:{second_order}:acknowledged:1", f"productOrder:{second_order}:inProgress:1"}
    one = next(item for item in listed if item["eventId"].startswith(f"productOrder:{first_order}"))
    assert one["lastStatusCode"] == 503 and one["lastError"].startswith("HTTP 503")
    assert one["event"]["eventType"] == "ProductOrderCreateEvent"
    assert one["failedAt"] is not None

    # Replay one: it is delivered, and only it.
    listener.configure(name, failNext=0)
    replayed = await client.post(f"{ORDERING_HUB}/{hub['id']}/failedDelivery/{one['id']}/replay", headers=CRM)
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    assert await dispatcher.drain() == 1
    assert [e["eventId"] for e in listener.accepted(name)] == [one["eventId"]]
    assert (await client.post(f"{ORDERING_HUB}/{hub['id']}/failedDelivery/{one['id']}/replay", headers=CRM)).status_code == 404

    # Replay all: the rest, in each resource's order.
    replay_all = await client.post(f"{ORDERING_HUB}/{hub['id']}/failedDelivery/replay", headers=CRM)
    assert replay_all.status_code == 202 and replay_all.json()["replayed"] == 2
    assert await dispatcher.drain() == 2
    assert [e["eventId"] for e in of_resource(listener.accepted(name), second_order)] == [
        f"productOrder:{second_order}:acknowledged:1", f"productOrder:{second_order}:inProgress:1"]
    assert (await client.get(f"{ORDERING_HUB}/{hub['id']}/failedDelivery", headers=CRM)).json() == []
    assert all(e["signatureValid"] for e in listener.events(name))


async def test_a_new_dispatcher_delivers_what_was_pending(client, app, db_url, listener, hubs, clock):
    name = mount_name()
    hub = await hubs(ORDERING_HUB, listener.callback(name))
    listener.mount(name, hub["secret"], fail_next=1)
    order_id = await new_order(client, app)
    activities(db_url, app).start_order(order_id)

    async with HubDispatcher(db_url, clock=clock) as first:
        assert (await first.deliver_due()).delivered == 0  # the listener failed it; o2c "stops" here
    # Another order's event was claimed by a dispatcher that died mid-send: its lease runs out.
    other = await new_order(client, app)
    with session_scope(db_url) as session:
        claimed = claim_due(session, clock.now, timedelta(seconds=60))
    assert [c.event_id for c in claimed if c.listener_id == hub["id"]] == [f"productOrder:{other}:acknowledged:1"]

    clock.advance(timedelta(seconds=30))
    async with HubDispatcher(db_url, clock=clock) as second:
        assert await second.drain() == 2  # the first order's two events; the claimed one is still leased
        clock.advance(timedelta(seconds=31))
        assert await second.drain() == 1
    assert [e["eventId"] for e in of_resource(listener.accepted(name), order_id)] == [
        f"productOrder:{order_id}:acknowledged:1", f"productOrder:{order_id}:inProgress:1"]
    assert [e["eventId"] for e in of_resource(listener.accepted(name), other)] == [f"productOrder:{other}:acknowledged:1"]


async def test_deleting_a_listener_stops_its_deliveries(client, app, db_url, listener, hubs, dispatcher):
    name = mount_name()
    hub = await hubs(ORDERING_HUB, listener.callback(name))
    listener.mount(name, hub["secret"])
    order_id = await new_order(client, app)

    assert (await client.delete(f"{ORDERING_HUB}/{hub['id']}", headers=CRM)).status_code == 204
    assert (await client.get(f"{ORDERING_HUB}/{hub['id']}", headers=CRM)).status_code == 404
    assert (await client.delete(f"{ORDERING_HUB}/{hub['id']}", headers=CRM)).status_code == 404
    activities(db_url, app).start_order(order_id)

    await dispatcher.drain()
    assert listener.events(name) == []
    assert [(r.event_id, r.status) for r in deliveries(db_url, hub["id"])] == [(f"productOrder:{order_id}:acknowledged:1", "cancelled")]


async def test_query_filters_the_events_a_listener_gets(client, app, db_url, listener, hubs, dispatcher):
    names = {key: mount_name() for key in ("changes", "completed", "created", "all_products")}
    registered = {
        "changes": await hubs(ORDERING_HUB, listener.callback(names["changes"]), "eventType=ProductOrderStateChangeEvent"),
        "completed": await hubs(ORDERING_HUB, listener.callback(names["completed"]), "event.productOrder.state=completed,failed"),
        "created": await hubs(INVENTORY_HUB, listener.callback(names["created"]), "eventType=ProductCreateEvent&event.product.status=active"),
        "all_products": await hubs(INVENTORY_HUB, listener.callback(names["all_products"]), "eventType=ProductStateChangeEvent"),
    }
    for key, hub in registered.items():
        listener.mount(names[key], hub["secret"])

    order_id = await new_order(client, app)
    product_id = complete_order(db_url, app, order_id)
    await dispatcher.drain()

    def got(key: str, resource_id: str) -> list[tuple[str, str]]:
        return [(e["eventType"], e["eventId"].rsplit(":", 2)[1]) for e in of_resource(listener.accepted(names[key]), resource_id)]

    assert got("changes", order_id) == [("ProductOrderStateChangeEvent", "inProgress"), ("ProductOrderStateChangeEvent", "completed")]
    assert got("completed", order_id) == [("ProductOrderStateChangeEvent", "completed")]
    assert got("created", product_id) == [("ProductCreateEvent", "active")]
    assert got("all_products", product_id) == []


# --- emitting -------------------------------------------------------------------------------------


async def test_events_are_written_with_the_change_and_never_for_a_rolled_back_one(client, db_url, hubs):
    hub = await hubs(INVENTORY_HUB, "https://crm.example.org/o2c")
    account = await make_account(client)
    product_id = insert_product(db_url, account, new_msisdn(), start=utc(2026, 1, 5))

    with pytest.raises(RuntimeError):
        with session_scope(db_url) as session:
            product = session.get(Product, product_id)
            product.status = "suspended"
            emit_product_event(session, product, at=utc(2026, 2, 1))
            raise RuntimeError("the change fails after the event was written")
    with session_scope(db_url) as session:
        assert session.exec(select(HubEvent).where(HubEvent.resource_key == f"product:{product_id}")).all() == []
    assert deliveries(db_url, hub["id"]) == []

    def suspend_and_restore(status: str) -> str:
        with session_scope(db_url) as session:
            product = session.get(Product, product_id)
            product.status = status
            return emit_product_event(session, product, at=datetime.now(timezone.utc), event_type=PRODUCT_STATE_CHANGE)

    assert suspend_and_restore("suspended") == f"product:{product_id}:suspended:1"
    assert suspend_and_restore("suspended") == f"product:{product_id}:suspended:1"  # the same transaction again: nothing new
    assert suspend_and_restore("active") == f"product:{product_id}:active:1"
    assert suspend_and_restore("suspended") == f"product:{product_id}:suspended:2"
    assert [(r.event_id, r.sequence, r.status) for r in deliveries(db_url, hub["id"])] == [
        (f"product:{product_id}:suspended:1", 1, "pending"), (f"product:{product_id}:active:1", 2, "pending"),
        (f"product:{product_id}:suspended:2", 3, "pending")]


async def test_events_other_services_emit_reach_their_hubs(client, db_url, listener, hubs, dispatcher):
    name = mount_name()
    hub = await hubs(ACCOUNT_HUB, listener.callback(name), "eventType=DunningLevelChangeEvent")
    listener.mount(name, hub["secret"])
    account_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        event_id = emit_event(session, event_type="DunningLevelChangeEvent", resource_type="billingAccount", resource_id=account_id,
                              resource={"id": account_id, "dunningLevel": "reminder"}, state="reminder", at=utc(2026, 3, 1, 9))
        with pytest.raises(ValueError):
            emit_event(session, event_type="NoSuchEvent", resource_type="x", resource_id="1", resource={}, at=utc(2026, 3, 1))
    assert event_id == f"billingAccount:{account_id}:reminder:1"
    assert await dispatcher.drain() == 1
    [received] = listener.accepted(name)
    assert received["path"] == "dunningLevelChangeEvent"
    assert received["body"]["eventTime"] == "2026-03-01T09:00:00Z"
    assert received["body"]["event"] == {"billingAccount": {"id": account_id, "dunningLevel": "reminder"}}


def test_signature_is_verifiable_and_tamper_evident():
    body = encode_body({"eventId": "x", "eventType": "ProductOrderStateChangeEvent", "event": {"productOrder": {"id": "1", "state": "ü"}}})
    now = int(time.time())
    header = signature("whsec_test", body, now)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("whsec_test", body, header, now)
    assert not verify_signature("whsec_other", body, header, now)
    assert not verify_signature("whsec_test", body.replace(b'"1"', b'"2"'), header, now)
    assert not verify_signature("whsec_test", body, header, now + 301)  # too old: a replayed request
    assert not verify_signature("whsec_test", body, None, now)


def test_back_off_doubles_up_to_the_maximum_and_is_configurable():
    policy = RetryPolicy()
    assert [policy.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert policy.delay(40) == timedelta(hours=1)
    custom = RetryPolicy.from_env({"O2C_HUB_RETRY_WINDOW_S": str(3 * 86400), "O2C_HUB_RETRY_INITIAL_S": "1"})
    assert custom.window == timedelta(days=3) and custom.delay(1) == timedelta(seconds=1)
    with pytest.raises(ValueError):
        RetryPolicy(initial=timedelta(0))


async def test_order_event_uses_the_order_as_get_shows_it(client, app, db_url, hubs):
    hub = await hubs(ORDERING_HUB, "https://crm.example.org/o2c")
    order_id = await new_order(client, app)
    shown = (await client.get(f"{ORDER_PATH}/{order_id}", headers=CRM)).json()
    [row] = deliveries(db_url, hub["id"])
    sent = row.body["event"]["productOrder"]
    shown.pop("@o2cSteps")
    assert sent == shown
    with session_scope(db_url) as session:
        order = session.get(ProductOrder, order_id)
        assert emit_order_event(session, order, at=datetime.now(timezone.utc), event_type="ProductOrderCreateEvent") == row.event_id
