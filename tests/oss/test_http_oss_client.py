"""HttpOssClient against the real simulator, and its error mapping at the transport edge."""

import pickle
import socket

import httpx
import pytest

from adapters.oss import OssClient, OssNotFound, OssRejected, OssUnavailable, ServiceOrderRef
from adapters.oss.http_client import HttpOssClient


@pytest.fixture
def client(sim_url: str) -> HttpOssClient:
    return HttpOssClient(sim_url, timeout_s=5.0)


async def service(sim: httpx.AsyncClient, msisdn: str) -> dict:
    return (await sim.get(f"/sim/services/{msisdn}")).json()


async def wait_completed(client: HttpOssClient, wait_until, ref: ServiceOrderRef) -> None:
    """Polls the order like o2c's fallback does when no callback arrives."""

    async def completed() -> bool:
        return (await client.get_service_order(ref.id)).state == "completed"

    await wait_until(completed)


async def activated(client: HttpOssClient, wait_until, msisdn: str) -> ServiceOrderRef:
    ref = await client.submit_activation(
        external_id=f"act-{msisdn}", msisdn=msisdn, product_offering_id="po-1", customer_id="cust-1"
    )
    await wait_completed(client, wait_until, ref)
    return ref


def test_it_implements_the_port(client):
    assert isinstance(client, OssClient)


async def test_activation_is_submitted_then_completes(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()

    ref = await client.submit_activation(
        external_id="o2c-ord-1", msisdn=msisdn, product_offering_id="po-1", customer_id="cust-9"
    )

    assert ref.external_id == "o2c-ord-1"
    assert ref.state == "acknowledged"
    await wait_completed(client, wait_until, ref)
    active = await service(sim, msisdn)
    assert (active["state"], active["customerId"]) == ("active", "cust-9")


async def test_resubmitting_with_the_same_external_id_returns_the_same_order(client, new_msisdn):
    msisdn = new_msisdn()
    kwargs = dict(external_id="o2c-ord-2", msisdn=msisdn, product_offering_id="po-1", customer_id="c")

    first = await client.submit_activation(**kwargs)
    second = await client.submit_activation(**kwargs)

    assert second.id == first.id


async def test_callback_url_is_sent_as_the_simulator_extension(sim_url, callback_receiver, new_msisdn):
    client = HttpOssClient(sim_url, callback_url=f"{callback_receiver.url}/o2c/oss-events")

    ref = await client.submit_activation(
        external_id="o2c-ord-cb", msisdn=new_msisdn(), product_offering_id="po-1", customer_id="c"
    )

    callback = await callback_receiver.wait_for(ref.id)
    assert callback.path == "/o2c/oss-events"
    assert callback.order["externalId"] == "o2c-ord-cb"


async def test_barring_is_set_and_idempotent_on_external_id(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await activated(client, wait_until, msisdn)

    first = await client.set_barring(external_id="bar-1", msisdn=msisdn, barring="outgoing")
    again = await client.set_barring(external_id="bar-1", msisdn=msisdn, barring="outgoing")

    assert first.state == "completed"
    assert again.id == first.id
    current = await service(sim, msisdn)
    assert current["barring"] == "outgoing"
    assert [h["change"] for h in current["history"]].count("barring:outgoing") == 1


async def test_terminate_service(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await activated(client, wait_until, msisdn)

    ref = await client.terminate_service(external_id="term-1", msisdn=msisdn)

    assert ref.state == "completed"
    assert (await service(sim, msisdn))["state"] == "terminated"


async def test_cancel_is_idempotent_and_undoes_a_completed_activation(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()
    ref = await activated(client, wait_until, msisdn)

    await client.cancel_service_order(service_order_id=ref.id, reason="saga compensation")
    await client.cancel_service_order(service_order_id=ref.id, reason="saga compensation")

    assert (await client.get_service_order(ref.id)).state == "cancelled"
    assert (await service(sim, msisdn))["state"] == "terminated"


async def test_business_rejection_raises_oss_rejected_with_the_reason(client, sim, new_msisdn):
    msisdn = new_msisdn()
    await sim.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "reject"})

    with pytest.raises(OssRejected) as rejected:
        await client.submit_activation(external_id="o2c-rej", msisdn=msisdn, product_offering_id="p", customer_id="c")

    assert rejected.value.code == "rejected"
    assert rejected.value.status_code == 400
    assert rejected.value.reason


async def test_barring_an_unknown_number_is_rejected(client, new_msisdn):
    with pytest.raises(OssRejected) as rejected:
        await client.set_barring(external_id="bar-x", msisdn=new_msisdn(), barring="full")

    assert rejected.value.code == "unknownService"


async def test_unknown_order_raises_oss_not_found(client):
    with pytest.raises(OssNotFound):
        await client.get_service_order("no-such-order")
    with pytest.raises(OssNotFound):
        await client.cancel_service_order(service_order_id="no-such-order", reason="x")


async def test_validation_error_is_a_rejection(client, new_msisdn):
    with pytest.raises(OssRejected) as rejected:
        await client.set_barring(external_id="bar-bad", msisdn=new_msisdn(), barring="sometimes")  # type: ignore[arg-type]

    assert rejected.value.code == "invalidCharacteristic"


async def test_5xx_raises_oss_unavailable(client, sim, new_msisdn):
    msisdn = new_msisdn()
    await sim.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "unavailable", "times": 1})
    kwargs = dict(external_id="o2c-503", msisdn=msisdn, product_offering_id="p", customer_id="c")

    with pytest.raises(OssUnavailable):
        await client.submit_activation(**kwargs)
    assert (await client.submit_activation(**kwargs)).state == "acknowledged"


async def test_closed_port_raises_oss_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = HttpOssClient(f"http://127.0.0.1:{closed_port}", timeout_s=2.0)

    with pytest.raises(OssUnavailable):
        await client.get_service_order("any")
    with pytest.raises(OssUnavailable):
        await client.cancel_service_order(service_order_id="any", reason="x")


def client_answering(handler) -> HttpOssClient:
    return HttpOssClient("http://oss.test", transport=httpx.MockTransport(handler))


async def test_timeout_raises_oss_unavailable():
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(OssUnavailable):
        await client_answering(time_out).get_service_order("any")


@pytest.mark.parametrize("status", [429, 502])
async def test_throttling_and_gateway_errors_are_retryable(status):
    with pytest.raises(OssUnavailable):
        await client_answering(lambda _r: httpx.Response(status, text="busy")).get_service_order("any")


async def test_unreadable_answer_raises_oss_unavailable():
    with pytest.raises(OssUnavailable):
        await client_answering(lambda _r: httpx.Response(200, json={"unexpected": True})).get_service_order("any")


async def test_non_json_4xx_still_becomes_a_rejection():
    with pytest.raises(OssRejected) as rejected:
        await client_answering(lambda _r: httpx.Response(403, text="forbidden")).get_service_order("any")

    assert (rejected.value.code, rejected.value.reason) == ("http403", "forbidden")


async def test_requests_use_the_tmf641_path_and_shape():
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "so-1", "externalId": "e-1", "state": "acknowledged"})

    ref = await client_answering(record).terminate_service(external_id="e-1", msisdn="4917")

    assert ref == ServiceOrderRef(id="so-1", external_id="e-1", state="acknowledged")
    assert str(seen[0].url) == "http://oss.test/tmf-api/serviceOrdering/v4/serviceOrder"
    body = httpx.Response(200, content=seen[0].content).json()
    assert body["externalId"] == "e-1"
    assert body["serviceOrderItem"][0]["action"] == "delete"
    assert body["serviceOrderItem"][0]["service"]["serviceCharacteristic"] == [{"name": "msisdn", "value": "4917"}]
    assert "callbackUrl" not in body


async def test_base_url_may_already_name_the_tmf641_path(sim_url, new_msisdn):
    client = HttpOssClient(f"{sim_url}/tmf-api/serviceOrdering/v4/")

    ref = await client.submit_activation(external_id="o2c-path", msisdn=new_msisdn(), product_offering_id="p", customer_id="c")

    assert (await client.get_service_order(ref.id)).id == ref.id


def test_rejection_survives_pickling():
    restored = pickle.loads(pickle.dumps(OssRejected("unknownService", "no such msisdn", status_code=400)))

    assert (restored.code, restored.reason) == ("unknownService", "no such msisdn")
    assert str(restored) == "unknownService: no such msisdn"
