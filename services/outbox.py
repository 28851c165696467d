"""The outbox table's bookkeeping: which messages are due, and recording each delivery attempt.
Delivery itself is the relay's job (adapters.temporal.outbox_relay)."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, or_, select

from persistence.tables import OutboxMessage

# A receiver that is down is asked again after 2, 4, 8 ... seconds, at most every 10 minutes.
_MAX_BACKOFF = timedelta(minutes=10)


@dataclass(frozen=True)
class DueMessage:
    id: int
    key: str
    topic: str
    payload: dict[str, Any]
    attempts: int


def due_messages(session: Session, topics: Collection[str], now: datetime, limit: int = 100) -> list[DueMessage]:
    """Undelivered messages of these topics whose next attempt is due, oldest first."""
    statement = (select(OutboxMessage)
                 .where(col(OutboxMessage.delivered_at).is_(None), col(OutboxMessage.topic).in_(sorted(topics)),
                        or_(col(OutboxMessage.next_attempt_at).is_(None), col(OutboxMessage.next_attempt_at) <= now))
                 .order_by(col(OutboxMessage.id)).limit(limit))
    return [DueMessage(m.id, m.key, m.topic, dict(m.payload), m.attempts) for m in session.exec(statement)]  # type: ignore[arg-type]


def mark_delivered(session: Session, message_id: int, now: datetime) -> None:
    message = session.get(OutboxMessage, message_id)
    if message is not None and message.delivered_at is None:
        message.delivered_at = now
        message.attempts += 1
        message.last_error = None
        session.add(message)


def mark_failed(session: Session, message_id: int, error: str, now: datetime) -> None:
    message = session.get(OutboxMessage, message_id)
    if message is None or message.delivered_at is not None:
        return
    message.attempts += 1
    message.last_error = error[:2000]
    message.next_attempt_at = now + retry_delay(message.attempts)
    session.add(message)


def retry_delay(attempts: int) -> timedelta:
    return min(timedelta(seconds=2 ** min(attempts, 20)), _MAX_BACKOFF)
