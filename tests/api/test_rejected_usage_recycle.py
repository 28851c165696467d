"""Recycling rejected usage (TMF635 `recycled`): after a fix a rejected record is read again and
rated; a record recycled already is a no-op; one that is still bad stays rejected with its new
reason and the history of its attempts; CDR-file lines are read again with their file's settings."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from sqlmodel import col, select

from mediation.importer import import_file
from persistence.db import session_scope
from persistence.tables import AllowanceCounter, RejectedUsage, RejectedUsageRecycle
from tests.api.conftest import (
    ADMIN,
    CRM,
    FINANCE,
    REJECTED_PATH,
    SUPPORT,
    USAGE_PATH,
    insert_product,
    make_account,
    new_msisdn,
    utc,
)
from tests.api.test_usage import rated, record
from tests.mediation.test_importer import asterisk_line, write

RECYCLE_PATH = f"{REJECTED_PATH}/recycle"


def now() -> datetime:
    return datetime.now(timezone.utc)


async def rejected_ids(client, record_id: str) -> list[int]:
    listed = await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": record_id})
    assert listed.status_code == 200, listed.text
    return [int(r["id"]) for r in listed.json()]


async def post_rejected(client, body: dict, reason_code: str) -> int:
    """Post a usage record that is rejected for `reason_code`; the id of its rejected record."""
    response = await client.post(USAGE_PATH, headers=CRM, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == reason_code
    [rejected_id] = await rejected_ids(client, body["id"])
    return rejected_id


async def recycle(client, headers=SUPPORT, **body) -> dict:
    response = await client.post(RECYCLE_PATH, headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def rejected(client, rejected_id: int) -> dict:
    response = await client.get(f"{REJECTED_PATH}/{rejected_id}", headers=SUPPORT)
    assert response.status_code == 200, response.text
    return response.json()


async def test_unknown_subscriber_is_recycled_once_the_product_exists_and_only_once(client, db_url):
    account = await make_account(client)
    msisdn = new_msisdn()
    body = record(msisdn, duration=61)
    rejected_id = await post_rejected(client, body, "unknown_subscriber")
    before = await rejected(client, rejected_id)
    assert (before["status"], before["currentReasonCode"], before["recycleAttempt"]) == ("rejected", "unknown_subscriber", [])

    product_id = insert_product(db_url, account, msisdn, start=utc(2025, 12, 1))
    summary = await recycle(client, ids=[str(rejected_id)])
    assert (summary["accepted"], summary["rejected"], summary["alreadyRecycled"]) == (1, 0, 0)
    [result] = summary["results"]
    assert result["id"] == str(rejected_id)
    assert (result["result"], result["status"], result["usage"]["id"]) == ("accepted", "recycled", body["id"])

    usage = (await client.get(f"{USAGE_PATH}/{body['id']}", headers=SUPPORT)).json()
    assert usage["status"] == "rated"
    line = rated(usage)
    assert line["productRef"]["id"] == product_id
    assert (line["@o2cUnits"], line["@o2cAllowanceUnits"], line["@o2cChargeableUnits"]) == (2, 2, 0)

    after = await rejected(client, rejected_id)
    assert after["status"] == "recycled"
    assert (after["reasonCode"], after["payload"]) == ("unknown_subscriber", body)  # as received, never rewritten
    assert after["currentReasonCode"] is None
    [attempt] = after["recycleAttempt"]
    assert (attempt["outcome"], attempt["usage"]["id"], attempt["recycledBy"], attempt["reasonCode"]) == ("accepted", body["id"], "support", None)

    # Again: a no-op reported as such, nothing rated twice, no new attempt.
    again = await recycle(client, headers=ADMIN, ids=[rejected_id])
    assert (again["accepted"], again["alreadyRecycled"]) == (0, 1)
    assert (again["results"][0]["result"], again["results"][0]["usage"]["id"]) == ("alreadyRecycled", body["id"])
    assert len((await rejected(client, rejected_id))["recycleAttempt"]) == 1
    with session_scope(db_url) as session:
        counter = session.exec(select(AllowanceCounter).where(AllowanceCounter.product_id == product_id)).one()
    assert counter.voice_minutes == 2
    assert await rejected_ids(client, body["id"]) == [rejected_id]
    # The list shows the derived status too, not the status at the time of receipt.
    listed = (await client.get(REJECTED_PATH, headers=SUPPORT, params={"recordId": body["id"]})).json()
    assert [r["status"] for r in listed] == ["recycled"]


async def test_a_record_still_bad_stays_rejected_with_its_new_reason_and_history(client, db_url):
    account = await make_account(client)
    msisdn = new_msisdn()
    body = record(msisdn, "sms", when="2026-02-10T10:00:00+01:00", messages=1)
    rejected_id = await post_rejected(client, body, "unknown_subscriber")

    # The product created for the number starts after the message was sent: rejected again, for that.
    insert_product(db_url, account, msisdn, start=utc(2026, 3, 1))
    summary = await recycle(client, ids=[rejected_id])
    [result] = summary["results"]
    assert (result["result"], result["status"], result["reasonCode"], result["usage"]) == ("rejected", "rejected", "outside_subscription", None)
    assert msisdn in result["reason"]
    second = (await recycle(client, ids=[rejected_id]))["results"][0]
    assert second["reasonCode"] == "outside_subscription"

    view = await rejected(client, rejected_id)
    assert view["status"] == "rejected"
    assert (view["reasonCode"], view["currentReasonCode"]) == ("unknown_subscriber", "outside_subscription")
    assert [(a["outcome"], a["reasonCode"]) for a in view["recycleAttempt"]] == [("rejected", "outside_subscription")] * 2
    # Still one rejected record, not a new copy per attempt, and nothing rated.
    assert await rejected_ids(client, body["id"]) == [rejected_id]
    assert (await client.get(f"{USAGE_PATH}/{body['id']}", headers=SUPPORT)).status_code == 404


async def test_recycle_by_reason_takes_the_records_still_rejected_for_it(client, db_url):
    since = now()
    account = await make_account(client)
    fixed, unfixed = new_msisdn(), new_msisdn()
    fixed_body, unfixed_body = record(fixed, duration=30), record(unfixed, duration=30)
    fixed_id = await post_rejected(client, fixed_body, "unknown_subscriber")
    unfixed_id = await post_rejected(client, unfixed_body, "unknown_subscriber")
    insert_product(db_url, account, fixed, start=utc(2025, 12, 1))

    summary = await recycle(client, reasonCode="unknown_subscriber", since=since.isoformat())
    assert summary["more"] is False
    assert [(r["id"], r["result"]) for r in summary["results"]] == [(str(fixed_id), "accepted"), (str(unfixed_id), "rejected")]
    assert (await client.get(f"{USAGE_PATH}/{fixed_body['id']}", headers=SUPPORT)).json()["status"] == "rated"

    # The recycled record is not taken again; the other one is, until it is fixed.
    insert_product(db_url, account, unfixed, start=utc(2025, 12, 1))
    again = await recycle(client, reasonCode="unknown_subscriber", since=since.isoformat())
    assert [(r["id"], r["result"]) for r in again["results"]] == [(str(unfixed_id), "accepted")]
    assert (await recycle(client, reasonCode="unknown_subscriber", since=since.isoformat()))["results"] == []


async def test_a_record_stored_meanwhile_is_recycled_as_a_duplicate(client, db_url):
    account = await make_account(client)
    msisdn = new_msisdn()
    body = record(msisdn, duration=60)
    rejected_id = await post_rejected(client, body, "unknown_subscriber")
    insert_product(db_url, account, msisdn, start=utc(2025, 12, 1))
    assert (await client.post(USAGE_PATH, headers=CRM, json=body)).status_code == 201  # the source sent it again

    [result] = (await recycle(client, ids=[rejected_id]))["results"]
    assert (result["result"], result["status"], result["usage"]["id"]) == ("duplicate", "recycled", body["id"])


async def test_cdr_file_rejections_are_read_again_with_their_files_settings(app, client, db_url, tmp_path):
    account = await make_account(client)
    known, unknown = new_msisdn(), new_msisdn()
    insert_product(db_url, account, known, start=now() - timedelta(days=30))
    source, call_id = f"pbx-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    started = now().replace(microsecond=0) - timedelta(days=1)
    path = write(tmp_path, "Master.csv", [
        asterisk_line(known, uuid.uuid4().hex, started, 30),
        asterisk_line(unknown, call_id, started, 61),
        "not,a,cdr",
    ])
    # A caller name in Latin-1: kept as "\xe4" text; read again, it must still be the byte, not the text.
    latin1 = asterisk_line(known, uuid.uuid4().hex, started, 30).replace("Kunde", "K\u00e4nde").encode("latin-1")
    path.write_bytes(path.read_bytes() + latin1 + b"\n")
    context = app.state.o2c
    report = import_file(db_url, path, catalog=context.catalog, profiles=context.profiles, source=source)
    assert (report.status, report.accepted, report.rejected_rating, report.rejected_parse) == ("done", 1, 1, 2)

    record_id = f"{source}:{call_id}"
    [unknown_id] = await rejected_ids(client, record_id)
    with session_scope(db_url) as session:
        unreadable = {r.reason_code: r.id for r in session.exec(select(RejectedUsage).where(col(RejectedUsage.record_id).is_(None)))
                      if r.payload.get("fileSha256") == report.sha256}
    assert set(unreadable) == {"wrong_column_count", "not_utf8"}

    product_id = insert_product(db_url, account, unknown, start=now() - timedelta(days=30))
    summary = await recycle(client, ids=[unknown_id, unreadable["wrong_column_count"], unreadable["not_utf8"]])
    accepted, unread, not_utf8 = summary["results"]
    assert (accepted["result"], accepted["status"], accepted["usage"]["id"]) == ("accepted", "recycled", record_id)
    assert (unread["result"], unread["reasonCode"], unread["recordId"]) == ("rejected", "wrong_column_count", None)
    assert (not_utf8["result"], not_utf8["reasonCode"]) == ("rejected", "not_utf8")

    usage = (await client.get(f"{USAGE_PATH}/{record_id}", headers=SUPPORT)).json()
    assert usage["status"] == "rated"
    assert usage["usageDate"] == started.isoformat().replace("+00:00", "Z")
    assert rated(usage)["productRef"]["id"] == product_id
    assert rated(usage)["@o2cUnits"] == 2  # 61 billable seconds: 2 started minutes
    with session_scope(db_url) as session:
        attempts = session.exec(select(RejectedUsageRecycle).where(RejectedUsageRecycle.rejected_id == unreadable["wrong_column_count"])).all()
    assert [(a.outcome, a.new_reason_code) for a in attempts] == [("rejected", "wrong_column_count")]


async def test_only_support_and_admin_may_recycle(client):
    get_path = f"{REJECTED_PATH}/1"
    for method, path, body in (("GET", get_path, None), ("POST", RECYCLE_PATH, {"ids": ["1"]})):
        assert (await client.request(method, path, json=body)).status_code == 401
        assert (await client.request(method, path, json=body, headers={"X-API-Key": "wrong"})).status_code == 401
        for role in (CRM, FINANCE):
            denied = await client.request(method, path, json=body, headers=role)
            assert denied.status_code == 403
            assert denied.json()["code"] == "forbidden"

    nothing = await recycle(client, headers=ADMIN, ids=["2147483647"])
    assert [(r["result"], r["status"]) for r in nothing["results"]] == [("notFound", None)]
    assert (await client.get(f"{REJECTED_PATH}/2147483647", headers=SUPPORT)).status_code == 404
    assert (await client.get(f"{REJECTED_PATH}/99999999999", headers=SUPPORT)).status_code == 404
    assert (await client.get(f"{REJECTED_PATH}/recycle", headers=SUPPORT)).status_code == 404


async def test_a_recycle_request_names_ids_or_a_reason(client):
    def codes(response) -> set[str]:
        assert response.status_code == 422, response.text
        return {e["code"] for e in response.json()["errors"]}

    assert codes(await client.post(RECYCLE_PATH, headers=SUPPORT, json={})) == {"invalid_selection"}
    assert codes(await client.post(RECYCLE_PATH, headers=SUPPORT, json={"ids": [1], "reasonCode": "unknown_subscriber"})) == {"invalid_selection"}
    assert codes(await client.post(RECYCLE_PATH, headers=SUPPORT, json={"ids": [1], "since": "2026-01-01T00:00:00Z"})) == {"invalid_selection"}
    assert codes(await client.post(RECYCLE_PATH, headers=SUPPORT, json={"ids": ["abc", 0]})) == {"invalid_id"}
    assert codes(await client.post(RECYCLE_PATH, headers=SUPPORT, json={"reasonCode": "x", "since": "2026-01-01T00:00:00"})) == {"naive_datetime"}
