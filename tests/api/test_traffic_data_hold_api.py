"""The complaint hold on a billing account (o2c extension of TMF666): `trafficDataHold` placed and released by PATCH,
shown on GET, audited and told in the account's events; while it is placed, the retention run keeps the account's
traffic data (services.traffic_retention)."""
from __future__ import annotations

from sqlmodel import select

from persistence.db import session_scope
from persistence.tables import AuditLog
from tests.api.conftest import ACCOUNT_PATH, CRM, SUPPORT, make_account


def _audit(db_url: str, request_id: str) -> AuditLog:
    with session_scope(db_url) as session:
        [entry] = session.exec(select(AuditLog).where(AuditLog.request_id == request_id)).all()
        return entry


async def test_a_hold_is_placed_shown_audited_and_released(client, db_url):
    account = await make_account(client)
    assert account["trafficDataHold"] is None
    href = f"{ACCOUNT_PATH}/{account['id']}"

    placed = await client.patch(href, headers={**CRM, "X-Reason": "complaint 4711"}, json={"trafficDataHold": {"reason": "Customer disputes R-2026-000123"}})
    assert placed.status_code == 200, placed.text
    hold = placed.json()["trafficDataHold"]
    assert hold["reason"] == "Customer disputes R-2026-000123" and hold["since"]
    assert (await client.get(href, headers=SUPPORT)).json()["trafficDataHold"] == hold
    entry = _audit(db_url, placed.headers["x-request-id"])
    assert entry.before == {"trafficDataHold": None} and entry.after == {"trafficDataHold": hold} and entry.reason == "complaint 4711"

    # A new reason keeps the hold's start; other fields leave it alone.
    reworded = (await client.patch(href, headers=CRM, json={"trafficDataHold": {"reason": "Complaint 4711 escalated"}})).json()["trafficDataHold"]
    assert reworded == {"reason": "Complaint 4711 escalated", "since": hold["since"]}
    assert (await client.patch(href, headers=CRM, json={"itemisedBill": True})).json()["trafficDataHold"] == reworded

    released = await client.patch(href, headers=CRM, json={"trafficDataHold": None})
    assert released.status_code == 200 and released.json()["trafficDataHold"] is None
    events = (await client.get(f"{href}/events", headers=SUPPORT)).json()
    kinds = [e["kind"] for e in events if e["kind"].startswith("traffic_data_hold")]
    assert sorted(kinds) == ["traffic_data_hold_placed", "traffic_data_hold_placed", "traffic_data_hold_released"]


async def test_bad_hold_input_is_422_and_support_may_not_place_one(client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    for body, field in (({"trafficDataHold": {}}, "trafficDataHold.reason"), ({"trafficDataHold": {"reason": ""}}, "trafficDataHold.reason"),
                        ({"trafficDataHold": {"reason": "x", "until": "2027"}}, "trafficDataHold.until")):
        response = await client.patch(href, headers=CRM, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] == field
    assert (await client.patch(href, headers=SUPPORT, json={"trafficDataHold": {"reason": "x"}})).status_code == 403
