"""The staff console: server-rendered pages under /console (docs/console.md).

Pages read the database directly (one transaction each) and Temporal with short time-outs. Actions
never change anything themselves: each one calls o2c's own HTTP API in-process, on behalf of the
signed-in staff member (a one-off delegation token that never leaves the process), so it passes the
same validation, authorisation and audit as any client. The reason asked for goes along as X-Reason."""
from __future__ import annotations

import asyncio
import logging
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from api import tmf
from api.auth import CONSOLE_ROLES, KeyStore, allowed, route_allows
from api.console import data, login_limit
from api.console.session import (
    LOGIN_CSRF_COOKIE,
    CsrfFailure,
    NotSignedIn,
    check_csrf,
    clear_flash,
    clear_session_cookie,
    current_session,
    form_data,
    read_flash,
    require_session,
    safe_next,
    set_flash,
    set_login_csrf,
    set_session_cookie,
)
from api.console.templating import render
from api.deps import audit_draft, get_context, request_id
from domain.orders import OrderState, is_cancellable
from persistence.tables import BillingAccount, Invoice, Payment, Product, ProductOrder
from services import bills, staff
from services.audit import Actor, snapshot
from services.query import in_transaction, utcnow

log = logging.getLogger(__name__)

router = APIRouter(prefix="/console", include_in_schema=False)

CANCEL_PATH = f"{tmf.ORDERING_API}/cancelProductOrder"
PAYMENT_PATH = f"{tmf.PAYMENT_API}/payment"
REFUND_PATH = f"{tmf.PAYMENT_API}/refund"
CREDIT_NOTE_ROUTE = f"{tmf.BILL_API}/customerBill/{{bill_id}}/creditNote"
DUNNING_ROUTE = f"{tmf.ACCOUNT_API}/billingAccount/{{account_id}}/dunning"
PRODUCT_ROUTE = f"{tmf.INVENTORY_API}/product/{{product_id}}"

try:  # the bills router's own writers (finance); absent in an older tree
    from api.routers.bills import BILL_WRITERS
except ImportError:  # pragma: no cover
    BILL_WRITERS = frozenset()
try:
    from api.routers.dunning import DUNNING_GRANTS
except ImportError:  # pragma: no cover
    DUNNING_GRANTS = {}


# --- helpers ---------------------------------------------------------------------------------------


async def _tx(request: Request, fn, *args):
    return await run_in_threadpool(in_transaction, get_context(request).db_url, fn, *args)


def all_routes(app) -> list[Any]:
    """Every route with its full path and methods (FastAPI nests included routers)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - an older FastAPI keeps them flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _has_route(request: Request, method: str, path: str) -> bool:
    return any(getattr(r, "path", None) == path and method in (getattr(r, "methods", None) or ()) for r in all_routes(request.app))


@dataclass(frozen=True)
class ActionInfo:
    name: str
    label: str
    available: bool  # the API route exists in this build
    permitted: bool  # the staff member's role may take it
    note: str | None = None

    @property
    def enabled(self) -> bool:
        return self.available and self.permitted

    @property
    def why_disabled(self) -> str | None:
        if not self.available:
            return self.note or "not available: o2c has no API for this yet"
        if not self.permitted:
            return "your role may not do this"
        return None


def actions_for(request: Request, role: str) -> dict[str, ActionInfo]:
    dunning = _has_route(request, "POST", DUNNING_ROUTE + "/pause")

    def dunning_ok(action: str) -> bool:
        return role in DUNNING_GRANTS.get(action, frozenset())

    service = _has_route(request, "PATCH", PRODUCT_ROUTE)
    service_ok = allowed(role, "product", "write") or route_allows(role, "PATCH", PRODUCT_ROUTE)

    return {
        "cancel_order": ActionInfo("cancel_order", "Cancel order", _has_route(request, "POST", CANCEL_PATH),
                                   allowed(role, "productOrder", "write") or route_allows(role, "POST", CANCEL_PATH)),
        "bank_transfer": ActionInfo("bank_transfer", "Record bank transfer", _has_route(request, "POST", PAYMENT_PATH),
                                    allowed(role, "payment", "write")),
        "refund": ActionInfo("refund", "Refund payment", _has_route(request, "POST", REFUND_PATH), allowed(role, "payment", "write")),
        "credit_note": ActionInfo("credit_note", "Issue credit note", _has_route(request, "POST", CREDIT_NOTE_ROUTE),
                                  allowed(role, "customerBill", "write") or role in BILL_WRITERS),
        "dunning_pause": ActionInfo("dunning_pause", "Pause dunning", dunning, dunning_ok("pause")),
        "dunning_resume": ActionInfo("dunning_resume", "Resume dunning", dunning, dunning_ok("resume")),
        "retry_payment": ActionInfo("retry_payment", "Retry payment now", dunning, dunning_ok("retry_payment")),
        "waive_fee": ActionInfo("waive_fee", "Waive late fees", dunning, dunning_ok("waive_fee")),
        "suspend_service": ActionInfo("suspend_service", "Suspend service", service, service_ok),
        "restore_service": ActionInfo("restore_service", "Restore service", service, service_ok),
    }


async def call_api(request: Request, actor: Actor, method: str, path: str, *, json: Any, reason: str,
                   idempotency_key: str | None = None) -> httpx.Response:
    """The API, in-process, as `actor`: a delegation token valid for this one call."""
    ctx = get_context(request)
    assert isinstance(ctx.keys, KeyStore)
    token = ctx.keys.delegate(actor, ttl=timedelta(seconds=60))
    headers = {"X-API-Key": token, "X-Reason": quote(reason, safe=" "), "X-Request-ID": request_id(request) or str(uuid.uuid4())}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://o2c.console") as client:
            return await client.request(method, path, json=json, headers=headers, timeout=30)
    finally:
        ctx.keys.end_delegation(token)


def _api_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and body.get("@type") == "Error":
        return f"{body.get('message')} ({body.get('code')})"
    return ""


def _back(customer_id: str, anchor: str = "") -> str:
    return f"/console/customer/{quote(customer_id, safe='')}" + (f"#{anchor}" if anchor else "")


def _forbidden_page(request: Request, message: str, status: int = 403) -> Response:
    return render("error.html", status_code=status, title="Not allowed", message=message, user=None, csrf=None)


def _not_found(request: Request, what: str) -> Response:
    return render("error.html", status_code=404, title="Not found", message=f"{what} was not found.", user=None, csrf=None)


# --- sign-in ---------------------------------------------------------------------------------------


@router.get("")
async def console_home(request: Request) -> Response:
    found = await current_session(request)
    return RedirectResponse("/console/search" if found else "/console/login", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    if await current_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_form(request, next=safe_next(next), error=None, username="")


def _login_form(request: Request, *, next: str, error: str | None, username: str, status: int = 200, error_code: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render("login.html", status_code=status, title="Sign in", next=next, error=error, error_code=error_code, username=username,
                      login_csrf=token, user=None, csrf=None)
    set_login_csrf(request, response, token)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_data(request)
    draft = audit_draft(request)
    username = form.get("username", "").strip()
    if draft is not None:
        draft.action, draft.resource_type, draft.resource_id = "console.login", "staffUser", username.lower() or None
    next_url = safe_next(form.get("next"))
    check_csrf(request, form, request.cookies.get(LOGIN_CSRF_COOKIE))
    password = form.get("password", "")
    client_ip = request.client.host if request.client else "unknown"
    now = utcnow()
    wait = await _tx(request, lambda s: login_limit.retry_after(s, username, client_ip, now)) if username else None
    if wait is not None:
        if draft is not None:
            draft.action = "console.login_throttled"
        response = _login_form(request, next=next_url, username=username, status=429, error_code=login_limit.ERROR_CODE,
                               error=f"Too many failed sign-ins. Try again in {math.ceil(wait / 60)} minute(s).")
        response.headers["Retry-After"] = str(wait)
        response.headers["X-Error-Code"] = login_limit.ERROR_CODE
        return response
    user = await _tx(request, lambda s: staff.authenticate(s, username, password)) if username and password else None
    if user is None or user.role not in CONSOLE_ROLES:
        error = "Wrong username or password." if user is None else "Your role has no access to the staff console."
        if draft is not None:
            draft.action = "console.login_failed"
        if user is None and username:
            await _tx(request, lambda s: login_limit.record_failure(s, username, client_ip, now))
        return _login_form(request, next=next_url, error=error, username=username, status=401 if user is None else 403)
    await _tx(request, lambda s: login_limit.clear(s, username, client_ip))
    ttl = timedelta(seconds=request.app.state.access.console_session_ttl_s)
    token, _row = await _tx(request, lambda s: staff.start_session(s, user, ttl, user_agent=request.headers.get("user-agent")))
    if draft is not None:
        draft.recorded = True  # start_session wrote console.login in its transaction
    response = RedirectResponse(next_url, status_code=303)
    set_session_cookie(request, response, token, ttl)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    found = await current_session(request)
    form = await form_data(request)
    if found is not None:
        check_csrf(request, form, found.session.csrf_token)
        token = request.cookies.get("o2c_console")
        await _tx(request, lambda s: staff.end_session(s, token))
        draft = audit_draft(request)
        if draft is not None:
            draft.recorded = True
    response = RedirectResponse("/console/login", status_code=303)
    clear_session_cookie(request, response)
    return response


# --- pages ------------------------------------------------------------------------------------------


async def _staff(request: Request) -> staff.ConsoleSession:
    found = await require_session(request)
    if found.user.role not in CONSOLE_ROLES:
        raise NotSignedIn()
    return found


@router.get("/search")
async def search_page(request: Request, q: str | None = None) -> Response:
    found = await _staff(request)
    hits = await _tx(request, lambda s: data.search(s, q or "")) if q else []
    return render("search.html", title="Search" if not q else f"Search: {q}", q=q or "", hits=hits, searched=bool(q), user=found.user,
                  csrf=found.session.csrf_token)


@router.get("/customer/{customer_id}")
async def customer_page(request: Request, customer_id: str) -> Response:
    found = await _staff(request)
    ctx = get_context(request)
    access = request.app.state.access
    account_ids = await _tx(request, lambda s: [a.id for a in s.exec(select(BillingAccount).where(BillingAccount.customer_id == customer_id))])
    (cycles, temporal_note), (workflow_entries, timeline_note) = await asyncio.gather(
        data.account_cycles(ctx.workflows, account_ids),
        data.workflow_timeline(ctx.workflows, customer_id, access.temporal_ui_url, ctx.settings.temporal_namespace),
    )
    view = await _tx(request, lambda s: data.load_customer(s, customer_id, ctx.catalog, cycles))
    if view is None:
        return _not_found(request, f"Customer {customer_id}")
    await asyncio.gather(*(data.dunning_live(ctx.workflows, account) for account in view.accounts if account.episodes))
    timeline = data.merged_timeline(view.events, workflow_entries)
    flash = read_flash(request)
    response = render(
        "customer.html", title=view.customer.name, view=view, timeline=timeline, timeline_note=timeline_note or temporal_note,
        actions=actions_for(request, found.user.role), user=found.user, csrf=found.session.csrf_token, flash=flash,
        nonce=lambda: str(uuid.uuid4()), ui_link=lambda wid: data.workflow_link(access.temporal_ui_url, ctx.settings.temporal_namespace, wid),
        cancellable=_cancellable,
    )
    if flash:
        clear_flash(response)
    return response


def _cancellable(state: str) -> bool:
    try:
        return is_cancellable(OrderState(state))
    except ValueError:
        return False


async def _owned_invoice(request: Request, customer_id: str, bill_id: str) -> Invoice | None:
    def load(session):
        invoice = session.get(Invoice, bill_id)
        return invoice if invoice is not None and invoice.customer_id == customer_id else None

    return await _tx(request, load)


@router.get("/customer/{customer_id}/bill/{bill_id}/document.pdf")
async def bill_pdf(request: Request, customer_id: str, bill_id: str) -> Response:
    await _staff(request)
    invoice = await _owned_invoice(request, customer_id, bill_id)
    if invoice is None or invoice.pdf is None or invoice.number is None:
        return _not_found(request, "The document")
    number, pdf = await _tx(request, bills.bill_pdf, bill_id)
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{number}.pdf"', "Cache-Control": "no-store"})


@router.get("/customer/{customer_id}/bill/{bill_id}/invoice.xml")
async def bill_xml(request: Request, customer_id: str, bill_id: str) -> Response:
    """The EN 16931 CII XML stored with the invoice (Factur-X or XRechnung), as the API serves it."""
    await _staff(request)
    invoice = await _owned_invoice(request, customer_id, bill_id)
    if invoice is None or invoice.xml is None or invoice.number is None:
        return _not_found(request, "An XML invoice for this document")
    number, xml = await _tx(request, bills.bill_xml, bill_id)
    return Response(xml, media_type="application/xml", headers={"Content-Disposition": f'inline; filename="{number}.xml"', "Cache-Control": "no-store"})


# --- actions ----------------------------------------------------------------------------------------


class ActionStopped(Exception):
    """An action ends before calling the API, with this response (a flash and redirect, or an error page)."""

    def __init__(self, response: Response) -> None:
        super().__init__("action stopped")
        self.response = response


def _owned(model, resource_id: str, customer_id: str):
    """A loader: the row if it exists and belongs to the customer (ids that do not belong together are not found)."""

    def load(session):
        row = session.get(model, resource_id)
        return row if row is not None and row.customer_id == customer_id else None

    return load


@dataclass
class ActionStart:
    found: staff.ConsoleSession
    form: dict[str, str]
    reason: str
    resource: Any


async def _begin(request: Request, customer_id: str, action: str, resource_type: str, resource_id: str, load, what: str) -> ActionStart:
    """Every action's first steps: signed in, CSRF-checked form, the action enabled for the role, a reason, and
    the resource (loaded with `load`) belonging to the customer. Raises ActionStopped with the answer otherwise."""
    found = await _staff(request)
    form = await form_data(request)
    check_csrf(request, form, found.session.csrf_token)
    draft = audit_draft(request)
    reason = form.get("reason", "").strip()
    if draft is not None:
        # The entry's customer is the resource's owner (found when it is written), not the page's: an
        # attempt on another customer's id under this page is logged against the customer it concerns.
        draft.action, draft.resource_type, draft.resource_id = f"console.{action}", resource_type, resource_id
        draft.reason = reason or None
    info = actions_for(request, found.user.role)[action]
    if not info.enabled:
        raise ActionStopped(_forbidden_page(request, f"{info.label}: {info.why_disabled}."))
    if not reason:
        raise ActionStopped(_flash_back(request, customer_id, f"{info.label}: please give a reason; nothing was changed."))
    resource = await _tx(request, load)
    if resource is None:
        raise ActionStopped(_not_found(request, f"{what} {resource_id} of this customer"))
    return ActionStart(found, form, reason, resource)


def _flash_back(request: Request, customer_id: str, message: str, anchor: str = "actions") -> Response:
    response = RedirectResponse(_back(customer_id, anchor), status_code=303)
    set_flash(request, response, message)
    return response


def _finish(request: Request, customer_id: str, label: str, response_: httpx.Response, ok_text: str, before: Any, after: Any,
            anchor: str) -> Response:
    draft = audit_draft(request)
    if draft is not None:
        draft.before = before
        draft.after = {"apiStatus": response_.status_code, **(after or {})}
    if response_.status_code < 400:
        message = f"{label}: {ok_text}"
    else:
        message = f"{label} was refused ({response_.status_code}): {_api_message(response_)}"
    return _flash_back(request, customer_id, message, anchor)


@router.post("/customer/{customer_id}/order/{order_id}/cancel")
async def cancel_order(request: Request, customer_id: str, order_id: str) -> Response:
    start = await _begin(request, customer_id, "cancel_order", "productOrder", order_id, _owned(ProductOrder, order_id, customer_id), "Order")
    before = snapshot(start.resource, exclude=frozenset({"request"}))
    result = await call_api(request, start.found.actor, "POST", CANCEL_PATH,
                            json={"productOrder": {"id": order_id}, "cancellationReason": start.reason}, reason=start.reason)
    after_order = await _tx(request, lambda s: s.get(ProductOrder, order_id))
    body = result.json() if result.status_code < 400 else {}
    return _finish(request, customer_id, "Cancel order", result, f"cancellation {body.get('state', 'requested')} for order {order_id}",
                   before, {"order": snapshot(after_order, exclude=frozenset({"request"})), "cancelProductOrder": body.get("id")}, "orders")


def _amount_cents(text: str) -> int | None:
    try:
        value = Decimal(text.strip().replace(",", "."))
    except (InvalidOperation, AttributeError):
        return None
    if value <= 0 or value != value.quantize(Decimal("0.01")):
        return None
    return int(value * 100)


@router.post("/customer/{customer_id}/account/{account_id}/payment")
async def record_bank_transfer(request: Request, customer_id: str, account_id: str) -> Response:
    start = await _begin(request, customer_id, "bank_transfer", "billingAccount", account_id, _owned(BillingAccount, account_id, customer_id),
                         "Billing account")
    cents = _amount_cents(start.form.get("amount", ""))
    if cents is None:
        return _flash_back(request, customer_id, "Record bank transfer: the amount must be a positive number of euros with at most two decimals.")
    correlator = start.form.get("correlator") or f"console-{uuid.uuid4()}"
    reference = start.form.get("reference", "").strip()
    body = {
        "correlatorId": correlator,
        "account": {"id": account_id},
        "totalAmount": {"unit": "EUR", "value": f"{Decimal(cents) / 100:.2f}"},
        "description": (f"Bank transfer {reference}: " if reference else "Bank transfer: ") + start.reason,
        "paymentMethod": {"@type": "bankTransfer"},
    }
    result = await call_api(request, start.found.actor, "POST", PAYMENT_PATH, json=body, reason=start.reason)
    payment = result.json() if result.status_code < 400 else {}
    return _finish(request, customer_id, "Record bank transfer", result, f"payment {payment.get('id')} of {cents / 100:.2f} EUR recorded",
                   None, {"payment": payment.get("id"), "amountCents": cents}, "payments")


def _owned_payment(payment_id: str, customer_id: str):
    """A loader: the payment if its billing account is the customer's."""

    def load(session):
        payment = session.get(Payment, payment_id)
        account = session.get(BillingAccount, payment.billing_account_id) if payment is not None else None
        return payment if account is not None and account.customer_id == customer_id else None

    return load


@router.post("/customer/{customer_id}/payment/{payment_id}/refund")
async def refund_payment(request: Request, customer_id: str, payment_id: str) -> Response:
    """Refund (part of) a payment: POST refund (TMF676), keyed by the form's nonce so a resubmit refunds once."""
    start = await _begin(request, customer_id, "refund", "payment", payment_id, _owned_payment(payment_id, customer_id), "Payment")
    payment = start.resource
    cents = _amount_cents(start.form.get("amount", ""))
    if cents is None:
        return _flash_back(request, customer_id, "Refund payment: the amount must be a positive number of euros with at most two decimals; "
                                                 "nothing was changed.", "payments")
    body = {
        "account": {"id": payment.billing_account_id},
        "payment": {"id": payment_id},
        "totalAmount": {"unit": payment.currency, "value": f"{Decimal(cents) / 100:.2f}"},
        "reason": start.reason,
    }
    result = await call_api(request, start.found.actor, "POST", REFUND_PATH, json=body, reason=start.reason,
                            idempotency_key=start.form.get("nonce") or f"console-{uuid.uuid4()}")
    refund = result.json() if result.status_code < 400 else {}
    return _finish(request, customer_id, "Refund payment", result,
                   f"refund {refund.get('id')} of {cents / 100:.2f} {payment.currency} is {refund.get('status')}",
                   {"payment": payment_id, "amountCents": payment.amount_cents, "allocatedCents": payment.allocated_cents},
                   {"refund": refund.get("id"), "amountCents": cents, "status": refund.get("status")}, "payments")


@router.post("/customer/{customer_id}/bill/{bill_id}/credit-note")
async def issue_credit_note(request: Request, customer_id: str, bill_id: str) -> Response:
    start = await _begin(request, customer_id, "credit_note", "customerBill", bill_id, _owned(Invoice, bill_id, customer_id), "Bill")
    invoice = start.resource
    path = CREDIT_NOTE_ROUTE.replace("{bill_id}", quote(bill_id, safe=""))
    result = await call_api(request, start.found.actor, "POST", path, json={"reason": start.reason}, reason=start.reason,
                            idempotency_key=start.form.get("nonce") or f"console-{uuid.uuid4()}")
    note = result.json() if result.status_code < 400 else {}
    return _finish(request, customer_id, "Issue credit note", result, f"credit note {note.get('billNo') or note.get('id')} issued",
                   {"bill": bill_id, "state": invoice.state, "paidCents": invoice.paid_cents}, {"creditNote": note.get("id")}, "invoices")


_DUNNING = {
    "dunning_pause": ("pause", "Pause dunning"),
    "dunning_resume": ("resume", "Resume dunning"),
    "retry_payment": ("retryPayment", "Retry payment"),
    "waive_fee": ("waiveFee", "Waive late fees"),
}


@router.post("/customer/{customer_id}/account/{account_id}/dunning/{action}")
async def dunning_action(request: Request, customer_id: str, account_id: str, action: str) -> Response:
    if action not in _DUNNING:
        return _not_found(request, "That action")
    start = await _begin(request, customer_id, action, "billingAccount", account_id, _owned(BillingAccount, account_id, customer_id), "Billing account")
    segment, label = _DUNNING[action]
    body: dict[str, Any] = {"reason": start.reason}
    if action == "dunning_pause":
        body["pauseType"] = "dispute"
    path = DUNNING_ROUTE.replace("{account_id}", quote(account_id, safe="")) + f"/{segment}"
    result = await call_api(request, start.found.actor, "POST", path, json=body, reason=start.reason, idempotency_key=start.form.get("nonce") or None)
    return _finish(request, customer_id, label, result, "sent to the dunning episode", None, None, "dunning")


_SERVICE = {"suspend": ("suspend_service", "suspended"), "restore": ("restore_service", "active")}


@router.post("/customer/{customer_id}/product/{product_id}/{action}")
async def service_action(request: Request, customer_id: str, product_id: str, action: str) -> Response:
    """Suspend or restore a service: PATCH the TMF637 product's status (docs/service-state.md)."""
    if action not in _SERVICE:
        return _not_found(request, "That action")
    name, status = _SERVICE[action]
    start = await _begin(request, customer_id, name, "product", product_id, _owned(Product, product_id, customer_id), "Product")
    before = snapshot(start.resource)
    path = PRODUCT_ROUTE.replace("{product_id}", quote(product_id, safe=""))
    result = await call_api(request, start.found.actor, "PATCH", path, json={"status": status, "statusReason": start.reason}, reason=start.reason)
    body = result.json() if result.status_code < 400 else {}
    label = actions_for(request, start.found.user.role)[name].label
    if result.status_code == 202:
        ok = "the OSS has not confirmed yet; the change goes on by itself (see the timeline)"
    else:
        ok = f"{start.resource.msisdn or product_id} is now {body.get('status')}" + (f" ({body['statusReason']})" if body.get("statusReason") else "")
    return _finish(request, customer_id, label, result, ok, before, {"status": body.get("status"), "statusReason": body.get("statusReason")}, "products")


# --- errors -----------------------------------------------------------------------------------------


def install_handlers(app) -> None:
    from api.console.session import login_redirect

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        response = login_redirect(request)
        if request.cookies.get("o2c_console"):
            clear_session_cookie(request, response)
        return response

    @app.exception_handler(ActionStopped)
    async def _stopped(_request: Request, exc: ActionStopped) -> Response:
        return exc.response

    @app.exception_handler(CsrfFailure)
    async def _csrf(request: Request, _exc: CsrfFailure) -> Response:
        return render("error.html", status_code=403, title="Form expired",
                      message="This form could not be accepted (its security token is missing or out of date, or it came from another site). "
                              "Go back, reload the page and try again.", user=None, csrf=None)
