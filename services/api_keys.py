"""API keys kept in the database as SHA-256 digests: create (the key is shown once), rotate (a new key;
the old one stays valid for a grace period) and revoke. Keys configured in O2C_API_KEYS (the development
keys by default) are seeded into the same table, hashed, so they can be listed and revoked like any other.

A key is 32 random bytes (URL-safe base64) behind the prefix `o2c_`: with that much entropy one
unsalted SHA-256 is enough, and it lets a request's key be found by its digest with one index lookup."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from persistence.db import engine_for
from persistence.tables import ApiKey
from services.audit import Actor, record_audit, snapshot
from services.errors import Conflict, Invalid, NotFound, field_error
from services.query import Page, new_id, paginate, utcnow

log = logging.getLogger(__name__)

ROLES = ("admin", "crm", "support", "finance", "oss")
KEY_PREFIX = "o2c_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + 6] if key.startswith(KEY_PREFIX) else key[:3] + "…"


@dataclass(frozen=True)
class KeyRecord:
    """What a request needs to know about its key."""

    id: str
    name: str
    role: str
    source: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def actor(self) -> Actor:
        return Actor(kind="config_key" if self.source == "config" else "api_key", id=self.id, role=self.role, name=self.name)


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(id=row.id, name=row.name, role=row.role, source=row.source, expires_at=row.expires_at, revoked_at=row.revoked_at)


# --- looking a key up ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _read_engine(url: str) -> Engine:
    """For SQLite, an engine whose reads do not take the write lock (persistence.db begins every
    transaction IMMEDIATE); WAL lets it read while a writer works. PostgreSQL uses the shared engine."""
    if not url.startswith("sqlite"):
        return engine_for(url)
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def lookup(db_url: str, key: str) -> KeyRecord | None:
    """The key's record, valid or not; None for an unknown key."""
    wanted = digest(key)
    with Session(_read_engine(db_url)) as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == wanted)).first()
    if row is None or not hmac.compare_digest(row.key_hash, wanted):
        return None
    return _record(row)


# --- seeding the configured keys ------------------------------------------------------------------


def seed_configured_keys(db_url: str, entries: list[tuple[bytes, str]]) -> int:
    """Stores each configured (digest, role) once. A configured key that was revoked stays revoked.
    Returns how many were new."""
    added = 0
    for raw_digest, role in entries:
        hex_digest = raw_digest.hex()
        with Session(engine_for(db_url)) as session:
            existing = session.exec(select(ApiKey).where(ApiKey.key_hash == hex_digest)).first()
            if existing is not None:
                continue
            session.add(ApiKey(id=new_id(), name=f"configured {role} key", role=role, key_hash=hex_digest, prefix="(O2C_API_KEYS)",
                               source="config", created_at=utcnow(), created_by="config"))
            try:
                session.commit()
                added += 1
            except IntegrityError:  # another process seeded it at the same moment
                session.rollback()
    return added


# --- administration --------------------------------------------------------------------------------


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise Invalid([field_error("role", "unknown_role", f"role must be one of {', '.join(ROLES)}")])


def create_key(session: Session, actor: Actor, *, name: str, role: str, expires_at: datetime | None = None, reason: str | None = None,
               request_id: str | None = None) -> tuple[ApiKey, str]:
    """(row, key): the key itself exists only in this return value."""
    _check_role(role)
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise Invalid([field_error("expiresAt", "in_the_past", "expiresAt must be in the future")])
    key = new_key()
    row = ApiKey(id=new_id(), name=name, role=role, key_hash=digest(key), prefix=_display_prefix(key), source="admin", created_at=now,
                 created_by=actor.identity, expires_at=expires_at)
    session.add(row)
    session.flush()
    record_audit(session, actor, "apiKey.create", "apiKey", row.id, reason, None, snapshot(row), request_id=request_id)
    return row, key


def get_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("apiKey", key_id)
    return row


def list_keys(session: Session, *, include_inactive: bool, limit: int, offset: int) -> Page[ApiKey]:
    statement = select(ApiKey).order_by(col(ApiKey.created_at).desc(), ApiKey.id)
    if not include_inactive:
        statement = statement.where(col(ApiKey.revoked_at).is_(None))
    return paginate(session, statement, limit, offset)


def rotate_key(session: Session, actor: Actor, key_id: str, *, grace: timedelta, reason: str | None = None,
               request_id: str | None = None) -> tuple[ApiKey, str, ApiKey]:
    """(new row, new key, old row). The old key stays valid for `grace` (never longer than it already would)."""
    old = get_key(session, key_id)
    now = utcnow()
    if not _record(old).valid_at(now):
        raise Conflict(f"apiKey {key_id} is revoked or expired and cannot be rotated; create a new key", code="key_not_active")
    if old.replaced_by is not None:
        raise Conflict(f"apiKey {key_id} was already rotated (to {old.replaced_by})", code="key_already_rotated")
    before = snapshot(old)
    key = new_key()
    new = ApiKey(id=new_id(), name=old.name, role=old.role, key_hash=digest(key), prefix=_display_prefix(key), source="admin", created_at=now,
                 created_by=actor.identity)
    session.add(new)
    ends = now + grace
    old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
    old.replaced_by = new.id
    session.add(old)
    session.flush()
    record_audit(session, actor, "apiKey.rotate", "apiKey", old.id, reason, before, {**(snapshot(old) or {}), "newKeyId": new.id},
                 request_id=request_id)
    return new, key, old


def revoke_key(session: Session, actor: Actor, key_id: str, *, reason: str | None = None, request_id: str | None = None) -> ApiKey:
    row = get_key(session, key_id)
    if row.revoked_at is not None:
        return row
    before = snapshot(row)
    row.revoked_at = utcnow()
    row.revoked_by = actor.identity
    session.add(row)
    session.flush()
    record_audit(session, actor, "apiKey.revoke", "apiKey", row.id, reason, before, snapshot(row), request_id=request_id)
    return row
