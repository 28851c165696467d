"""activities.oss_orders.place_order against the real OSS simulator: completed, refused, OSS away."""
from __future__ import annotations

import uuid
from functools import partial

import pytest
from temporalio.exceptions import ApplicationError

from activities.oss_orders import place_order
from adapters.oss.http_client import HttpOssClient
from adapters.oss.port import OssRejected
from tests.support.billing import barring, open_account


async def test_an_order_is_completed_refused_or_retried(db_url, oss_sim, oss_http):
    account = await open_account(db_url, oss_http, ["mobile-s"])
    msisdn = account.products[0].msisdn
    oss = HttpOssClient(oss_sim.url)
    order = partial(oss.set_barring, external_id=f"test:{uuid.uuid4()}", msisdn=msisdn, barring="outgoing")
    assert await place_order(order) is None
    assert await barring(oss_http, msisdn) == "outgoing"

    await oss_http.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "reject"})
    refused = await place_order(partial(oss.set_barring, external_id=f"test:{uuid.uuid4()}", msisdn=msisdn, barring="full"))
    assert isinstance(refused, OssRejected)
    await oss_http.delete("/sim/rules")

    await oss_http.post("/sim/rules", json={"match": {"msisdn": msisdn}, "behaviour": "unavailable"})
    try:
        with pytest.raises(ApplicationError) as raised:
            await place_order(partial(oss.set_barring, external_id=f"test:{uuid.uuid4()}", msisdn=msisdn, barring="full"))
        assert raised.value.type == "OssUnavailable" and not raised.value.non_retryable
    finally:
        await oss_http.delete("/sim/rules")
    assert await barring(oss_http, msisdn) == "outgoing"
