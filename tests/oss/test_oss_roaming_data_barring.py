"""Roaming data barring in the OSS simulator and HttpOssClient: a flag beside the barring, set and lifted by a
TMF641 modify, idempotent by externalId, shown by the TMF638 service read, undone by a cancel, and left alone by
a normal barring change (and the other way round)."""

import pytest

from adapters.oss import LineState, OssRejected
from adapters.oss.http_client import HttpOssClient

ORDERS = "/tmf-api/serviceOrdering/v4"


@pytest.fixture
def client(sim_url: str) -> HttpOssClient:
    return HttpOssClient(sim_url, timeout_s=5.0)


async def _active_line(client, wait_until, msisdn: str) -> None:
    ref = await client.submit_activation(external_id=f"act-{msisdn}", msisdn=msisdn, product_offering_id="po-1", customer_id="cust-1")

    async def done() -> bool:
        return (await client.get_service_order(ref.id)).state == "completed"

    await wait_until(done)


def _roaming_characteristic(document: dict) -> object:
    return next(c["value"] for c in document["serviceCharacteristic"] if c["name"] == "roamingDataBarred")


async def test_roaming_data_is_barred_and_lifted_apart_from_the_barring(client, sim, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await _active_line(client, wait_until, msisdn)
    barred = await client.set_roaming_data_barring(external_id=f"roaming-cap:a:{msisdn}", msisdn=msisdn, barred=True)
    assert barred.state == "completed"
    assert await client.get_line(msisdn) == LineState(msisdn=msisdn, state="active", barring="none", roaming_data_barred=True)
    document = (await sim.get(f"/tmf-api/serviceInventory/v4/service/{msisdn}")).json()
    assert document["state"] == "active" and _roaming_characteristic(document) is True

    # A retried order (same externalId) is the same order and changes nothing more.
    again = await client.set_roaming_data_barring(external_id=f"roaming-cap:a:{msisdn}", msisdn=msisdn, barred=True)
    assert again.id == barred.id

    # Barring for arrears and lifting it again leave the roaming data barring as it is.
    await client.set_barring(external_id=f"bar:{msisdn}", msisdn=msisdn, barring="full")
    await client.set_barring(external_id=f"restore:{msisdn}", msisdn=msisdn, barring="none")
    assert (await client.get_line(msisdn)).roaming_data_barred is True

    await client.set_roaming_data_barring(external_id=f"roaming-cap:a:{msisdn}:lifted", msisdn=msisdn, barred=False)
    assert await client.get_line(msisdn) == LineState(msisdn=msisdn, state="active", barring="none", roaming_data_barred=False)


async def test_a_reused_external_id_for_the_other_direction_is_refused(client, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await _active_line(client, wait_until, msisdn)
    await client.set_roaming_data_barring(external_id=f"rc:{msisdn}", msisdn=msisdn, barred=True)
    with pytest.raises(OssRejected) as refused:
        await client.set_roaming_data_barring(external_id=f"rc:{msisdn}", msisdn=msisdn, barred=False)
    assert refused.value.code == "idempotencyConflict"
    assert (await client.get_line(msisdn)).roaming_data_barred is True


async def test_cancelling_a_completed_roaming_bar_undoes_it(client, wait_until, new_msisdn):
    msisdn = new_msisdn()
    await _active_line(client, wait_until, msisdn)
    ref = await client.set_roaming_data_barring(external_id=f"rc-undo:{msisdn}", msisdn=msisdn, barred=True)
    await client.cancel_service_order(service_order_id=ref.id, reason="test")
    assert (await client.get_line(msisdn)).roaming_data_barred is False


@pytest.mark.parametrize("characteristics, field", [
    ([{"name": "roamingDataBarred", "value": "yes"}], "roamingDataBarred"),
    ([{"name": "roamingDataBarred", "value": True}], "roamingDataBarred"),
    ([], "barring"),
])
async def test_a_bad_modify_is_400_with_a_code(sim, wait_until, new_msisdn, client, characteristics, field):
    msisdn = new_msisdn()
    await _active_line(client, wait_until, msisdn)
    body = {"externalId": f"bad-{msisdn}", "serviceOrderItem": [{"id": "1", "action": "modify", "service": {
        "serviceCharacteristic": [{"name": "msisdn", "value": msisdn}, *characteristics]}}]}
    response = await sim.post(f"{ORDERS}/serviceOrder", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] in ("invalidCharacteristic", "missingCharacteristic")
    assert response.json()["field"].endswith(field)
    assert (await client.get_line(msisdn)).roaming_data_barred is False
