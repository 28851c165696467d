"""The hub delivery outbox's bookkeeping: which deliveries are due, claiming them, recording each
attempt, the retry policy, and the signature every delivery carries. Sending is the dispatcher's
job (adapters.http.hub_dispatcher).

Order: the deliveries of one listener and one resource go out strictly in `sequence` order. Only
the first pending one of each (listener, resource) is ever due; the next waits until it is
delivered or has finally failed.

Retries: a failed attempt is retried after `initial`, then twice as long each time, at most
`max_interval` apart, until `window` has passed since the event was recorded (or replayed); the
next failure after that marks the delivery failed, and the listener may replay it."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from persistence.tables import HubDelivery, HubListener
from services.hubs import listener_url

SIGNATURE_HEADER = "X-O2C-Signature"
SIGNATURE_TOLERANCE_S = 300


@dataclass(frozen=True)
class RetryPolicy:
    initial: timedelta = timedelta(seconds=10)
    multiplier: float = 2.0
    max_interval: timedelta = timedelta(hours=1)
    window: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if self.initial <= timedelta(0) or self.max_interval < self.initial or self.multiplier < 1 or self.window <= timedelta(0):
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1, 2, ...)."""
        seconds = self.initial.total_seconds() * self.multiplier ** max(attempts - 1, 0)
        return min(timedelta(seconds=min(seconds, self.max_interval.total_seconds())), self.max_interval)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "RetryPolicy":
        """O2C_HUB_RETRY_INITIAL_S, O2C_HUB_RETRY_MULTIPLIER, O2C_HUB_RETRY_MAX_INTERVAL_S, O2C_HUB_RETRY_WINDOW_S."""
        env = dict(os.environ) if env is None else env
        default = cls()

        def seconds(name: str, fallback: timedelta) -> timedelta:
            value = env.get(name)
            return timedelta(seconds=float(value)) if value else fallback

        multiplier = env.get("O2C_HUB_RETRY_MULTIPLIER")
        return cls(
            initial=seconds("O2C_HUB_RETRY_INITIAL_S", default.initial),
            multiplier=float(multiplier) if multiplier else default.multiplier,
            max_interval=seconds("O2C_HUB_RETRY_MAX_INTERVAL_S", default.max_interval),
            window=seconds("O2C_HUB_RETRY_WINDOW_S", default.window),
        )


# --- signature ------------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as in Stripe-Signature."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str | None, now_unix: float, tolerance_s: int = SIGNATURE_TOLERANCE_S) -> bool:
    """What a listener does: recompute the HMAC over the raw body and compare in constant time;
    refuse a timestamp more than `tolerance_s` away (a replayed old request)."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now_unix - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


# --- due deliveries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueDelivery:
    id: int
    listener_id: str
    url: str
    secret: str
    event_id: str
    event_type: str
    resource_key: str
    sequence: int
    body: dict[str, Any]
    attempts: int


def _due_statement(now: datetime, limit: int) -> Any:
    earlier = aliased(HubDelivery)
    first_in_line = ~exists().where(
        and_(earlier.listener_id == HubDelivery.listener_id, earlier.resource_key == HubDelivery.resource_key,
             earlier.status == "pending", earlier.sequence < HubDelivery.sequence)
    )
    return (
        select(HubDelivery, HubListener)
        .join(HubListener, col(HubListener.id) == col(HubDelivery.listener_id))
        .where(HubDelivery.status == "pending", col(HubListener.deleted_at).is_(None),
               or_(col(HubDelivery.next_attempt_at).is_(None), col(HubDelivery.next_attempt_at) <= now), first_in_line)
        .order_by(col(HubDelivery.id))
        .limit(limit)
    )


def due_deliveries(session: Session, now: datetime, limit: int = 100) -> list[DueDelivery]:
    """The first pending delivery of each (listener, resource) whose attempt is due, oldest first."""
    return [
        DueDelivery(d.id, d.listener_id, listener_url(listener.callback, d.event_type), listener.secret, d.event_id, d.event_type,
                    d.resource_key, d.sequence, dict(d.body), d.attempts)
        for d, listener in session.exec(_due_statement(now, limit))  # type: ignore[arg-type]
    ]


def claim_due(session: Session, now: datetime, lease: timedelta, limit: int = 100) -> list[DueDelivery]:
    """Due deliveries, each claimed for `lease` (its next attempt moved to now + lease), so a second
    dispatcher does not send it too; a dispatcher that dies mid-send leaves it to be retried after the
    lease. The claim is a conditional UPDATE, so of two dispatchers racing for a row only one wins."""
    claimed = []
    for due in due_deliveries(session, now, limit):
        result = session.execute(
            update(HubDelivery)
            .where(col(HubDelivery.id) == due.id, col(HubDelivery.status) == "pending",
                   or_(col(HubDelivery.next_attempt_at).is_(None), col(HubDelivery.next_attempt_at) <= now))
            .values(next_attempt_at=now + lease)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            claimed.append(due)
    return claimed


def mark_delivered(session: Session, delivery_id: int, now: datetime, status_code: int | None = None) -> None:
    delivery = session.get(HubDelivery, delivery_id)
    if delivery is None or delivery.status not in ("pending", "cancelled"):
        return
    # A delivery cancelled (listener deleted) while it was in flight did arrive; say so.
    delivery.status = "delivered"
    delivery.delivered_at = now
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = None
    delivery.next_attempt_at = None
    session.add(delivery)


def mark_attempt_failed(session: Session, delivery_id: int, error: str, now: datetime, policy: RetryPolicy,
                        status_code: int | None = None) -> str | None:
    """Records a failed attempt: back off, or, once the retry window has passed, give up (status
    failed). Returns the delivery's status afterwards."""
    delivery = session.get(HubDelivery, delivery_id)
    if delivery is None:
        return None
    if delivery.status != "pending":
        return delivery.status
    delivery.attempts += 1
    delivery.last_error = error[:2000]
    delivery.last_status_code = status_code
    window_start = delivery.replayed_at or delivery.created_at
    if now >= window_start + policy.window:
        delivery.status = "failed"
        delivery.failed_at = now
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = now + policy.delay(delivery.attempts)
    session.add(delivery)
    return delivery.status
