"""The EU roaming data cap on a billing account (o2c extension of TMF666): `roamingDataCap.optOut` set at creation,
changed by PATCH (audited, recorded in the account's events), shown on GET; and the customer's request to continue
roaming data past the cut-off (POST .../roamingDataCap/continue), which signals the account's workflow."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import select

from adapters.temporal.client import WorkflowGateway
from persistence.db import session_scope
from persistence.tables import AuditLog
from tests.api.conftest import ACCOUNT_PATH, ADMIN, CRM, FINANCE, OSS, SUPPORT, TASK_QUEUE, make_account, new_msisdn, signals_received
from workflows.messages import SIGNAL_ROAMING_DATA_CONTINUE, ProductActivated, billing_account_workflow_id


def _audit(db_url: str, request_id: str) -> AuditLog:
    with session_scope(db_url) as session:
        [entry] = session.exec(select(AuditLog).where(AuditLog.request_id == request_id)).all()
        return entry


async def test_opt_out_is_set_at_creation_changed_by_patch_shown_and_audited(client, db_url):
    default = await make_account(client)
    assert default["roamingDataCap"] == {"optOut": False}
    account = await make_account(client, roamingDataCap={"optOut": True})
    assert account["roamingDataCap"] == {"optOut": True}
    href = f"{ACCOUNT_PATH}/{account['id']}"
    assert (await client.get(href, headers=SUPPORT)).json()["roamingDataCap"] == {"optOut": True}
    listed = (await client.get(ACCOUNT_PATH, headers=SUPPORT, params={"relatedParty.id": account["relatedParty"][0]["id"]})).json()
    assert [a["roamingDataCap"] for a in listed] == [{"optOut": True}]

    changed = await client.patch(href, headers={**CRM, "X-Reason": "customer wants the limit back"}, json={"roamingDataCap": {"optOut": False}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["roamingDataCap"] == {"optOut": False}
    entry = _audit(db_url, changed.headers["x-request-id"])
    assert entry.before == {"roamingDataCap": {"optOut": True}} and entry.after == {"roamingDataCap": {"optOut": False}}
    assert entry.reason == "customer wants the limit back" and entry.actor_role == "crm"

    again = await client.patch(href, headers=CRM, json={"roamingDataCap": {"optOut": False}})  # no change: no new event
    assert again.status_code == 200
    untouched = await client.patch(href, headers=CRM, json={"itemisedBill": True})  # absent: unchanged
    assert untouched.json()["roamingDataCap"] == {"optOut": False}
    events = (await client.get(f"{href}/events", headers=SUPPORT, params={"kind": "roaming_data_cap_changed"})).json()
    assert [e["message"] for e in events] == ["The EU roaming data limit applies again"]


async def test_bad_roaming_data_cap_input_is_422_with_a_code(client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    cases = [
        ({"roamingDataCap": None}, "roamingDataCap", "null"),
        ({"roamingDataCap": {}}, "roamingDataCap.optOut", None),
        ({"roamingDataCap": {"optOut": "yes"}}, "roamingDataCap.optOut", None),
        ({"roamingDataCap": {"optOut": True, "limit": 100}}, "roamingDataCap.limit", None),
    ]
    for body, field, code in cases:
        response = await client.patch(href, headers=CRM, json=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["errors"][0]
        assert error["field"] == field and error["code"], (body, response.text)
        if code is not None:
            assert error["code"] == code
    created = await client.post(ACCOUNT_PATH, headers=CRM, json={"name": "x", "relatedParty": [{"id": account["relatedParty"][0]["id"], "role": "customer"}],
                                                                 "roamingDataCap": {"optOut": 1}})
    assert created.status_code == 422 and created.json()["errors"][0]["field"] == "roamingDataCap.optOut"
    assert (await client.get(href, headers=SUPPORT)).json()["roamingDataCap"] == {"optOut": False}


async def test_only_account_writers_may_opt_out_or_continue(client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    for headers in (OSS, SUPPORT, FINANCE):
        assert (await client.patch(href, headers=headers, json={"roamingDataCap": {"optOut": True}})).status_code == 403
        assert (await client.post(f"{href}/roamingDataCap/continue", headers=headers, json={"reason": "x"})).status_code == 403
    assert (await client.patch(f"{ACCOUNT_PATH}/no-such-account", headers=CRM, json={"roamingDataCap": {"optOut": True}})).status_code == 404
    missing = await client.post(f"{ACCOUNT_PATH}/no-such-account/roamingDataCap/continue", headers=CRM, json={"reason": "x"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await client.get(href, headers=SUPPORT)).json()["roamingDataCap"] == {"optOut": False}


async def test_continue_signals_the_account_workflow_and_is_audited(client, db_url, temporal_client):
    account = await make_account(client)
    href = f"{ACCOUNT_PATH}/{account['id']}"
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 1001}, {"reason": "ok", "period": "next"}):
        response = await client.post(f"{href}/roamingDataCap/continue", headers=CRM, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] in ("reason", "period"), response.text

    # No workflow bills the account yet (no live product): there is nothing to continue.
    early = await client.post(f"{href}/roamingDataCap/continue", headers=CRM, json={"reason": "travelling"})
    assert early.status_code == 409 and early.json()["code"] == "billing_not_started", early.text

    # The account's workflow runs (started by its first product; no worker here, so the signal waits in its history).
    customer_id = account["relatedParty"][0]["id"]
    await WorkflowGateway(temporal_client, TASK_QUEUE).product_activated(account["id"], customer_id, ProductActivated(
        product_id=f"p-{account['id']}", msisdn=new_msisdn(), offering_id="mobile-s", activated_at=datetime.now(UTC)))
    response = await client.post(f"{href}/roamingDataCap/continue", headers={**ADMIN, "X-Request-ID": f"rc-{account['id']}"},
                                 json={"reason": "customer is in Zurich for a week"})
    assert response.status_code == 202, response.text
    assert response.json()["requestId"] == f"rc-{account['id']}" and response.json()["billingAccount"]["id"] == account["id"]
    signals = [payloads for name, payloads in await signals_received(temporal_client, billing_account_workflow_id(account["id"]))
               if name == SIGNAL_ROAMING_DATA_CONTINUE]
    assert len(signals) == 1
    [payload] = signals[0]
    assert payload == {"request_id": f"rc-{account['id']}", "reason": "customer is in Zurich for a week"}
    entry = _audit(db_url, f"rc-{account['id']}")
    assert entry.action == "billingAccount.roamingDataCap.continue" and entry.status == 202
    assert (entry.resource_type, entry.resource_id, entry.customer_id) == ("billingAccount", account["id"], customer_id)
    assert entry.reason == "customer is in Zurich for a week" and entry.actor_role == "admin"
    events = (await client.get(f"{href}/events", headers=SUPPORT, params={"kind": "roaming_data_cap.continue_requested"})).json()
    assert [e["message"] for e in events] == ["The customer asked to continue roaming data this cycle past the roaming data limit: "
                                              "customer is in Zurich for a week"]

    # Opting out while the workflow runs tells it too (a barring of this cycle is lifted); then continue has nothing to do.
    opted = await client.patch(href, headers=CRM, json={"roamingDataCap": {"optOut": True}})
    assert opted.status_code == 200, opted.text
    names = [name for name, _ in await signals_received(temporal_client, billing_account_workflow_id(account["id"]))]
    assert names.count(SIGNAL_ROAMING_DATA_CONTINUE) == 2
    refused = await client.post(f"{href}/roamingDataCap/continue", headers=CRM, json={"reason": "travelling"})
    assert refused.status_code == 409 and refused.json()["code"] == "roaming_data_cap_opted_out", refused.text
