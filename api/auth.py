"""Who may do what: the role table, the per-route exceptions to it, and how a request's key is found.

API keys live in the database (`api_key`, SHA-256 digests; services.api_keys creates, rotates and
revokes them). The keys in O2C_API_KEYS (the development keys unless set) are seeded into that table
at start, so every key is looked up the same way and any of them can be revoked. docs/access-control.md
describes the roles."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from services import api_keys
from services.audit import Actor
from services.query import utcnow

R = frozenset({"read"})
RW = frozenset({"read", "write"})
W = frozenset({"write"})

# Resource names used by the routers.
RESOURCES = (
    "customer",
    "billingAccount",
    "productOffering",
    "productOrder",
    "product",
    "usage",
    "rejectedUsage",
    "customerBill",
    "payment",
    "ossCallback",
    "audit",
    "apiKey",
)

_BUSINESS = ("customer", "billingAccount", "productOffering", "productOrder", "product", "usage", "rejectedUsage", "customerBill", "payment")

# role -> resource -> allowed actions. With ROUTE_GRANTS below (and the dunning and hub routers' own
# tables for their extensions), the one place that says who may do what.
ROLE_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "admin": {resource: RW for resource in RESOURCES},
    # The CRM: customers, accounts, orders; reads the catalog and inventory; delivers usage (mediation).
    "crm": {
        "customer": RW,
        "billingAccount": RW,
        "productOffering": R,
        "productOrder": RW,
        "product": R,
        "usage": RW,
    },
    # Support reads everything (never the keys) and takes the non-financial actions: recycle rejected
    # usage, cancel an order (ROUTE_GRANTS), pause and resume dunning (api.routers.dunning).
    "support": {**{resource: R for resource in _BUSINESS}, "rejectedUsage": RW, "audit": R},
    # Finance: payments and bills (credit notes, held drafts, bills on demand: api.routers.bills),
    # fee waivers and payment retries in dunning (api.routers.dunning).
    "finance": {"payment": RW, "customerBill": R, "audit": R},
    "oss": {"ossCallback": W},
}

# (method, route path) -> roles allowed besides those the route's resource grant admits: an action a
# role may take without being given the whole resource.
ROUTE_GRANTS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/tmf-api/productOrderingManagement/v4/cancelProductOrder"): frozenset({"support"}),
    # Suspend / restore a service (docs/service-state.md): a non-financial action.
    ("PATCH", "/tmf-api/productInventory/v4/product/{product_id}"): frozenset({"support"}),
}

# Who may log in to the staff console (crm and oss are machine roles).
CONSOLE_ROLES = frozenset({"admin", "support", "finance"})


@dataclass(frozen=True)
class Principal:
    """What a route's auth dependency returns: the role, and the actor for audit entries."""

    role: str
    actor: Actor | None = field(default=None, compare=False)


class InvalidKeyConfig(ValueError):
    pass


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The keys configured in O2C_API_KEYS ("key:role,..."), kept as SHA-256 digests only. They are
    seeded into the database at start (KeyStore); the ring itself is the parsed, validated setting."""

    def __init__(self, spec: str) -> None:
        self._entries: list[tuple[bytes, str]] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, role = part.rpartition(":")
            if not sep or not key or role not in ROLE_GRANTS:
                raise InvalidKeyConfig(f"api key entry must be 'key:role' with role in {sorted(ROLE_GRANTS)}; got role {role!r}")
            self._entries.append((_digest(key), role))

    @property
    def entries(self) -> list[tuple[bytes, str]]:
        return list(self._entries)

    def role_for(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = _digest(key)
        found: str | None = None
        for stored, role in self._entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = role
        return found


class AccessSettings(BaseSettings):
    """Access-control settings (O2C_* environment)."""

    model_config = SettingsConfigDict(env_prefix="O2C_", extra="ignore")

    api_key_rotation_grace_s: float = 24 * 3600.0  # how long a rotated key keeps working
    api_key_cache_s: float = 2.0  # how long a process trusts a looked-up key (revocation elsewhere takes this long)
    console_session_ttl_s: float = 8 * 3600.0
    console_cookie_secure: bool = False  # set true behind HTTPS
    temporal_ui_url: str = "http://127.0.0.1:8233"


DELEGATION_PREFIX = "o2c-delegated-"


class KeyStore:
    """Finds the actor behind an X-API-Key: keys in the database (cached for `cache_s`, dropped from the
    cache at once when this process revokes or rotates), and short-lived in-process delegation tokens
    the console uses to call the API on a staff member's behalf (they never leave the process)."""

    def __init__(self, db_url: str, ring: KeyRing, *, cache_s: float = 2.0) -> None:
        self.db_url = db_url
        self.ring = ring
        self.cache_s = cache_s
        self._cache: dict[str, tuple[api_keys.KeyRecord | None, float]] = {}
        self._delegated: dict[str, tuple[Actor, float]] = {}
        self._lock = threading.Lock()

    # the interface the routers use
    def role_for(self, key: str | None) -> str | None:
        actor = self.actor_for(key)
        return actor.role if actor else None

    def actor_for(self, key: str | None) -> Actor | None:
        if not key:
            return None
        if key.startswith(DELEGATION_PREFIX):
            return self._delegated_actor(key)
        record = self._record(key)
        if record is None or not record.valid_at(utcnow()):
            return None
        return record.actor

    def _record(self, key: str) -> api_keys.KeyRecord | None:
        digest = api_keys.digest(key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        record = api_keys.lookup(self.db_url, key)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (record, now)
        return record

    def forget(self) -> None:
        """Drop every cached lookup (after a revocation or rotation)."""
        with self._lock:
            self._cache.clear()

    def seed(self) -> int:
        return api_keys.seed_configured_keys(self.db_url, self.ring.entries)

    # delegation
    def delegate(self, actor: Actor, ttl: timedelta = timedelta(seconds=60)) -> str:
        token = DELEGATION_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for stale in [t for t, (_, until) in self._delegated.items() if until <= now]:
                del self._delegated[stale]
            self._delegated[token] = (actor, now + ttl.total_seconds())
        return token

    def end_delegation(self, token: str) -> None:
        with self._lock:
            self._delegated.pop(token, None)

    def _delegated_actor(self, token: str) -> Actor | None:
        with self._lock:
            entry = self._delegated.get(token)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]


def allowed(role: str, resource: str, action: str) -> bool:
    return action in ROLE_GRANTS.get(role, {}).get(resource, frozenset())


def route_allows(role: str, method: str, route_path: str | None) -> bool:
    return route_path is not None and role in ROUTE_GRANTS.get((method.upper(), route_path), frozenset())
