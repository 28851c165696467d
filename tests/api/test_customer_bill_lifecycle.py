"""TMF678 customerBill beyond reading: credit notes (POST customerBill/{id}/creditNote), approval of onHold
drafts (PATCH state validated), the account's invoice hold, customerBillOnDemand, and billDocument links.
No worker runs: where the account's workflow must be told, a stand-in workflow's history shows the signal."""
from __future__ import annotations

import re
import uuid

from sqlmodel import select

from adapters.documents.facturx import extract_facturx_xml
from persistence.db import session_scope
from persistence.tables import BillOnDemand, Invoice, Payment
from tests.api.conftest import ACCOUNT_PATH, ADMIN, BILL_PATH, CRM, FINANCE, SUPPORT, TASK_QUEUE, make_account, signals_received
from tests.billing.support import at, issue

BILL_API = "/tmf-api/customerBillManagement/v4"
ON_DEMAND_PATH = f"{BILL_API}/customerBillOnDemand"


async def stand_in_workflow(temporal_client, account_id: str) -> str:
    workflow_id = f"billing-account-{account_id}"
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    return workflow_id


def key() -> dict:
    return {"Idempotency-Key": f"cn-{uuid.uuid4()}"}


# --- credit notes ---------------------------------------------------------------------------------


async def test_finance_issues_a_credit_note_once_per_key(client, db_url, temporal_client):
    account = await make_account(client)
    workflow_id = await stand_in_workflow(temporal_client, account["id"])
    invoice = issue(db_url, account["id"], at(2120), "9.99", "0.27")
    headers = {**FINANCE, **key()}
    body = {"reason": "Outage 3 days", "creditNoteItem": [{"lineNo": 1, "taxExcludedAmount": {"unit": "EUR", "value": "3.33"}}]}

    response = await client.post(f"{BILL_PATH}/{invoice.id}/creditNote", headers=headers, json=body)
    assert response.status_code == 201, response.text
    note = response.json()
    assert response.headers["Location"] == f"{BILL_PATH}/{note['id']}"
    assert (note["@type"], note["category"], note["runType"], note["state"]) == ("CustomerBill", "creditNote", "offCycle", "settled")
    assert re.fullmatch(r"CN-\d{4}-\d{6}", note["billNo"])  # the series of the year it is issued (now)
    assert note["taxIncludedAmount"] == {"unit": "EUR", "value": "-3.96"}
    assert note["taxExcludedAmount"] == {"unit": "EUR", "value": "-3.33"}
    assert note["creditedBill"] == {"id": invoice.id, "href": f"{BILL_PATH}/{invoice.id}", "@referredType": "CustomerBill", "billNo": invoice.number}
    assert note["creditReason"] == "Outage 3 days"
    assert (note["paymentDueDate"], note["remainingAmount"]["value"]) == (None, "0.00")  # nothing falls due on a credit note
    assert note["billDocument"] == [
        {"@type": "Attachment", "attachmentType": "creditNote", "name": f"{note['billNo']}.pdf",
         "url": f"{BILL_PATH}/{note['id']}/document.pdf", "mimeType": "application/pdf"},
        {"@type": "Attachment", "attachmentType": "creditNote", "name": f"{note['billNo']}.xml",
         "url": f"{BILL_PATH}/{note['id']}/document.xml", "mimeType": "application/xml"},
    ]
    assert note["@o2cIntegrity"]["contentHash"] and note["@o2cIntegrity"]["previousHash"]
    document = await client.get(note["billDocument"][0]["url"], headers=SUPPORT)
    assert document.status_code == 200 and document.content.startswith(b"%PDF")
    xml = await client.get(note["billDocument"][1]["url"], headers=SUPPORT)
    assert xml.status_code == 200 and xml.headers["content-type"] == "application/xml"
    assert b"<ram:TypeCode>381</ram:TypeCode>" in xml.content and extract_facturx_xml(document.content) == xml.content

    # The same key and body: the same credit note, nothing new.
    again = await client.post(f"{BILL_PATH}/{invoice.id}/creditNote", headers=headers, json=body)
    assert again.status_code == 200 and again.json() == note
    # The same key with another body is refused.
    other = await client.post(f"{BILL_PATH}/{invoice.id}/creditNote", headers=headers, json={**body, "reason": "else"})
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    # A correlatorId is a key too.
    body_key = {"reason": "Goodwill", "correlatorId": f"corr-{uuid.uuid4()}", "creditNoteItem": [{"lineNo": 2}]}
    first = await client.post(f"{BILL_PATH}/{invoice.id}/creditNote", headers=ADMIN, json=body_key)
    assert first.status_code == 201 and first.json()["taxExcludedAmount"]["value"] == "-0.27"
    assert (await client.post(f"{BILL_PATH}/{invoice.id}/creditNote", headers=ADMIN, json=body_key)).status_code == 200

    # The bill shows what is left to pay; the credit notes are listed by the bill they credit.
    bill = (await client.get(f"{BILL_PATH}/{invoice.id}", headers=FINANCE)).json()
    assert (bill["state"], bill["remainingAmount"]["value"]) == ("partiallyPaid", "7.93")  # 12.21 - 3.96 - 0.32
    listed = await client.get(BILL_PATH, headers=FINANCE, params={"creditedBill.id": invoice.id})
    assert sorted(b["billNo"] for b in listed.json()) == sorted([note["billNo"], first.json()["billNo"]])
    assert [b["category"] for b in (await client.get(BILL_PATH, headers=FINANCE, params={"billingAccount.id": account["id"], "category": "normal"})).json()] == ["normal"]
    with session_scope(db_url) as session:
        entries = session.exec(select(Payment).where(Payment.billing_account_id == account["id"]).order_by(Payment.amount_cents)).all()
    assert [(p.method, p.amount_cents, p.recorded_by) for p in entries] == [("credit_note", 32, "admin"), ("credit_note", 396, "finance")]

    # The account's workflow is told once per credit note, to apply it and e-mail it.
    signals = await signals_received(temporal_client, workflow_id)
    assert [(name, payload[0]["credit_note_id"], payload[0]["amount_cents"]) for name, payload in signals] == [
        ("credit_note_issued", note["id"], 396), ("credit_note_issued", first.json()["id"], 32)]


async def test_credit_note_refusals_are_machine_readable(client, db_url):
    account = await make_account(client)
    invoice = issue(db_url, account["id"], at(2121), "9.99")
    url = f"{BILL_PATH}/{invoice.id}/creditNote"

    too_much = await client.post(url, headers={**FINANCE, **key()},
                                 json={"reason": "x", "creditNoteItem": [{"lineNo": 1, "taxExcludedAmount": {"unit": "EUR", "value": "10.00"}}]})
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "credit_exceeds_remaining"
    assert "9.99" in too_much.json()["message"]
    unknown_line = await client.post(url, headers={**FINANCE, **key()}, json={"reason": "x", "creditNoteItem": [{"lineNo": 7}]})
    assert (unknown_line.status_code, unknown_line.json()["code"]) == (422, "unknown_bill_line")
    assert unknown_line.json()["errors"][0]["field"] == "creditNoteItem[0].lineNo"
    no_key = await client.post(url, headers=FINANCE, json={"reason": "x"})
    assert (no_key.status_code, no_key.json()["code"]) == (422, "idempotency_key_required")
    bad_amount = await client.post(url, headers={**FINANCE, **key()},
                                   json={"reason": "x", "creditNoteItem": [{"lineNo": 1, "taxExcludedAmount": {"unit": "EUR", "value": "1.001"}}]})
    assert bad_amount.status_code == 422
    assert bad_amount.json()["errors"][0]["code"] == "too_many_decimals"
    missing = await client.post(f"{BILL_PATH}/{uuid.uuid4()}/creditNote", headers={**FINANCE, **key()}, json={"reason": "x"})
    assert missing.status_code == 404
    # crm and support may not issue credit notes.
    assert (await client.post(url, headers={**CRM, **key()}, json={"reason": "x"})).status_code == 403
    assert (await client.post(url, headers={**SUPPORT, **key()}, json={"reason": "x"})).status_code == 403

    full = await client.post(url, headers={**FINANCE, **key()}, json={"reason": "Storno"})
    assert full.status_code == 201 and full.json()["taxIncludedAmount"]["value"] == "-11.89"
    nothing_left = await client.post(url, headers={**FINANCE, **key()}, json={"reason": "again"})
    assert (nothing_left.status_code, nothing_left.json()["code"]) == (409, "nothing_left_to_credit")
    with session_scope(db_url) as session:
        notes = session.exec(select(Invoice).where(Invoice.referenced_invoice_id == invoice.id)).all()
    assert len(notes) == 1


# --- onHold drafts and their approval ------------------------------------------------------------


async def test_invoice_hold_setting_and_approving_a_draft(client, db_url, temporal_client):
    account = await make_account(client)
    hold_url = f"{ACCOUNT_PATH}/{account['id']}/invoiceHold"
    assert (await client.get(hold_url, headers=SUPPORT)).json() == {"billingAccount": {"id": account["id"], "href": f"{ACCOUNT_PATH}/{account['id']}",
                                                                                      "@referredType": "BillingAccount"}, "invoiceHold": False}
    assert (await client.put(hold_url, headers=CRM, json={"invoiceHold": True})).status_code == 403
    turned_on = await client.put(hold_url, headers=FINANCE, json={"invoiceHold": True})
    assert turned_on.status_code == 200 and turned_on.json()["invoiceHold"] is True
    assert (await client.get(hold_url, headers=FINANCE)).json()["invoiceHold"] is True
    assert (await client.get(hold_url, headers=CRM)).status_code == 200
    assert (await client.put(f"{ACCOUNT_PATH}/{uuid.uuid4()}/invoiceHold", headers=FINANCE, json={"invoiceHold": True})).status_code == 404

    workflow_id = await stand_in_workflow(temporal_client, account["id"])
    draft = issue(db_url, account["id"], at(2122), "15.00", hold=True)
    shown = (await client.get(f"{BILL_PATH}/{draft.id}", headers=FINANCE)).json()
    assert (shown["state"], shown["billNo"], shown["billDate"], shown["billDocument"]) == ("onHold", None, None, [])
    assert (await client.get(f"{BILL_PATH}/{draft.id}/document.pdf", headers=FINANCE)).status_code == 404

    # Only "validated" may be set, and only by staff who write bills.
    assert (await client.patch(f"{BILL_PATH}/{draft.id}", headers=SUPPORT, json={"state": "validated"})).status_code == 403
    wrong = await client.patch(f"{BILL_PATH}/{draft.id}", headers=FINANCE, json={"state": "settled"})
    assert (wrong.status_code, wrong.json()["code"]) == (422, "state_not_settable")
    content = await client.patch(f"{BILL_PATH}/{draft.id}", headers=ADMIN, json={"state": "validated", "amountDue": {"unit": "EUR", "value": "1.00"}})
    assert (content.status_code, content.json()["errors"][0]["code"]) == (422, "read_only_field")
    approved = await client.patch(f"{BILL_PATH}/{draft.id}", headers=FINANCE, json={"state": "validated"})
    assert approved.status_code == 200, approved.text
    bill = approved.json()
    assert bill["state"] == "validated" and bill["billNo"].startswith("INV-") and bill["billDate"]
    assert bill["billDocument"][0]["url"] == f"{BILL_PATH}/{draft.id}/document.pdf"
    assert (await client.get(bill["billDocument"][0]["url"], headers=FINANCE)).content.startswith(b"%PDF")
    # Approving again changes nothing and tells nobody again.
    again = await client.patch(f"{BILL_PATH}/{draft.id}", headers=FINANCE, json={"state": "validated"})
    assert again.status_code == 200 and again.json() == bill
    assert await signals_received(temporal_client, workflow_id) == [("invoice_approved", [{"invoice_id": draft.id}])]

    issued = issue(db_url, account["id"], at(2122, 1), "1.00")
    not_held = await client.patch(f"{BILL_PATH}/{issued.id}", headers=FINANCE, json={"state": "validated"})
    assert (not_held.status_code, not_held.json()["code"]) == (409, "invalid_state_transition")
    events = (await client.get(f"{ACCOUNT_PATH}/{account['id']}/events", headers=SUPPORT, params={"kind": "invoice.approved"})).json()
    assert [e["data"]["number"] for e in events] == [bill["billNo"]]


# --- customerBillOnDemand ------------------------------------------------------------------------


async def test_bill_on_demand_is_handed_to_the_account_workflow_once(client, db_url, temporal_client):
    account = await make_account(client)
    workflow_id = await stand_in_workflow(temporal_client, account["id"])
    body = {"billingAccount": {"id": account["id"]}, "name": "Final bill", "description": "Contract terminated"}
    headers = {**FINANCE, "Idempotency-Key": f"od-{uuid.uuid4()}"}
    response = await client.post(ON_DEMAND_PATH, headers=headers, json=body)
    assert response.status_code == 201, response.text
    request = response.json()
    assert (request["@type"], request["state"], request["name"], request["customerBill"]) == ("CustomerBillOnDemand", "inProgress", "Final bill", None)
    assert request["billingAccount"]["id"] == account["id"] and request["relatedParty"]["role"] == "customer"
    assert response.headers["Location"] == f"{ON_DEMAND_PATH}/{request['id']}"

    again = await client.post(ON_DEMAND_PATH, headers=headers, json=body)
    assert again.status_code == 200 and again.json()["id"] == request["id"]
    changed = await client.post(ON_DEMAND_PATH, headers=headers, json={**body, "name": "other"})
    assert (changed.status_code, changed.json()["code"]) == (409, "idempotency_key_reused")
    assert await signals_received(temporal_client, workflow_id) == [("bill_on_demand", [{"request_id": request["id"]}])]

    # What the workflow's activity leaves behind is what GET shows.
    invoice = issue(db_url, account["id"], at(2123), "4.00")
    with session_scope(db_url) as session:
        row = session.get(BillOnDemand, request["id"])
        row.state, row.invoice_id = "done", invoice.id
        session.add(row)
    done = (await client.get(f"{ON_DEMAND_PATH}/{request['id']}", headers=SUPPORT)).json()
    assert done["state"] == "done"
    assert done["customerBill"] == {"id": invoice.id, "href": f"{BILL_PATH}/{invoice.id}", "@referredType": "CustomerBill"}
    listed = await client.get(ON_DEMAND_PATH, headers=FINANCE, params={"billingAccount.id": account["id"]})
    assert [r["id"] for r in listed.json()] == [request["id"]]


async def test_bill_on_demand_refusals(client):
    account = await make_account(client)  # no product was ever activated: no billing workflow runs
    response = await client.post(ON_DEMAND_PATH, headers=FINANCE, json={"billingAccount": {"id": account["id"]}})
    assert response.status_code == 201
    assert (response.json()["state"], response.json()["stateReason"].split(":")[0]) == ("rejected", "nothing_to_bill")
    unknown = await client.post(ON_DEMAND_PATH, headers=FINANCE, json={"billingAccount": {"id": "nope"}})
    assert (unknown.status_code, unknown.json()["errors"][0]["code"]) == (422, "unknown_billing_account")
    assert (await client.post(ON_DEMAND_PATH, headers=CRM, json={"billingAccount": {"id": account["id"]}})).status_code == 403
    assert (await client.get(f"{ON_DEMAND_PATH}/{uuid.uuid4()}", headers=FINANCE)).status_code == 404
