"""Small helpers shared by the services: transactions, paging, ids, clock."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from persistence.db import session_scope

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int


def paginate(session: Session, statement: Any, limit: int, offset: int) -> Page:
    """One page of `statement` plus the total count (for X-Total-Count)."""
    total = session.exec(select(func.count()).select_from(statement.order_by(None).subquery())).one()
    items = list(session.exec(statement.limit(limit).offset(offset)))
    return Page(items=items, total=int(total))


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# PostgreSQL deadlock and serialization failures: the transaction was rolled back and may simply be re-run.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def in_transaction(db_url: str, fn: Callable[..., R], *args: Any, retries: int = 3) -> R:
    """Run fn(session, *args) in one transaction. A unique-key race (two requests with the same
    idempotency key or usage record id at the same moment) is retried: the next attempt finds the
    winner's row. fn must therefore be safe to run again from scratch."""
    for attempt in range(retries + 1):
        try:
            with session_scope(db_url) as session:
                return fn(session, *args)
        except (IntegrityError, OperationalError) as exc:
            if attempt == retries or not _retryable(exc):
                raise
    raise AssertionError("unreachable")


async def run_tx(db_url: str, fn: Callable[..., R], *args: Any) -> R:
    """in_transaction on a worker thread: database calls are blocking and must not stall the event loop."""
    return await run_in_threadpool(in_transaction, db_url, fn, *args)
