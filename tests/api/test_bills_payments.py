"""TMF678 customer bills (read-only) and TMF676 manual payments."""
from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from domain.invoicing import ChargeLine, compute_invoice
from domain.money import to_minor
from persistence.db import session_scope
from persistence.tables import Invoice, Payment
from sqlmodel import select
from tests.api.conftest import (
    ADMIN,
    BILL_PATH,
    CRM,
    FINANCE,
    PAYMENT_PATH,
    SUPPORT,
    TASK_QUEUE,
    make_account,
    signals_received,
    utc,
)

PDF = b"%PDF-1.7\n% o2c test invoice\n%%EOF\n"


def insert_invoice(db_url: str, account: dict, *, pdf: bytes | None = PDF, state: str = "new", xml: bytes | None = None) -> Invoice:
    computed = compute_invoice(
        [
            ChargeLine(kind="recurring", description="Mobile S, February 2026", unit="MON", unit_price=Decimal("9.99"), net_amount=Decimal("9.99"),
                       period_start=date(2026, 2, 1), period_end=date(2026, 3, 1), product_id="p-1"),
            ChargeLine(kind="usage", description="Voice beyond allowance", quantity=Decimal(3), unit="MIN", unit_price=Decimal("0.09"),
                       net_amount=Decimal("0.27"), product_id="p-1"),
        ]
    )
    totals = computed.totals
    invoice = Invoice(
        id=str(uuid.uuid4()),
        number=f"T-2026-{uuid.uuid4().hex[:8]}",
        billing_account_id=account["id"],
        customer_id=account["relatedParty"][0]["id"],
        state=state,
        period_start=utc(2026, 1, 31, 23),
        period_end=utc(2026, 2, 28, 23),
        local_period_start=date(2026, 2, 1),
        local_period_end=date(2026, 3, 1),
        issued_at=utc(2026, 3, 1, 6),
        due_at=utc(2026, 3, 15, 6),
        net_cents=to_minor(totals.net_total),
        vat_cents=to_minor(totals.vat_total),
        gross_cents=to_minor(totals.gross_total),
        paid_cents=500,
        lines=[line.model_dump(mode="json") for line in computed.lines],
        vat_breakdown=[v.model_dump(mode="json") for v in totals.vat_breakdown],
        pdf=pdf,
        xml=xml,
    )
    with session_scope(db_url) as session:
        session.add(invoice)
    return invoice


async def test_bill_representation_and_document(client, db_url):
    account = await make_account(client)
    invoice = insert_invoice(db_url, account)

    response = await client.get(f"{BILL_PATH}/{invoice.id}", headers=FINANCE)
    assert response.status_code == 200, response.text
    bill = response.json()
    assert bill["@type"] == "CustomerBill"
    assert bill["billNo"] == invoice.number
    assert bill["billDate"] == "2026-03-01T06:00:00Z"
    assert bill["paymentDueDate"] == "2026-03-15T06:00:00Z"
    assert bill["billingPeriod"] == {"startDateTime": "2026-01-31T23:00:00Z", "endDateTime": "2026-02-28T23:00:00Z"}
    assert bill["taxExcludedAmount"] == {"unit": "EUR", "value": "10.26"}
    assert bill["taxIncludedAmount"] == {"unit": "EUR", "value": "12.21"}  # 10.26 + 1.95 VAT
    assert bill["amountDue"]["value"] == "12.21"
    assert bill["remainingAmount"]["value"] == "7.21"
    assert bill["taxItem"] == [
        {"taxCategory": "VAT", "vatCategory": "S", "taxRate": "19", "taxAmount": {"unit": "EUR", "value": "1.95"},
         "taxableAmount": {"unit": "EUR", "value": "10.26"}}
    ]
    assert bill["billingAccount"]["id"] == account["id"]
    assert bill["billDocument"][0]["url"] == f"{BILL_PATH}/{invoice.id}/document.pdf"
    assert bill["billDocument"][0]["mimeType"] == "application/pdf"
    lines = bill["@lines"]
    assert [(l["lineNo"], l["type"], l["taxExcludedAmount"]["value"]) for l in lines] == [(1, "recurring", "9.99"), (2, "usage", "0.27")]
    assert lines[1]["unitPrice"] == {"unit": "EUR", "value": "0.09"}

    document = await client.get(bill["billDocument"][0]["url"], headers=SUPPORT)
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/pdf"
    assert document.content == PDF

    listed = await client.get(BILL_PATH, headers=FINANCE, params={"billingAccount.id": account["id"]})
    assert [b["id"] for b in listed.json()] == [invoice.id]
    assert listed.json()[0]["billDocument"][0]["url"].endswith("/document.pdf")
    assert (await client.get(BILL_PATH, headers=FINANCE, params={"billingAccount.id": account["id"], "state": "settled"})).json() == []

    # Bills are read-only for clients.
    assert (await client.post(BILL_PATH, headers=ADMIN, json={})).status_code == 405
    assert (await client.get(BILL_PATH, headers=CRM)).status_code == 403


async def test_the_xml_is_a_second_bill_document(client, db_url):
    account = await make_account(client)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"/>\n'
    invoice = insert_invoice(db_url, account, xml=xml)

    bill = (await client.get(f"{BILL_PATH}/{invoice.id}", headers=FINANCE)).json()
    assert [(d["name"], d["mimeType"], d["url"]) for d in bill["billDocument"]] == [
        (f"{invoice.number}.pdf", "application/pdf", f"{BILL_PATH}/{invoice.id}/document.pdf"),
        (f"{invoice.number}.xml", "application/xml", f"{BILL_PATH}/{invoice.id}/document.xml"),
    ]
    document = await client.get(bill["billDocument"][1]["url"], headers=SUPPORT)
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/xml"
    assert document.headers["content-disposition"] == f'attachment; filename="{invoice.number}.xml"'
    assert document.content == xml
    listed = (await client.get(BILL_PATH, headers=FINANCE, params={"billingAccount.id": account["id"]})).json()
    assert [d["mimeType"] for d in listed[0]["billDocument"]] == ["application/pdf", "application/xml"]
    assert (await client.get(f"{BILL_PATH}/{invoice.id}/document.xml", headers=CRM)).status_code == 403

    # A document without XML (issued before e-invoicing) lists the PDF only, and its XML is 404.
    older = insert_invoice(db_url, await make_account(client))
    assert [d["mimeType"] for d in (await client.get(f"{BILL_PATH}/{older.id}", headers=FINANCE)).json()["billDocument"]] == ["application/pdf"]
    assert (await client.get(f"{BILL_PATH}/{older.id}/document.xml", headers=FINANCE)).status_code == 404


async def test_missing_bill_is_404_and_a_document_being_rendered_is_409(client, db_url):
    account = await make_account(client)
    # Numbered, not yet rendered and sealed (that follows the number within seconds): ask again, not "gone".
    without_pdf = insert_invoice(db_url, account, pdf=None)
    assert (await client.get(f"{BILL_PATH}/{without_pdf.id}", headers=FINANCE)).json()["billDocument"] == []
    for document in ("document.pdf", "document.xml"):
        not_ready = await client.get(f"{BILL_PATH}/{without_pdf.id}/{document}", headers=FINANCE)
        assert (not_ready.status_code, not_ready.json()["code"]) == (409, "document_not_ready")
    assert (await client.get(f"{BILL_PATH}/{uuid.uuid4()}", headers=FINANCE)).status_code == 404
    assert (await client.get(f"{BILL_PATH}/{uuid.uuid4()}/document.pdf", headers=FINANCE)).status_code == 404


def payment_body(account_id: str, value: object = "12.34", **extra: object) -> dict:
    return {
        "correlatorId": f"bank-{uuid.uuid4()}",
        "account": {"id": account_id},
        "totalAmount": {"unit": "EUR", "value": value},
        "paymentMethod": {"@type": "bankTransfer"},
        "description": "Überweisung 2026-03-02",
        **extra,
    }


async def test_manual_payment_is_idempotent_on_correlator_id(client, db_url):
    account = await make_account(client)
    body = payment_body(account["id"])
    first = await client.post(PAYMENT_PATH, headers=FINANCE, json=body)
    # No billing-account workflow runs yet: the payment is kept anyway.
    assert first.status_code == 201, first.text
    payment = first.json()
    assert payment["@type"] == "Payment"
    assert payment["correlatorId"] == body["correlatorId"]
    assert payment["status"] == "succeeded"
    assert payment["totalAmount"] == {"unit": "EUR", "value": "12.34"}
    assert payment["paymentMethod"] == {"@type": "bankTransfer"}
    assert payment["account"]["id"] == account["id"]
    assert payment["recordedBy"] == "finance"

    again = await client.post(PAYMENT_PATH, headers=ADMIN, json=body)
    assert again.status_code == 200
    assert again.json() == payment

    changed = await client.post(PAYMENT_PATH, headers=FINANCE, json={**body, "totalAmount": {"unit": "EUR", "value": "12.35"}})
    assert changed.status_code == 409
    assert changed.json()["code"] == "correlator_id_reused"

    with session_scope(db_url) as session:
        rows = session.exec(select(Payment).where(Payment.billing_account_id == account["id"])).all()
    assert [(r.amount_cents, r.method, r.recorded_by) for r in rows] == [(1234, "bank_transfer", "finance")]

    assert (await client.get(f"{PAYMENT_PATH}/{payment['id']}", headers=SUPPORT)).json() == payment
    listed = await client.get(PAYMENT_PATH, headers=SUPPORT, params={"account.id": account["id"]})
    assert [p["id"] for p in listed.json()] == [payment["id"]]


async def test_payment_signals_the_running_account_workflow(client, db_url, temporal_client):
    account = await make_account(client)
    workflow_id = f"billing-account-{account['id']}"
    # Stand-in for the account's workflow (no worker runs): only its history is inspected.
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    invoice = insert_invoice(db_url, account)
    # A JSON number is read through str(), never float arithmetic: 20.1 stays 20.10.
    response = await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body(account["id"], 20.1, paymentItem=[{"item": {"id": invoice.id}}]))
    assert response.status_code == 201, response.text
    assert response.json()["paymentItem"][0]["item"]["id"] == invoice.id
    assert response.json()["totalAmount"]["value"] == "20.10"
    signals = await signals_received(temporal_client, workflow_id)
    assert signals == [("payment_received", [{"payment_id": response.json()["id"], "amount_cents": 2010, "source": "bank_transfer"}])]


async def test_payment_validation(client, db_url):
    account = await make_account(client)
    other = await make_account(client)
    foreign_invoice = insert_invoice(db_url, other)

    def codes(response) -> dict[str, str]:
        assert response.status_code == 422, response.text
        return {e["field"]: e["code"] for e in response.json()["errors"]}

    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body(account["id"], "12.345"))) == {"totalAmount.value": "too_many_decimals"}
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body(account["id"], "0"))) == {"totalAmount.value": "amount_not_positive"}
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body(account["id"], "ten"))) == {"totalAmount.value": "invalid_amount"}
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body(account["id"], True))) == {"totalAmount.value": "invalid_amount"}
    usd = payment_body(account["id"])
    usd["totalAmount"]["unit"] = "USD"
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=usd)) == {"totalAmount.unit": "literal_error"}
    card = payment_body(account["id"], paymentMethod={"@type": "card"})
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=card)) == {"paymentMethod": "unsupported_payment_method"}
    missing = {"account": {"id": account["id"]}}
    assert set(codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=missing))) == {"correlatorId", "totalAmount", "paymentMethod"}
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=payment_body("no-such-account"))) == {"account.id": "unknown_billing_account"}
    foreign = payment_body(account["id"], paymentItem=[{"item": {"id": foreign_invoice.id}}])
    assert codes(await client.post(PAYMENT_PATH, headers=FINANCE, json=foreign)) == {"paymentItem[0].item.id": "bill_account_mismatch"}
    with session_scope(db_url) as session:
        assert session.exec(select(Payment).where(Payment.billing_account_id == account["id"])).all() == []
