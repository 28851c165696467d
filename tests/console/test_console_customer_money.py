"""The customer page tells a support agent about money and service state (issue 7), seeded through o2c's own
services and APIs and checked in the rendered HTML, on both database backends: refunds and chargebacks next to
payments (and in the balance chart), the console's refund action going through POST refund as the staff member,
the saved payment method with a revoked SEPA mandate, the current plan, a pending downgrade, promotions with
cycles left, and why a line is suspended (status history, the staff suspension and the bar underneath it)."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from html import unescape

from sqlmodel import select

from activities.service_state import ServiceStateActivities, ServiceStateRequest
from config.catalog_loader import load_catalog
from domain.payments import RefundOutcome
from config.settings import Settings
from persistence.db import session_scope
from persistence.tables import AuditLog, Product, ProductOrderItem, Refund
from services import payment_methods, plan_changes
from services.query import utcnow
from services.refunds import apply_refund_outcome
from services.service_state import record_status_change
from tests.api.conftest import FINANCE, app, client, client_for, insert_product, make_account, make_customer, new_msisdn  # noqa: F401
from tests.api.test_access_control import console_login, login_token, make_staff
from tests.support.refunds import bill, insert_bill, insert_payment

REFUND_PATH = "/tmf-api/paymentManagement/v4/refund"
CATALOG = load_catalog(Settings().catalog_path)
GOOD_IBAN = "DE89370400440532013000"


def text(html: str) -> str:
    """The page's words without tags, for assertions on what a reader sees."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def fragment(html: str, element_id: str, tag: str) -> str:
    """The element with this id up to its closing tag (no nesting of the same tag inside)."""
    start = html.index(f'id="{element_id}"')
    return html[start:html.index(f"</{tag}>", start)]


async def page_as(app, db_url: str, role: str, customer_id: str) -> tuple[str, str]:  # noqa: F811
    user = make_staff(db_url, role)
    async with client_for(app) as http:
        await console_login(http, user.username)
        response = await http.get(f"/console/customer/{customer_id}")
        assert response.status_code == 200, response.text
        return response.text, user.username


def refund(account: dict, payment_id: str, value: str, reason: str, **extra) -> dict:
    return {"account": {"id": account["id"]}, "payment": {"id": payment_id}, "totalAmount": {"unit": "EUR", "value": value},
            "reason": reason, **extra}


async def test_payments_show_refunds_and_chargebacks_and_the_balance_counts_them(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    insert_bill(db_url, account, 2379)
    paid = insert_payment(db_url, account, 3000)  # settles the bill, 6.21 credit
    extra = insert_payment(db_url, account, 500)  # more credit
    given = await client.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"k-{uuid.uuid4()}"},
                              json=refund(account, paid, "10.00", "goodwill: double booking"))
    taken = await client.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"k-{uuid.uuid4()}"},
                              json=refund(account, extra, "5.00", "SEPA return MD06 reported by the bank", **{"@type": "Chargeback"}))
    assert given.status_code == taken.status_code == 201, (given.text, taken.text)

    html, _ = await page_as(app, db_url, "support", customer["id"])
    table = fragment(html, f"refunds-{account['id']}", "table")
    refund_row = text(fragment(table, f"refund-{given.json()['id']}", "tr"))
    assert "Refund" in refund_row and "10.00 EUR" in refund_row and "succeeded" in refund_row and "goodwill: double booking" in refund_row
    assert paid in refund_row and "finance" in refund_row
    chargeback_row = text(fragment(table, f"refund-{taken.json()['id']}", "tr"))
    assert "Chargeback" in chargeback_row and "5.00 EUR + fee 15.00 EUR" in chargeback_row and "MD06" in chargeback_row and extra in chargeback_row
    assert f'href="#payment-{extra}"' in table and f'id="payment-{extra}"' in html  # the linked payment's row
    # The open balance: 23.79 billed - 35.00 paid + 10.00 refunded + 5.00 charged back = 3.79 (the ledger's view too).
    assert "Open balance 3.79 EUR" in text(html)
    chart = fragment(html, f"balance-{account['id']}", "svg")
    assert "open balance now 3.79 EUR. 2 refund(s) or chargeback(s) raised it by 15.00 EUR." in chart
    assert chart.count('class="refund"') == 1 and chart.count('class="chargeback"') == 1
    # Support sees the refund form but may not use it; 20.00 of the first payment and nothing of the second are left.
    form = fragment(html, f"payment-{paid}", "tr")
    assert 'value="20.00"' in form and "your role may not do this" in form and "disabled" in form
    assert "nothing left to refund" in fragment(html, f"payment-{extra}", "tr")


async def test_a_pending_gateway_refund_counts_in_the_balance_and_a_failed_one_drops_out(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    insert_bill(db_url, account, 2379)
    paid = insert_payment(db_url, account, 2379, method="sepa_debit", gateway_payment_id=f"sbx_pi_{uuid.uuid4().hex[:8]}")
    response = await client.post(REFUND_PATH, headers={**FINANCE, "Idempotency-Key": f"k-{uuid.uuid4()}"},
                                 json=refund(account, paid, "23.79", "customer cancelled within 14 days"))
    shown = response.json()
    assert (response.status_code, shown["status"]) == (201, "pending")  # the sandbox, like Stripe, keeps a SEPA refund pending

    html, _ = await page_as(app, db_url, "support", customer["id"])
    assert "pending" in text(fragment(html, f"refund-{shown['id']}", "tr")) and "gateway" in text(fragment(html, f"refund-{shown['id']}", "tr"))
    assert "Open balance 23.79 EUR" in text(html)  # the bill is owed again while the refund stands
    assert "1 refund(s) or chargeback(s) raised it by 23.79 EUR." in fragment(html, f"balance-{account['id']}", "svg")

    with session_scope(db_url) as session:
        apply_refund_outcome(session, shown["id"], RefundOutcome(status="failed", gateway_refund_id=shown["gatewayRefundId"], amount_minor=2379,
                                                                  currency="EUR", failure_reason="expired_or_canceled_card"))
    html, _ = await page_as(app, db_url, "support", customer["id"])
    assert "failed: expired_or_canceled_card" in text(fragment(html, f"refund-{shown['id']}", "tr"))
    assert "Open balance 0.00 EUR" in text(html)  # the money went back on the payment, the bill is settled again
    chart = fragment(html, f"balance-{account['id']}", "svg")
    assert "open balance now 0.00 EUR." in chart and "refund(s)" not in chart and 'class="refund"' not in chart
    assert 'value="23.79"' in fragment(html, f"payment-{paid}", "tr")  # refundable again


async def test_the_refund_action_goes_through_the_refund_api_as_the_finance_member(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    invoice = insert_bill(db_url, account, 2379)
    paid = insert_payment(db_url, account, 2379)
    foreign = insert_payment(db_url, await make_account(client), 1000)
    action = f"/console/customer/{customer['id']}/payment/{paid}/refund"
    support, finance = make_staff(db_url, "support"), make_staff(db_url, "finance")
    async with client_for(app) as http:
        await console_login(http, support.username)
        csrf = login_token((await http.get(f"/console/customer/{customer['id']}")).text)
        refused = await http.post(action, data={"csrf_token": csrf, "reason": "goodwill", "amount": "1.00", "nonce": str(uuid.uuid4())})
        assert refused.status_code == 403 and "your role may not" in refused.text
    async with client_for(app) as http:
        await console_login(http, finance.username)
        page = await http.get(f"/console/customer/{customer['id']}")
        assert f'action="{action}"' in page.text and 'value="23.79"' in fragment(page.text, f"payment-{paid}", "tr")
        csrf = login_token(page.text)
        no_reason = await http.post(action, data={"csrf_token": csrf, "reason": " ", "amount": "1.00"})
        assert no_reason.status_code == 303
        assert "Refund payment: please give a reason; nothing was changed." in (await http.get(f"/console/customer/{customer['id']}")).text
        bad_amount = await http.post(action, data={"csrf_token": csrf, "reason": "goodwill", "amount": "1.001"})
        assert bad_amount.status_code == 303
        assert "at most two decimals" in (await http.get(f"/console/customer/{customer['id']}")).text
        not_theirs = await http.post(f"/console/customer/{customer['id']}/payment/{foreign}/refund",
                                     data={"csrf_token": csrf, "reason": "goodwill", "amount": "1.00"})
        assert not_theirs.status_code == 404
        too_much = await http.post(action, data={"csrf_token": csrf, "reason": "goodwill", "amount": "30.00", "nonce": str(uuid.uuid4())})
        assert too_much.status_code == 303
        assert "Refund payment was refused (409)" in text((await http.get(f"/console/customer/{customer['id']}")).text)
        nonce = str(uuid.uuid4())
        form = {"csrf_token": csrf, "reason": "contract cancelled in the cooling-off period", "amount": "5,50", "nonce": nonce}
        done = await http.post(action, data=form)
        assert done.status_code == 303 and done.headers["location"].endswith("#payments")
        shown = await http.get(f"/console/customer/{customer['id']}")
        again = await http.post(action, data=form)  # a resubmitted form: the same key, the same refund
        assert again.status_code == 303
    with session_scope(db_url) as session:
        [row] = session.exec(select(Refund).where(Refund.payment_id == paid)).all()
        entries = session.exec(select(AuditLog).where(AuditLog.request_id == done.headers["x-request-id"])).all()
    assert (row.correlator_id, row.amount_cents, row.kind, row.status, row.reason) == (
        nonce, 550, "refund", "succeeded", "contract cancelled in the cooling-off period")
    assert f"Refund payment: refund {row.id} of 5.50 EUR is succeeded" in shown.text
    assert f'id="refund-{row.id}"' in shown.text
    by_action = {e.action: e for e in entries}
    console_entry = by_action["console.refund"]
    assert (console_entry.actor_id, console_entry.resource_type, console_entry.resource_id, console_entry.customer_id) == (
        finance.username, "payment", paid, customer["id"])
    assert console_entry.after["refund"] == row.id and console_entry.before["amountCents"] == 2379
    api_entry = by_action["refund.create"]
    assert (api_entry.actor_kind, api_entry.actor_id, api_entry.reason) == ("staff", finance.username, "contract cancelled in the cooling-off period")
    assert (bill(db_url, invoice).state, bill(db_url, invoice).paid_cents) == ("partiallyPaid", 1829)


async def test_the_account_shows_its_saved_mandate_and_a_revoked_one_as_an_alert(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"], defaultPaymentMethod={"id": f"sepa:{GOOD_IBAN}"})
    html, _ = await page_as(app, db_url, "support", customer["id"])
    with session_scope(db_url) as session:
        saved = payment_methods.current(session, account["id"])
    assert saved is not None and saved.kind == "sepa_debit" and saved.mandate_id
    shown = text(fragment(html, f"payment-method-{account['id']}", "dd"))
    assert f"SEPA direct debit ending 3000, saved at the {saved.gateway} gateway" in shown
    assert f"mandate {saved.mandate_id}" in shown and shown.rstrip().endswith("active")
    assert f'id="mandate-revoked-{account["id"]}"' not in html

    with session_scope(db_url) as session:
        assert payment_methods.record_mandate_status(session, saved.mandate_id, "revoked", "customer revoked the mandate at the bank") is not None
    html, _ = await page_as(app, db_url, "support", customer["id"])
    assert "revoked" in text(fragment(html, f"payment-method-{account['id']}", "dd"))
    alert = text(fragment(html, f"mandate-revoked-{account['id']}", "p"))
    assert "SEPA mandate revoked: customer revoked the mandate at the bank" in alert
    assert "hard-declined ( mandate_revoked )" in alert and "until the customer saves a new payment method" in alert


def _order_item(product_id: str, offering_id: str) -> ProductOrderItem:
    """The modify item a TMF622 plan-change order has (services.plan_changes reads only its ids and offering)."""
    return ProductOrderItem(order_id=f"order-{uuid.uuid4().hex[:12]}", item_id="1", action="modify", offering_id=offering_id, product_id=product_id)


async def test_products_show_the_plan_a_pending_downgrade_and_promotions_with_cycles_left(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    now = utcnow()
    product_id = insert_product(db_url, account, new_msisdn(), offering_id="mobile-l", start=now - timedelta(days=200))
    with session_scope(db_url) as session:
        span = plan_changes.schedule_plan_change(session, CATALOG, _order_item(product_id, "mobile-s"), product_id, now)
        product = session.get(Product, product_id)
        plan_changes.grant_promotions(session, CATALOG, product, ["half-price-3"], now, None)
        plan_changes.grant_promotions(session, CATALOG, product, ["five-off-invoice"], now - timedelta(days=120), None)  # 1 cycle, long over
        effective_at = span.effective_at
    assert effective_at > now and not span.applied  # a downgrade waits for the cycle end

    html, _ = await page_as(app, db_url, "support", customer["id"])
    row = fragment(html, f"product-{product_id}", "tr")
    assert "Mobile L" in text(row)
    pending = text(fragment(row, f"plan-change-{product_id}", "span"))
    assert f"Downgrade to Mobile S on {effective_at.astimezone(timezone.utc):%Y-%m-%d %H:%M}" in pending
    assert "Welcome offer: 50 % off for 3 months: 3 of 3 cycle(s) left" in text(row)
    assert "Loyalty bonus" not in row  # its one cycle is over


async def test_a_suspended_line_says_why_with_its_history_and_the_bar_under_a_staff_suspension(app, client, db_url):  # noqa: F811
    customer = await make_customer(client)
    account = await make_account(client, customer["id"])
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    held_id = insert_product(db_url, account, new_msisdn(), start=start)
    capped_id = insert_product(db_url, account, new_msisdn(), start=start)
    with session_scope(db_url) as session:  # dunning bars one line outgoing, the spending cap the other (as their activities record it)
        for product_id, reason, source, actor in ((held_id, "barred for arrears (outgoing)", "dunning", "dunning:episode-1"),
                                                  (capped_id, "outgoing use barred: spending limit reached", "spending", "spending-monitor")):
            product = session.get(Product, product_id)
            product.status, product.status_reason = "suspended", reason
            session.add(product)
            record_status_change(session, product, "active", reason=reason, source=source, actor=actor)
    staff_member = make_staff(db_url, "support")
    request = ServiceStateRequest(product_id=held_id, target="suspended", reason="police report 4711", request_id=str(uuid.uuid4()),
                                  actor_kind="staff", actor_id=staff_member.username, actor_role="support")
    # The staff suspension as the service-state activity records it once the OSS confirmed the full bar.
    result = ServiceStateActivities(db_url, oss=None)._record(request, "full")
    assert (result.outcome, result.status) == ("applied", "suspended")

    html, _ = await page_as(app, db_url, "support", customer["id"])
    why = fragment(html, f"why-{held_id}", "article")
    words = text(why)
    assert f"Suspended by staff : staff:{staff_member.username} on" in words and "police report 4711" in words
    underlying = text(fragment(why, f"underlying-{held_id}", "p"))
    assert "still barred outgoing (barred for arrears (outgoing))" in underlying and "that bar remains" in underlying
    history = fragment(why, f"status-history-{held_id}", "table")
    rows = [text(r) for r in re.findall(r"<tr>(.*?)</tr>", history.split("<tbody>")[1])]
    assert len(rows) == 2
    assert "active suspended dunning dunning:episode-1 barred for arrears (outgoing)" in rows[0]
    assert f"suspended suspended manual staff:{staff_member.username} police report 4711" in rows[1]
    assert f'href="#why-{held_id}"' in fragment(html, f"product-{held_id}", "tr")

    capped = text(fragment(html, f"why-{capped_id}", "article"))
    assert "Last change: spending by spending-monitor" in capped and "spending limit reached" in capped
    assert "lifts it when the next billing cycle begins" in capped
    assert "Suspended by staff" not in capped
