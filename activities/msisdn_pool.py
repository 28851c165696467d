"""The number pool: reserve, assign and release MSISDNs, keyed by the order item that wants one."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, func, or_
from sqlmodel import Session, select

from activities.order_records import utcnow
from persistence.tables import MsisdnPoolEntry

# German mobile range reserved for o2c's pool; a real operator loads its number blocks instead.
POOL_PREFIX = "4915900"
POOL_DIGITS = 6
TOP_UP_SIZE = 200
# A terminated line's number rests this long before anyone else gets it (calls and SMS meant for the old
# subscriber die out); it is status "quarantine" meanwhile (see retire).
QUARANTINE = "quarantine"
QUARANTINE_PERIOD = timedelta(days=180)


def _top_up(session: Session) -> None:
    highest = session.exec(select(func.max(MsisdnPoolEntry.msisdn))).one()
    start = int(highest[len(POOL_PREFIX):]) + 1 if highest else 1
    for n in range(start, start + TOP_UP_SIZE):
        session.add(MsisdnPoolEntry(msisdn=f"{POOL_PREFIX}{n:0{POOL_DIGITS}d}", status="free", updated_at=utcnow()))
    session.flush()


def _first_free(session: Session) -> MsisdnPoolEntry | None:
    # A number that served a terminated contract is free again once its quarantine is over.
    reusable = or_(MsisdnPoolEntry.status == "free",
                   and_(MsisdnPoolEntry.status == QUARANTINE, MsisdnPoolEntry.updated_at <= utcnow() - QUARANTINE_PERIOD))
    query = select(MsisdnPoolEntry).where(reusable).order_by(MsisdnPoolEntry.msisdn).limit(1)
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


def retire(session: Session, msisdn: str) -> str | None:
    """The line of `msisdn` was terminated: its pool number goes into quarantine (from now) and is reusable after
    QUARANTINE_PERIOD. Returns the new status; None for a number o2c's pool does not hold (e.g. ported in),
    which simply leaves o2c. Repeating it changes nothing."""
    entry = session.get(MsisdnPoolEntry, msisdn)
    if entry is None:
        return None
    if entry.status == "assigned":
        entry.status, entry.reserved_for, entry.updated_at = QUARANTINE, None, utcnow()
        session.add(entry)
    return entry.status
