"""The number pool: reserve, assign and release MSISDNs, keyed by the order item that wants one."""
from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from activities.order_records import utcnow
from persistence.tables import MsisdnPoolEntry

# German mobile range reserved for o2c's pool; a real operator loads its number blocks instead.
POOL_PREFIX = "4915900"
POOL_DIGITS = 6
TOP_UP_SIZE = 200


def _top_up(session: Session) -> None:
    highest = session.exec(select(func.max(MsisdnPoolEntry.msisdn))).one()
    start = int(highest[len(POOL_PREFIX):]) + 1 if highest else 1
    for n in range(start, start + TOP_UP_SIZE):
        session.add(MsisdnPoolEntry(msisdn=f"{POOL_PREFIX}{n:0{POOL_DIGITS}d}", status="free", updated_at=utcnow()))
    session.flush()


def _first_free(session: Session) -> MsisdnPoolEntry | None:
    query = select(MsisdnPoolEntry).where(MsisdnPoolEntry.status == "free").order_by(MsisdnPoolEntry.msisdn).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        # Two workers reserving at once each take a different row instead of waiting on the same one.
        query = query.with_for_update(skip_locked=True)
    return session.exec(query).first()


def reserve(session: Session, business_key: str) -> str:
    existing = session.exec(select(MsisdnPoolEntry).where(MsisdnPoolEntry.reserved_for == business_key)).first()
    if existing is not None:
        return existing.msisdn
    entry = _first_free(session)
    if entry is None:
        _top_up(session)
        entry = _first_free(session)
    assert entry is not None
    entry.status, entry.reserved_for, entry.updated_at = "reserved", business_key, utcnow()
    session.add(entry)
    return entry.msisdn


def assign(session: Session, business_key: str) -> None:
    entry = session.exec(select(MsisdnPoolEntry).where(MsisdnPoolEntry.reserved_for == business_key)).first()
    if entry is not None and entry.status != "assigned":
        entry.status, entry.updated_at = "assigned", utcnow()
        session.add(entry)


def release(session: Session, business_key: str) -> str | None:
    """Returns the number to the pool; a no-op when nothing is reserved for the key or it is already assigned."""
    entry = session.exec(select(MsisdnPoolEntry).where(MsisdnPoolEntry.reserved_for == business_key)).first()
    if entry is None or entry.status == "assigned":
        return None
    entry.status, entry.reserved_for, entry.updated_at = "free", None, utcnow()
    session.add(entry)
    return entry.msisdn
