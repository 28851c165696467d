"""Staff accounts for the console and their sessions.

Passwords are hashed with scrypt (hashlib, N=2^15, r=8, p=1, 16-byte salt), stored as
`scrypt$N$r$p$salt$hash` so the parameters can be raised later. A session is a random token in an
HttpOnly cookie; the database keeps only its SHA-256, the user, its CSRF token and when it expires."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlmodel import Session, col, select

from persistence.tables import StaffSession, StaffUser
from services.api_keys import ROLES
from services.audit import Actor, record_audit, snapshot
from services.errors import Conflict, Invalid, NotFound, field_error
from services.query import new_id, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD_LENGTH = 12


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(derived).decode()))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM,
                                 dklen=len(base64.b64decode(expected)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, base64.b64decode(expected))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to check against when the username is unknown, so a wrong name takes as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def staff_actor(user: StaffUser) -> Actor:
    return Actor(kind="staff", id=user.username, role=user.role, name=user.display_name)


# --- accounts ---------------------------------------------------------------------------------------


def create_staff(session: Session, actor: Actor, *, username: str, display_name: str, role: str, password: str,
                 reason: str | None = None) -> StaffUser:
    username = username.strip().lower()
    errors = []
    if not username or not username.replace(".", "").replace("-", "").replace("_", "").isalnum():
        errors.append(field_error("username", "invalid", "letters, digits, '.', '-' and '_' only"))
    if role not in ROLES:
        errors.append(field_error("role", "unknown_role", f"role must be one of {', '.join(ROLES)}"))
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append(field_error("password", "too_short", f"at least {MIN_PASSWORD_LENGTH} characters"))
    if errors:
        raise Invalid(errors)
    if session.exec(select(StaffUser).where(StaffUser.username == username)).first() is not None:
        raise Conflict(f"staff user {username!r} exists already", code="staff_user_exists")
    now = utcnow()
    user = StaffUser(id=new_id(), username=username, display_name=display_name.strip() or username, role=role,
                     password_hash=hash_password(password), active=True, created_at=now, updated_at=now)
    session.add(user)
    session.flush()
    record_audit(session, actor, "staffUser.create", "staffUser", user.id, reason, None, snapshot(user))
    return user


def get_staff(session: Session, username: str) -> StaffUser:
    user = session.exec(select(StaffUser).where(StaffUser.username == username.strip().lower())).first()
    if user is None:
        raise NotFound("staffUser", username)
    return user


def list_staff(session: Session) -> list[StaffUser]:
    return list(session.exec(select(StaffUser).order_by(StaffUser.username)))


def set_active(session: Session, actor: Actor, username: str, active: bool, reason: str | None = None) -> StaffUser:
    user = get_staff(session, username)
    if user.active == active:
        return user
    before = snapshot(user)
    user.active = active
    user.updated_at = utcnow()
    session.add(user)
    if not active:  # a disabled account's sessions end now
        for row in session.exec(select(StaffSession).where(StaffSession.staff_user_id == user.id, col(StaffSession.ended_at).is_(None))):
            row.ended_at = user.updated_at
            session.add(row)
    session.flush()
    record_audit(session, actor, "staffUser.enable" if active else "staffUser.disable", "staffUser", user.id, reason, before, snapshot(user))
    return user


def set_password(session: Session, actor: Actor, username: str, password: str, reason: str | None = None) -> StaffUser:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid([field_error("password", "too_short", f"at least {MIN_PASSWORD_LENGTH} characters")])
    user = get_staff(session, username)
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    session.add(user)
    session.flush()
    record_audit(session, actor, "staffUser.setPassword", "staffUser", user.id, reason, None, None)
    return user


def authenticate(session: Session, username: str, password: str) -> StaffUser | None:
    """The active user with this name and password, else None (the same work is done either way)."""
    user = session.exec(select(StaffUser).where(StaffUser.username == username.strip().lower())).first()
    if user is None:
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, user.password_hash) or not user.active:
        return None
    return user


# --- sessions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleSession:
    user: StaffUser
    session: StaffSession

    @property
    def actor(self) -> Actor:
        return staff_actor(self.user)


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, user: StaffUser, ttl: timedelta, *, user_agent: str | None = None,
                  now: datetime | None = None) -> tuple[str, StaffSession]:
    """(cookie token, row). The token is returned once; the row keeps its digest."""
    token = secrets.token_urlsafe(32)
    now = now or utcnow()
    row = StaffSession(id=_token_digest(token), staff_user_id=user.id, csrf_token=secrets.token_urlsafe(32), created_at=now,
                       expires_at=now + ttl, user_agent=(user_agent or "")[:300] or None)
    session.add(row)
    record_audit(session, staff_actor(user), "console.login", "staffUser", user.id, None, None, {"sessionExpiresAt": row.expires_at})
    return token, row


def resolve_session(session: Session, token: str | None, now: datetime | None = None) -> ConsoleSession | None:
    """The live session for a cookie token: not ended, not expired, its user still active."""
    if not token:
        return None
    row = session.get(StaffSession, _token_digest(token))
    now = now or utcnow()
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    user = session.get(StaffUser, row.staff_user_id)
    if user is None or not user.active:
        return None
    return ConsoleSession(user=user, session=row)


def end_session(session: Session, token: str | None) -> StaffUser | None:
    if not token:
        return None
    row = session.get(StaffSession, _token_digest(token))
    if row is None or row.ended_at is not None:
        return None
    row.ended_at = utcnow()
    session.add(row)
    user = session.get(StaffUser, row.staff_user_id)
    if user is not None:
        record_audit(session, staff_actor(user), "console.logout", "staffUser", user.id, None, None, None)
    return user
