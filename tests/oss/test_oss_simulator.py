"""The OSS simulator over real HTTP: TMF641 ordering, idempotency, callbacks, failure injection."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

ORDERS = "/tmf-api/serviceOrdering/v4/serviceOrder"
CANCEL = "/tmf-api/serviceOrdering/v4/cancelServiceOrder"
REPO_ROOT = Path(__file__).resolve().parents[2]


def order_body(external_id: str, action: str = "add", **characteristics: str) -> dict[str, Any]:
    if action == "add":
        characteristics = {"productOfferingId": "po-mobile-s", "customerId": "cust-1", **characteristics}
    return {
        "externalId": external_id,
        "serviceOrderItem": [
            {
                "id": "1",
                "action": action,
                "service": {"serviceCharacteristic": [{"name": k, "value": v} for k, v in characteristics.items()]},
            }
        ],
    }


async def submit(sim: httpx.AsyncClient, external_id: str, action: str = "add", *, behaviour: str | None = None,
                 **characteristics: str) -> httpx.Response:
    headers = {"X-Sim-Behaviour": behaviour} if behaviour else {}
    return await sim.post(ORDERS, json=order_body(external_id, action, **characteristics), headers=headers)


async def activate(sim, callback_receiver, msisdn: str) -> dict[str, Any]:
    """An active service to modify or terminate."""
    order = (await submit(sim, f"act-{msisdn}", msisdn=msisdn)).json()
    assert (await callback_receiver.wait_for(order["id"])).order["state"] == "completed"
    return order


async def service(sim: httpx.AsyncClient, msisdn: str) -> dict[str, Any]:
    response = await sim.get(f"/sim/services/{msisdn}")
    assert response.status_code == 200, response.text
    return response.json()


async def order_state(sim: httpx.AsyncClient, order_id: str) -> str:
    return (await sim.get(f"{ORDERS}/{order_id}")).json()["state"]


async def pass_barrier(sim, callback_receiver, msisdn: str) -> None:
    """Submit a normal order after the ones under test and wait for its callback.

    Orders submitted earlier with the same delay would have called back before it, so when it
    has arrived, a missing callback is really missing (no timing guess involved).
    """
    barrier = (await submit(sim, f"barrier-{msisdn}", msisdn=msisdn)).json()
    await callback_receiver.wait_for(barrier["id"])


# --- activation, callback, idempotency -------------------------------------------------------


async def test_activation_is_acknowledged_then_completed_with_a_callback(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()

    response = await submit(sim, "ord-1", msisdn=msisdn)

    assert response.status_code == 201
    order = response.json()
    assert order["state"] == "acknowledged"
    assert order["externalId"] == "ord-1"
    assert order["@type"] == "ServiceOrder"
    assert order["href"].endswith(f"{ORDERS}/{order['id']}")
    assert order["serviceOrderItem"][0]["action"] == "add"
    assert (await service(sim, msisdn))["state"] == "inactive"

    callback = await callback_receiver.wait_for(order["id"])
    assert callback.path == "/oss/callbacks"
    assert callback.api_key == "test-callback-key"
    assert callback.body["eventType"] == "ServiceOrderStateChangeEvent"
    assert callback.body["eventId"] and callback.body["eventTime"]
    assert callback.order == {"id": order["id"], "href": order["href"], "externalId": "ord-1", "state": "completed"}

    fetched = (await sim.get(f"{ORDERS}/{order['id']}")).json()
    assert fetched["state"] == "completed"
    assert "completionDate" in fetched
    active = await service(sim, msisdn)
    assert active["state"] == "active"
    assert active["barring"] == "none"
    assert active["productOfferingId"] == "po-mobile-s"
    assert [entry["change"] for entry in active["history"]] == ["ordered", "activated"]


async def test_same_external_id_returns_the_same_order(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()

    first = await submit(sim, "ord-dup", msisdn=msisdn)
    second = await submit(sim, "ord-dup", msisdn=msisdn)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    listed = (await sim.get(ORDERS, params={"externalId": "ord-dup"})).json()
    assert [o["id"] for o in listed] == [first.json()["id"]]
    await callback_receiver.wait_for(first.json()["id"])
    # A replay after completion still returns the one order, now completed.
    third = await submit(sim, "ord-dup", msisdn=msisdn)
    assert (third.json()["id"], third.json()["state"]) == (first.json()["id"], "completed")
    assert len(callback_receiver.received(first.json()["id"])) == 1


async def test_external_id_reused_for_a_different_order_is_a_conflict(sim, new_msisdn):
    await submit(sim, "ord-reuse", msisdn=new_msisdn())

    response = await submit(sim, "ord-reuse", msisdn=new_msisdn())

    assert response.status_code == 409
    assert response.json()["code"] == "idempotencyConflict"


async def test_list_filters_by_state(sim, callback_receiver, new_msisdn):
    done = (await submit(sim, "ord-a", msisdn=new_msisdn())).json()
    await submit(sim, "ord-b", behaviour="no-callback", msisdn=new_msisdn())
    await callback_receiver.wait_for(done["id"])

    completed = (await sim.get(ORDERS, params={"state": "completed"})).json()

    assert [o["externalId"] for o in completed] == ["ord-a"]
    assert len((await sim.get("/sim/orders")).json()) == 2


# --- bad input -------------------------------------------------------------------------------


async def test_malformed_order_is_422_with_field_locations(sim):
    response = await sim.post(ORDERS, json={"externalId": "x", "serviceOrderItem": [{"id": "1", "action": "grow"}]})

    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert ("body", "serviceOrderItem", 0, "action") in locations
    assert ("body", "serviceOrderItem", 0, "service") in locations


@pytest.mark.parametrize(
    ("action", "characteristics", "code", "field"),
    [
        ("add", {"msisdn": ""}, "missingCharacteristic", "msisdn"),
        ("modify", {"msisdn": "4917000"}, "missingCharacteristic", "barring"),
        ("modify", {"msisdn": "4917000", "barring": "partial"}, "invalidCharacteristic", "barring"),
    ],
)
async def test_invalid_characteristics_are_400_with_a_reason(sim, action, characteristics, code, field):
    response = await submit(sim, "ord-bad", action, **characteristics)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code
    assert body["field"] == f"serviceOrderItem[0].service.serviceCharacteristic.{field}"
    assert body["reason"]
    assert (await sim.get("/sim/orders")).json() == []


async def test_unknown_behaviour_header_is_400(sim, new_msisdn):
    response = await submit(sim, "ord-h", behaviour="explode", msisdn=new_msisdn())

    assert response.status_code == 400
    assert response.json()["code"] == "invalidBehaviour"


async def test_unknown_order_is_404(sim):
    response = await sim.get(f"{ORDERS}/nope")

    assert response.status_code == 404
    assert response.json()["code"] == "notFound"


# --- failure injection by header ---------------------------------------------------------------


async def test_reject_header_answers_400_and_stores_a_rejected_order(sim, new_msisdn):
    msisdn = new_msisdn()

    response = await submit(sim, "ord-rej", behaviour="reject", msisdn=msisdn)

    assert response.status_code == 400
    assert response.json()["code"] == "rejected"
    assert response.json()["reason"]
    stored = (await sim.get(ORDERS, params={"externalId": "ord-rej"})).json()
    assert [o["state"] for o in stored] == ["rejected"]
    # The replay gets the same answer, not a fresh attempt.
    replay = await submit(sim, "ord-rej", msisdn=msisdn)
    assert (replay.status_code, replay.json()["code"]) == (400, "rejected")
    assert (await sim.get(f"/sim/services/{msisdn}")).status_code == 404


async def test_fail_header_fails_the_order_after_the_delay(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()

    order = (await submit(sim, "ord-fail", behaviour="fail", msisdn=msisdn)).json()

    assert order["state"] == "acknowledged"
    callback = await callback_receiver.wait_for(order["id"])
    assert callback.order["state"] == "failed"
    assert await order_state(sim, order["id"]) == "failed"
    assert (await service(sim, msisdn))["state"] == "inactive"


async def test_no_callback_header_leaves_the_order_in_progress(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()

    order = (await submit(sim, "ord-silent", behaviour="no-callback", msisdn=msisdn)).json()
    await pass_barrier(sim, callback_receiver, new_msisdn())

    assert order["state"] == "inProgress"
    assert callback_receiver.attempts(order["id"]) == []
    assert await order_state(sim, order["id"]) == "inProgress"
    assert (await service(sim, msisdn))["state"] == "inactive"


async def test_slow_header_delays_completion(sim, callback_receiver, new_msisdn):
    slow = (await submit(sim, "ord-slow", behaviour="slow:0.8", msisdn=new_msisdn())).json()

    await pass_barrier(sim, callback_receiver, new_msisdn())

    assert await order_state(sim, slow["id"]) == "inProgress"
    assert (await callback_receiver.wait_for(slow["id"])).order["state"] == "completed"


# --- failure injection by rule -----------------------------------------------------------------


async def test_rule_with_times_expires_after_its_matches(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    rule = await sim.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "fail", "times": 1})
    assert rule.status_code == 201
    assert (await sim.get("/sim/rules")).json()[0]["timesLeft"] == 1

    first = (await submit(sim, "ord-r1", msisdn=msisdn)).json()
    assert (await callback_receiver.wait_for(first["id"])).order["state"] == "failed"
    assert (await sim.get("/sim/rules")).json() == []

    second = (await submit(sim, "ord-r2", msisdn=msisdn)).json()
    assert (await callback_receiver.wait_for(second["id"])).order["state"] == "completed"


async def test_rule_without_times_matches_until_cleared(sim, new_msisdn):
    await sim.post("/sim/rules", json={"match": {"productOfferingId": "po-broken"}, "behaviour": "reject"})

    for n in range(2):
        response = await submit(sim, f"ord-p{n}", msisdn=new_msisdn(), productOfferingId="po-broken")
        assert response.status_code == 400
    other = await submit(sim, "ord-other", msisdn=new_msisdn())
    assert other.status_code == 201
    assert (await sim.get("/sim/rules")).json()[0]["matched"] == 2

    assert (await sim.delete("/sim/rules")).status_code == 204
    assert (await submit(sim, "ord-p3", msisdn=new_msisdn(), productOfferingId="po-broken")).status_code == 201


async def test_rule_matches_on_external_id_and_action(sim, callback_receiver, new_msisdn):
    await sim.post("/sim/rules", json={"match": {"externalId": "ord-x", "action": "add"}, "behaviour": "no-callback"})

    matched = (await submit(sim, "ord-x", msisdn=new_msisdn())).json()
    unmatched = (await submit(sim, "ord-y", msisdn=new_msisdn())).json()

    assert matched["state"] == "inProgress"
    assert unmatched["state"] == "acknowledged"


async def test_slow_rule_uses_its_delay(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    await sim.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "slow", "delaySeconds": 0.8})

    slow = (await submit(sim, "ord-slow-rule", msisdn=msisdn)).json()
    await pass_barrier(sim, callback_receiver, new_msisdn())

    assert await order_state(sim, slow["id"]) == "inProgress"
    assert (await callback_receiver.wait_for(slow["id"])).order["state"] == "completed"


async def test_unavailable_rule_answers_503_and_stores_nothing(sim, new_msisdn):
    msisdn = new_msisdn()
    await sim.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "unavailable", "times": 1})

    outage = await submit(sim, "ord-503", msisdn=msisdn)
    retry = await submit(sim, "ord-503", msisdn=msisdn)

    assert (outage.status_code, outage.json()["code"]) == (503, "unavailable")
    assert retry.status_code == 201


@pytest.mark.parametrize(
    "rule",
    [
        {"behaviour": "slow"},
        {"behaviour": "explode"},
        {"behaviour": "fail", "times": 0},
        {"match": {"msisdnn": "1"}, "behaviour": "fail"},
    ],
)
async def test_invalid_rules_are_422(sim, rule):
    response = await sim.post("/sim/rules", json=rule)

    assert response.status_code == 422
    assert response.json()["detail"]


# --- cancellation --------------------------------------------------------------------------------


async def test_cancel_before_completion_stops_the_activation(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    order = (await submit(sim, "ord-c", behaviour="slow:0.3", msisdn=msisdn)).json()

    response = await sim.post(CANCEL, json={"serviceOrder": {"id": order["id"]}, "cancellationReason": "customer"})

    assert response.status_code == 201
    cancellation = response.json()
    assert cancellation["state"] == "done"
    assert cancellation["serviceOrder"]["id"] == order["id"]
    assert cancellation["@type"] == "CancelServiceOrder"
    fetched = (await sim.get(f"{ORDERS}/{order['id']}")).json()
    assert fetched["state"] == "cancelled"
    assert fetched["cancellationReason"] == "customer"

    # Past the point where the slow order would have completed:
    slow_barrier = (await submit(sim, "barrier", behaviour="slow:0.3", msisdn=new_msisdn())).json()
    await callback_receiver.wait_for(slow_barrier["id"])
    assert callback_receiver.attempts(order["id"]) == []
    assert await order_state(sim, order["id"]) == "cancelled"
    assert (await service(sim, msisdn))["state"] == "inactive"


async def test_cancelling_twice_is_a_no_op(sim, new_msisdn):
    order = (await submit(sim, "ord-cc", behaviour="no-callback", msisdn=new_msisdn())).json()
    body = {"serviceOrder": {"id": order["id"]}, "cancellationReason": "compensation"}

    first = await sim.post(CANCEL, json=body)
    second = await sim.post(CANCEL, json=body)

    assert (first.status_code, second.status_code) == (201, 201)
    assert await order_state(sim, order["id"]) == "cancelled"
    fetched = await sim.get(f"{CANCEL}/{second.json()['id']}")
    assert fetched.json()["serviceOrder"]["id"] == order["id"]


async def test_cancelling_a_completed_activation_terminates_the_service(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    order = await activate(sim, callback_receiver, msisdn)

    response = await sim.post(CANCEL, json={"serviceOrder": {"id": order["id"]}, "cancellationReason": "saga"})

    assert response.status_code == 201
    assert await order_state(sim, order["id"]) == "cancelled"
    terminated = await service(sim, msisdn)
    assert terminated["state"] == "terminated"
    assert terminated["history"][-1]["change"] == "undone:add"


async def test_cancelling_an_unknown_order_is_404(sim):
    response = await sim.post(CANCEL, json={"serviceOrder": {"id": "missing"}})

    assert response.status_code == 404
    assert response.json()["code"] == "notFound"


# --- barring and termination -------------------------------------------------------------------


async def test_barring_is_applied_at_once_and_can_be_undone(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    await activate(sim, callback_receiver, msisdn)

    response = await submit(sim, "bar-1", "modify", msisdn=msisdn, barring="full")

    assert response.status_code == 201
    assert response.json()["state"] == "completed"
    assert (await service(sim, msisdn))["barring"] == "full"
    assert (await callback_receiver.wait_for(response.json()["id"])).order["state"] == "completed"

    await sim.post(CANCEL, json={"serviceOrder": {"id": response.json()["id"]}})
    assert (await service(sim, msisdn))["barring"] == "none"


async def test_barring_an_unknown_service_is_rejected(sim, new_msisdn):
    response = await submit(sim, "bar-x", "modify", msisdn=new_msisdn(), barring="outgoing")

    assert response.status_code == 400
    assert response.json()["code"] == "unknownService"
    assert (await sim.get(ORDERS, params={"externalId": "bar-x"})).json()[0]["state"] == "rejected"


async def test_activating_an_active_number_is_rejected(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    await activate(sim, callback_receiver, msisdn)

    response = await submit(sim, "act-again", msisdn=msisdn)

    assert response.status_code == 400
    assert response.json()["code"] == "serviceAlreadyActive"


async def test_delete_terminates_and_repeating_it_is_harmless(sim, callback_receiver, new_msisdn):
    msisdn = new_msisdn()
    await activate(sim, callback_receiver, msisdn)

    first = await submit(sim, "del-1", "delete", msisdn=msisdn)
    again = await submit(sim, "del-2", "delete", msisdn=msisdn)

    assert (first.json()["state"], again.json()["state"]) == ("completed", "completed")
    assert (await service(sim, msisdn))["state"] == "terminated"
    barring = await submit(sim, "bar-dead", "modify", msisdn=msisdn, barring="full")
    assert barring.json()["code"] == "serviceNotActive"


# --- callbacks -----------------------------------------------------------------------------------


async def test_callback_is_retried_on_5xx_with_the_same_event_id(sim, callback_receiver, new_msisdn):
    callback_receiver.fail_next = 2

    order = (await submit(sim, "ord-retry", msisdn=new_msisdn())).json()
    delivered = await callback_receiver.wait_for(order["id"])

    attempts = callback_receiver.attempts(order["id"])
    assert [a.answered for a in attempts] == [503, 503, 204]
    assert {a.body["eventId"] for a in attempts} == {delivered.body["eventId"]}


async def test_per_order_callback_url_overrides_the_configured_one(sim, callback_receiver, new_msisdn):
    body = order_body("ord-cb", msisdn=new_msisdn()) | {"callbackUrl": f"{callback_receiver.url}/elsewhere"}

    order = (await sim.post(ORDERS, json=body)).json()

    assert (await callback_receiver.wait_for(order["id"])).path == "/elsewhere"


async def test_reset_forgets_orders_services_and_rules(sim, new_msisdn):
    msisdn = new_msisdn()
    await submit(sim, "ord-r", msisdn=msisdn)
    await sim.post("/sim/rules", json={"behaviour": "fail"})

    assert (await sim.post("/sim/reset")).status_code == 204

    assert (await sim.get("/sim/orders")).json() == []
    assert (await sim.get("/sim/rules")).json() == []
    assert (await sim.get(f"/sim/services/{msisdn}")).status_code == 404


# --- the standalone server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_server_run_serves_the_simulator_configured_from_env(callback_receiver, wait_until, new_msisdn):
    port = free_port()
    env = os.environ | {
        "O2C_OSS_CALLBACK_URL": f"{callback_receiver.url}/from-env",
        "O2C_OSS_CALLBACK_API_KEY": "env-key",
        "O2C_OSS_SIM_DELAY_S": "0.05",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", f"from oss_sim.server import run; run('127.0.0.1', {port})"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def healthy() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, 15.0)
            order = (await client.post(ORDERS, json=order_body("ord-env", msisdn=new_msisdn()))).json()
            callback = await callback_receiver.wait_for(order["id"])
        assert (callback.path, callback.api_key) == ("/from-env", "env-key")
    finally:
        process.terminate()
        process.wait(timeout=10)
