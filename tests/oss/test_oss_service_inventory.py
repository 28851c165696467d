"""The simulator's TMF638 service inventory read and HttpOssClient.get_line (used by the OSS reconciliation)."""

import httpx
import pytest

from adapters.oss import LineState, OssNotFound, OssUnavailable
from adapters.oss.http_client import HttpOssClient


@pytest.fixture
def client(sim_url: str) -> HttpOssClient:
    return HttpOssClient(sim_url, timeout_s=5.0)


async def _completed(client, wait_until, ref) -> None:
    async def done() -> bool:
        return (await client.get_service_order(ref.id)).state == "completed"

    await wait_until(done)


async def test_a_line_reads_back_with_its_state_and_barring(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await _completed(client, wait_until, await client.submit_activation(external_id=f"act-{msisdn}", msisdn=msisdn, product_offering_id="po-1",
                                                                         customer_id="cust-1"))
    assert await client.get_line(msisdn) == LineState(msisdn=msisdn, state="active", barring="none")
    await _completed(client, wait_until, await client.set_barring(external_id=f"bar-{msisdn}", msisdn=msisdn, barring="outgoing"))
    assert await client.get_line(msisdn) == LineState(msisdn=msisdn, state="active", barring="outgoing")
    document = (await sim.get(f"/tmf-api/serviceInventory/v4/service/{msisdn}")).json()
    assert document["@type"] == "Service" and document["href"].endswith(f"/service/{msisdn}")


async def test_an_unknown_line_is_not_found(client, new_msisdn):
    with pytest.raises(OssNotFound):
        await client.get_line(new_msisdn())


async def test_an_unreadable_answer_is_treated_as_unavailable():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"serviceCharacteristic": "nonsense"}))
    with pytest.raises(OssUnavailable):
        await HttpOssClient("http://oss.test", transport=transport).get_line("4915100000000")
