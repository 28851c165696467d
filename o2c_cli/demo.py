"""`o2c demo`: one new customer through the whole order-to-cash story, over the public HTTP API.

It uses the clearly labelled `demo` billing profile (config/billing_profiles.yaml): 40-second cycles and
a dunning ladder in seconds. Nothing here takes a short cut: every step is the product's own behaviour,
observed from outside. Exits 0 only if every step happened as expected."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

CUSTOMER = "/tmf-api/customerManagement/v4/customer"
ACCOUNT = "/tmf-api/accountManagement/v4/billingAccount"
ORDER = "/tmf-api/productOrderingManagement/v4/productOrder"
PRODUCT = "/tmf-api/productInventory/v4/product"
USAGE = "/tmf-api/usageManagement/v4/usage"
BILL = "/tmf-api/customerBillManagement/v4/customerBill"
PAYMENT = "/tmf-api/paymentManagement/v4/payment"
DECLINING_CARD = "4000000000000341"  # Stripe test card: saves to the customer, every charge is declined (generic_decline)
# The business events of a dunning notice: a DunningWorkflow episode's (segment demo, config/dunning/demo.yaml),
# or the in-workflow ladder of accounts whose billing began before the hand-over.
DUNNING_NOTICE_EVENTS = ("dunning.notice", "dunning.barring_notice", "dunning.reminder", "dunning.suspension_notice")


class DemoFailed(Exception):
    pass


class Demo:
    def __init__(self, api: str, oss: str, api_key: str, out: Callable[[str], None] = print) -> None:
        self.api = httpx.Client(base_url=api, headers={"X-API-Key": api_key}, timeout=30)
        self.oss = httpx.Client(base_url=oss, timeout=30)
        self.out = out
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {message}")

    def call(self, method: str, path: str, expected: tuple[int, ...] = (200, 201), **kwargs) -> Any:
        response = self.api.request(method, path, **kwargs)
        if response.status_code not in expected:
            raise DemoFailed(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def wait_for(self, what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(interval_s)
        raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def events(self, account_id: str) -> list[dict]:
        return self.call("GET", f"{ACCOUNT}/{account_id}/events")

    def run(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.say("DEMO PROFILE: 40-second bill cycles and a dunning ladder in seconds (config/billing_profiles.yaml → demo, dunning segment config/dunning/demo.yaml)")
        customer = self.call("POST", CUSTOMER, json={
            "name": f"Demo Kundin {tag}",
            "contactMedium": [
                {"mediumType": "email", "characteristic": {"emailAddress": f"demo-{tag}@example.org"}},
                {"mediumType": "postalAddress", "characteristic": {"street1": "Friedrichstraße 1", "city": "Berlin", "postCode": "10117", "country": "DE"}},
            ],
        })
        account = self.call("POST", ACCOUNT, json={
            "name": f"Demo account {tag}", "relatedParty": [{"id": customer["id"], "role": "customer"}],
            "billingProfile": "demo", "timeZone": "Europe/Berlin", "defaultPaymentMethod": {"id": DECLINING_CARD},
        })
        self.say(f"customer {customer['id']} with billing account {account['id']} (card {DECLINING_CARD} will be declined)")

        # 1. order → provisioning → activation
        order = self.call("POST", ORDER, headers={"Idempotency-Key": f"demo-{tag}"}, json={
            "relatedParty": [{"id": customer["id"], "role": "customer"}], "billingAccount": {"id": account["id"]},
            "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-s"}}],
        })
        self.say(f"1. order {order['id']} {order['state']}")
        seen: set[str] = set()

        def order_done():
            current = self.call("GET", f"{ORDER}/{order['id']}")
            for step in current.get("@o2cSteps", []):
                key = f"{step['step']}:{step['status']}"
                if key not in seen:
                    seen.add(key)
                    self.say(f"   order step {step['step']}: {step['status']}" + (f" ({step['detail']})" if step.get("detail") else ""))
            return current if current["state"] in ("completed", "failed", "cancelled") else None

        final = self.wait_for("the order to complete", order_done, 60)
        if final["state"] != "completed":
            raise DemoFailed(f"order ended {final['state']}: {final.get('stateReason')}")
        product = self.call("GET", PRODUCT, params={"relatedParty.id": customer["id"]})[0]
        msisdn = next(c["value"] for c in product["productCharacteristic"] if c["name"] == "msisdn")
        service = self.oss.get(f"/sim/services/{msisdn}").json()
        if product["status"] != "active" or service.get("state") != "active":
            raise DemoFailed(f"product {product['status']}, OSS service {service}")
        self.say(f"   product {product['id']} active on MSISDN {msisdn}; the OSS reports the line {service['state']}")

        # 2. usage
        # Full precision: a record stamped before the activation instant would rightly be rejected.
        now = datetime.now(timezone.utc).isoformat()
        batch = [
            {"id": f"demo-{tag}-call", "usageType": "voice", "usageDate": now, "usageCharacteristic": [{"name": "msisdn", "value": msisdn}, {"name": "destination", "value": "4915112345678"}, {"name": "duration", "value": 754}]},
            {"id": f"demo-{tag}-sms", "usageType": "sms", "usageDate": now, "usageCharacteristic": [{"name": "msisdn", "value": msisdn}, {"name": "destination", "value": "4917012345678"}, {"name": "messages", "value": 3}]},
            {"id": f"demo-{tag}-data", "usageType": "data", "usageDate": now, "usageCharacteristic": [{"name": "msisdn", "value": msisdn}, {"name": "volume", "value": 250_000_000}]},
        ]
        result = self.call("POST", USAGE, json=batch)
        again = self.call("POST", USAGE, json=batch)
        if result["accepted"] != 3 or again["duplicates"] != 3:
            raise DemoFailed(f"usage: first {result}, repeat {again}")
        self.say(f"2. usage: {result['accepted']} records rated; sending them again: {again['duplicates']} duplicates, not charged")

        # 3. invoice
        bill = self.wait_for("the first invoice", lambda: (self.call("GET", BILL, params={"billingAccount.id": account["id"]}) or [None])[0], 90)
        # The number comes first; the PDF is rendered and sealed moments later (409 document_not_ready until then).
        def rendered() -> httpx.Response | None:
            response = self.api.get(f"{BILL}/{bill['id']}/document.pdf")
            return None if response.status_code == 409 else response

        pdf = self.wait_for("the invoice PDF", rendered, 60)
        if pdf.status_code != 200 or not pdf.content.startswith(b"%PDF"):
            raise DemoFailed(f"invoice PDF: {pdf.status_code}")
        self.say(f"3. invoice {bill['billNo']} issued: {bill['taxIncludedAmount']['value']} EUR incl. VAT, PDF {len(pdf.content)} bytes")

        # 4. a declined payment
        def declined():
            return [p for p in self.call("GET", PAYMENT, params={"account.id": account["id"]}) if p["status"] == "declined"]

        payment = self.wait_for("the declined card payment", declined, 30)[0]
        self.say(f"4. card payment {payment['id']} declined")

        # 5. reminder → suspension through the OSS
        reminder = self.wait_for("a payment reminder", lambda: [e for e in self.events(account["id"]) if e["kind"] in DUNNING_NOTICE_EVENTS], 60)[0]
        self.say(f"5. {reminder['message']}")

        def suspended():
            current = self.call("GET", f"{PRODUCT}/{product['id']}")
            barring = self.oss.get(f"/sim/services/{msisdn}").json().get("barring")
            return current["status"] == "suspended" and barring == "full"

        self.wait_for("suspension through the OSS", suspended, 60)
        self.say(f"   line {msisdn} barred in the OSS; product status suspended")

        # 6. a payment
        bill = self.call("GET", f"{BILL}/{bill['id']}")
        amount = Decimal(bill["remainingAmount"]["value"])
        paid = self.call("POST", PAYMENT, json={
            "correlatorId": f"demo-transfer-{tag}", "account": {"id": account["id"]},
            "totalAmount": {"unit": "EUR", "value": str(amount)}, "paymentMethod": {"@type": "bankTransfer"},
            "description": "Bank transfer after the reminder",
        })
        self.say(f"6. bank transfer of {amount} EUR recorded as payment {paid['id']}")

        # 7. restoration through the OSS
        def restored():
            current = self.call("GET", f"{PRODUCT}/{product['id']}")
            barring = self.oss.get(f"/sim/services/{msisdn}").json().get("barring")
            return current["status"] == "active" and barring == "none"

        self.wait_for("restoration through the OSS", restored, 60)
        settled = self.call("GET", f"{BILL}/{bill['id']}")
        if settled["state"] != "settled":
            raise DemoFailed(f"invoice {settled['billNo']} is {settled['state']} after full payment")
        self.say(f"7. line {msisdn} unbarred in the OSS; product active; invoice {settled['billNo']} settled")
        self.say(f"Done: customer {customer['id']} went through the whole story. In the Temporal UI filter by CustomerId=\"{customer['id']}\".")


def run_demo(api: str, oss: str, api_key: str, out: Callable[[str], None] = print) -> int:
    try:
        Demo(api, oss, api_key, out).run()
        return 0
    except (DemoFailed, httpx.HTTPError) as error:
        out(f"DEMO FAILED: {error}")
        return 1
