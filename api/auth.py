"""API keys and roles. Keys live in memory only as SHA-256 digests; the role table below is the
whole authorisation policy."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

R = frozenset({"read"})
RW = frozenset({"read", "write"})
W = frozenset({"write"})

# Resource names used by the routers. `support` reads everything, `admin` may do everything.
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
)

# role -> resource -> allowed actions. The one place that says who may do what.
ROLE_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "admin": {resource: RW for resource in RESOURCES},
    "crm": {
        "customer": RW,
        "billingAccount": RW,
        "productOffering": R,
        "productOrder": RW,
        "product": R,
        "usage": RW,
    },
    # support reads everything, and recycles rejected usage once the cause is fixed (its only write).
    "support": {**{resource: R for resource in RESOURCES if resource != "ossCallback"}, "rejectedUsage": RW},
    "finance": {"payment": RW, "customerBill": R},
    "oss": {"ossCallback": W},
}


@dataclass(frozen=True)
class Principal:
    role: str


class InvalidKeyConfig(ValueError):
    pass


class KeyRing:
    """Looks an API key up by its digest. Every stored digest is compared with compare_digest so the
    time taken does not reveal how much of a key matched."""

    def __init__(self, spec: str) -> None:
        self._entries: list[tuple[bytes, str]] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, role = part.rpartition(":")
            if not sep or not key or role not in ROLE_GRANTS:
                raise InvalidKeyConfig(f"api key entry must be 'key:role' with role in {sorted(ROLE_GRANTS)}; got role {role!r}")
            self._entries.append((_digest(key), role))

    def role_for(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = _digest(key)
        found: str | None = None
        for stored, role in self._entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = role
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def allowed(role: str, resource: str, action: str) -> bool:
    return action in ROLE_GRANTS.get(role, {}).get(resource, frozenset())
