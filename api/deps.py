"""What the routes get injected: the application context, the caller (role and actor), paging; and the
audit middleware that records every state-changing request."""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, unquote

from fastapi import Depends, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.payments.factory import build_gateway
from adapters.payments.port import PaymentGateway
from api.auth import KeyRing, KeyStore, Principal, allowed, route_allows
from api.errors import ApiError
from config.settings import Settings
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from domain.tariff import TariffBook
from services.audit import Actor, record_audit
from services.query import Page, in_transaction, run_tx
from services.workflows import LazyWorkflows

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class AppContext:
    settings: Settings
    catalog: Catalog
    profiles: dict[str, BillingProfile]
    keys: KeyStore | KeyRing  # a KeyStore once the app is built (api.app); role_for(key) either way
    workflows: LazyWorkflows
    tariffs: TariffBook | None = None  # rating tariffs; None: catalog/tariffs.yaml (config.tariff_loader)

    @property
    def db_url(self) -> str:
        return self.settings.database_url

    async def tx(self, fn: Callable[..., R], *args: Any) -> R:
        """fn(session, *args) in one transaction, off the event loop."""
        return await run_tx(self.db_url, fn, *args)

    def actor_for(self, key: str | None) -> Actor | None:
        if isinstance(self.keys, KeyStore):
            return self.keys.actor_for(key)
        role = self.keys.role_for(key)
        return None if role is None else Actor(kind="config_key", id=role, role=role)


def get_context(request: Request) -> AppContext:
    return request.app.state.o2c


Ctx = Annotated[AppContext, Depends(get_context)]


def payment_gateway(request: Request) -> PaymentGateway:
    """The app's one payment gateway (Stripe with a key, else the sandbox), built on first use and kept with the
    app: refunds, saved payment methods and Stripe webhooks use the same one (the sandbox is in-memory, so
    separate instances would not know each other's objects). Built again only when the settings change."""
    settings = get_context(request).settings
    key = (settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s)
    cached = getattr(request.app.state, "payment_gateway", None)
    if cached is None or cached[0] != key:
        cached = (key, build_gateway(settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s))
        request.app.state.payment_gateway = cached
    return cached[1]


Gateway = Annotated[PaymentGateway, Depends(payment_gateway)]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="o2c API key; its role decides what it may do")


def _route_path(request: Request) -> str | None:
    route = request.scope.get("route")
    return getattr(route, "path", None)


def authenticate(request: Request, key: str | None) -> Actor:
    """The actor behind the request's key (else 401); remembered for the audit entry."""
    actor = get_context(request).actor_for(key)
    if actor is None or actor.role is None:
        raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
    draft = audit_draft(request)
    if draft is not None and draft.actor is None:
        draft.actor = actor
    request.state.actor = actor
    return actor


def require(resource: str, action: str) -> Callable[..., Principal]:
    """Dependency: the caller's key must exist (else 401) and its role must allow action on resource,
    or the route must grant the role (api.auth.ROUTE_GRANTS), else 403."""

    def check(request: Request, key: str | None = Security(_api_key)) -> Principal:
        actor = authenticate(request, key)
        role = actor.role or ""
        if not (allowed(role, resource, action) or route_allows(role, request.method, _route_path(request))):
            raise ApiError(403, "forbidden", f"role {role!r} may not {action} {resource}")
        return Principal(role=role, actor=actor)

    return check


def reader(resource: str) -> Any:
    return Depends(require(resource, "read"))


def writer(resource: str) -> Any:
    return Depends(require(resource, "write"))


def current_actor(request: Request, key: str | None = Security(_api_key)) -> Actor:
    """Dependency: the request's actor (401 without a valid key). Use with reader()/writer() for the role check."""
    found = getattr(request.state, "actor", None)
    return found if found is not None else authenticate(request, key)


CurrentActor = Annotated[Actor, Depends(current_actor)]


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    offset: Annotated[int, Query(ge=0, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit=limit, offset=offset)


PagingDep = Annotated[Paging, Depends(paging)]


def list_response(page: Page, serialise: Callable[[Any], dict[str, Any]]) -> JSONResponse:
    """A TMF list: a JSON array, with the total in X-Total-Count and the page size in X-Result-Count."""
    items = [serialise(item) for item in page.items]
    return JSONResponse(items, headers={"X-Total-Count": str(page.total), "X-Result-Count": str(len(items))})


# --- audit -----------------------------------------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CAPTURED_BODY = 64 * 1024  # enough to find a "reason"; a large usage batch is not kept
REQUEST_ID_HEADER = "x-request-id"


@dataclass
class AuditDraft:
    """The request-level audit entry, filled in as the request goes. A route may name the action and
    resource and add before/after (`audit_draft(request)`), or set `recorded` when it wrote its own
    entry with record_audit in its transaction; then the middleware writes nothing more."""

    request_id: str
    method: str
    path: str
    actor: Actor | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    customer_id: str | None = None
    reason: str | None = None
    before: Any = None
    after: Any = None
    recorded: bool = False
    body: bytearray = field(default_factory=bytearray)
    body_truncated: bool = False


def audit_draft(request: Request) -> AuditDraft | None:
    return request.scope.get("state", {}).get("audit")


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _clean_request_id(raw: bytes | None) -> str:
    if raw:
        text = raw.decode("latin-1").strip()
        if 0 < len(text) <= 100 and all(c.isalnum() or c in "-_.:" for c in text):
            return text
    return str(uuid.uuid4())


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def _reason_from_body(draft: AuditDraft, content_type: str) -> str | None:
    if not draft.body or draft.body_truncated:
        return None
    try:
        if "application/x-www-form-urlencoded" in content_type:
            values = parse_qs(draft.body.decode("utf-8"), keep_blank_values=False).get("reason")
            return values[0] if values else None
        data = json.loads(draft.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        for name in ("reason", "cancellationReason"):
            value = data.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _resource_from(scope: Scope, location: str | None) -> tuple[str | None, str | None]:
    """(type, id) the request was about: the last id in the route's path, else the created resource's Location."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    params = scope.get("path_params") or {}
    if template and params:
        segments = template.strip("/").split("/")
        for index in range(len(segments) - 1, 0, -1):
            segment = segments[index]
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1].split(":")[0]
                if name in params:
                    return segments[index - 1], str(params[name])
    if location:
        parts = location.split("?")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            return parts[-2], unquote(parts[-1])
    return None, None


class AuditMiddleware:
    """Gives every request an id (X-Request-ID, taken from the request when it sends a sane one) and
    writes one audit entry for every request that is not GET/HEAD/OPTIONS: actor, method, path, status,
    resource, reason (X-Reason header, else the body's `reason`), before/after if the route added them.
    The entry is committed before the response starts, so a client that has its answer finds the entry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _clean_request_id(_header(scope, b"x-request-id"))
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        method = scope["method"].upper()
        draft = AuditDraft(request_id=rid, method=method, path=scope.get("path", ""))
        state["audit"] = draft
        audited = method not in SAFE_METHODS
        written = False

        async def receive_tee() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not draft.body_truncated:
                chunk = message.get("body", b"")
                if len(draft.body) + len(chunk) > MAX_CAPTURED_BODY:
                    draft.body_truncated = True
                    draft.body.clear()
                else:
                    draft.body.extend(chunk)
            return message

        async def send_with_audit(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
                if audited and not written:
                    written = True
                    location = next((v.decode("latin-1") for k, v in headers if k.lower() == b"location"), None)
                    await self._write(scope, draft, int(message["status"]), location)
            await send(message)

        try:
            await self.app(scope, receive_tee if audited else receive, send_with_audit)
        except Exception:
            if audited and not written:
                written = True
                await self._write(scope, draft, 500, None)
            raise

    async def _write(self, scope: Scope, draft: AuditDraft, status: int, location: str | None) -> None:
        if draft.recorded:
            return
        app = scope.get("app")
        ctx: AppContext | None = getattr(getattr(app, "state", None), "o2c", None)
        if ctx is None:
            return
        try:
            actor = draft.actor
            if actor is None:
                key = _header(scope, b"x-api-key")
                actor = await run_in_threadpool(ctx.actor_for, key.decode("latin-1")) if key else None
            if actor is None:
                actor = Actor(kind="anonymous", id="-", role=None)
            reason = draft.reason
            header_reason = _header(scope, b"x-reason")
            if not reason and header_reason:
                reason = unquote(header_reason.decode("latin-1")).strip() or None
            if not reason:
                content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
                reason = _reason_from_body(draft, content_type)
            resource_type, resource_id = (draft.resource_type, draft.resource_id)
            if resource_type is None:
                resource_type, resource_id = _resource_from(scope, location)
            action = draft.action or f"{draft.method} {getattr(scope.get('route'), 'path', None) or draft.path}"
            query = scope.get("query_string", b"").decode("latin-1")
            path = draft.path + (f"?{query}" if query else "")

            def write(session) -> None:
                record_audit(session, actor, action, resource_type, resource_id, reason, draft.before, draft.after,
                             customer_id=draft.customer_id, request_id=draft.request_id, method=draft.method, path=path, status=status)

            await run_in_threadpool(in_transaction, ctx.db_url, write)
        except Exception:  # the change is made; a lost audit entry is logged loudly, never hidden
            log.exception("could not write the audit entry for %s %s (request %s)", draft.method, draft.path, draft.request_id)
