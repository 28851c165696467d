"""The audit log: who (actor kind, id, role), when, what (action and resource), why (reason), the
state before and after, and the request it came with.

`record_audit(session, actor, ...)` adds one entry to the caller's session, so it commits or rolls back
with the change it describes. The table is append-only: this module has no update or delete path, the
ORM guards in persistence.tables refuse one, and on PostgreSQL (and SQLite) a trigger refuses one in SQL.
docs/access-control.md says how routes add their before/after."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from persistence.tables import AuditLog, BillingAccount, CancelProductOrder, Customer, Invoice, Payment, Product, ProductOrder
from services.query import Page, paginate, utcnow

# Values longer than this (in a before/after document) are cut, so one entry stays small.
MAX_TEXT = 2000


@dataclass(frozen=True)
class Actor:
    """Who makes a request: an API key (kind api_key, id = the key's id), a configured key (config_key),
    a staff member logged in to the console (staff, id = username) or o2c itself (system)."""

    kind: str
    id: str
    role: str | None
    name: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.id}"


SYSTEM = Actor(kind="system", id="o2c", role=None, name="o2c")


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of value (datetimes as ISO text, decimals as text), long texts cut."""
    if depth > 8:
        return str(value)[:MAX_TEXT]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in value]
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return _plain(model_dump(), depth + 1)
    return str(value)[:MAX_TEXT]


def snapshot(row: Any, *, exclude: frozenset[str] = frozenset({"pdf", "password_hash", "key_hash"})) -> dict[str, Any] | None:
    """A table row as a JSON document for before/after (binary and secret columns left out)."""
    if row is None:
        return None
    data = row.model_dump() if hasattr(row, "model_dump") else dict(row)
    return _plain({k: v for k, v in data.items() if k not in exclude})


def record_audit(
    session: Session,
    actor: Actor,
    action: str,
    resource_type: str | None,
    resource_id: str | None,
    reason: str | None = None,
    before: Any = None,
    after: Any = None,
    *,
    customer_id: str | None = None,
    request_id: str | None = None,
    method: str | None = None,
    path: str | None = None,
    status: int | None = None,
    at: datetime | None = None,
) -> AuditLog:
    """Append one entry in the caller's transaction. customer_id is found from the resource when not given."""
    if customer_id is None and resource_type and resource_id:
        customer_id = customer_of(session, resource_type, resource_id)
    entry = AuditLog(
        at=at or utcnow(),
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_role=actor.role,
        actor_name=actor.name,
        action=action[:200],
        resource_type=resource_type,
        resource_id=resource_id,
        customer_id=customer_id,
        reason=(reason or None) and reason[:MAX_TEXT],
        before=_as_document(before),
        after=_as_document(after),
        request_id=request_id,
        method=method,
        path=path[:1000] if path else None,
        status=status,
    )
    session.add(entry)
    session.flush()
    return entry


def _as_document(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    plain = _plain(value)
    if not isinstance(plain, dict):
        plain = {"value": plain}
    json.dumps(plain)  # fails here, not at commit, if something is still not JSON
    return plain


# --- which customer a resource belongs to ---------------------------------------------------------


def _account_customer(session: Session, account_id: str) -> str | None:
    row = session.get(BillingAccount, account_id)
    return row.customer_id if row else None


def customer_of(session: Session, resource_type: str, resource_id: str) -> str | None:
    """The customer a resource belongs to, for the customer's audit view; None when it has none (or is unknown)."""
    try:
        if resource_type == "customer":
            return resource_id if session.get(Customer, resource_id) is not None else None
        if resource_type == "billingAccount":
            return _account_customer(session, resource_id)
        if resource_type == "productOrder":
            order = session.get(ProductOrder, resource_id)
            return order.customer_id if order else None
        if resource_type == "cancelProductOrder":
            cancel = session.get(CancelProductOrder, resource_id)
            order = session.get(ProductOrder, cancel.order_id) if cancel else None
            return order.customer_id if order else None
        if resource_type == "product":
            product = session.get(Product, resource_id)
            return product.customer_id if product else None
        if resource_type == "customerBill":
            invoice = session.get(Invoice, resource_id)
            return invoice.customer_id if invoice else None
        if resource_type == "payment":
            payment = session.get(Payment, resource_id)
            return _account_customer(session, payment.billing_account_id) if payment else None
    except Exception:  # noqa: BLE001 - a malformed id (e.g. not an integer on PostgreSQL) just has no customer
        return None
    return None


# --- reading -------------------------------------------------------------------------------------


def customer_entries(session: Session, customer_id: str, *, limit: int, offset: int) -> Page[AuditLog]:
    """The customer's audit entries, newest first."""
    statement = select(AuditLog).where(AuditLog.customer_id == customer_id).order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc())
    return paginate(session, statement, limit, offset)


def entries(session: Session, *, request_id: str | None = None, actor_id: str | None = None, limit: int = 100, offset: int = 0) -> Page[AuditLog]:
    statement = select(AuditLog).order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc())
    if request_id is not None:
        statement = statement.where(AuditLog.request_id == request_id)
    if actor_id is not None:
        statement = statement.where(AuditLog.actor_id == actor_id)
    return paginate(session, statement, limit, offset)


def as_json(entry: AuditLog) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "at": entry.at.isoformat(),
        "actor": {"kind": entry.actor_kind, "id": entry.actor_id, "role": entry.actor_role, "name": entry.actor_name},
        "action": entry.action,
        "resource": {"type": entry.resource_type, "id": entry.resource_id} if entry.resource_type else None,
        "customerId": entry.customer_id,
        "reason": entry.reason,
        "before": entry.before,
        "after": entry.after,
        "requestId": entry.request_id,
        "method": entry.method,
        "path": entry.path,
        "status": entry.status,
    }
