"""TMF637 product status and the moves between them."""
from __future__ import annotations

from enum import StrEnum


class ProductStatus(StrEnum):
    CREATED = "created"
    PENDING_ACTIVE = "pendingActive"
    ACTIVE = "active"
    PENDING_TERMINATE = "pendingTerminate"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    CANCELLED = "cancelled"
    ABORTED = "aborted"


_ALLOWED: dict[ProductStatus, frozenset[ProductStatus]] = {
    ProductStatus.CREATED: frozenset({ProductStatus.PENDING_ACTIVE, ProductStatus.ACTIVE, ProductStatus.CANCELLED, ProductStatus.ABORTED}),
    ProductStatus.PENDING_ACTIVE: frozenset({ProductStatus.ACTIVE, ProductStatus.ABORTED, ProductStatus.CANCELLED}),
    ProductStatus.ACTIVE: frozenset({ProductStatus.SUSPENDED, ProductStatus.PENDING_TERMINATE, ProductStatus.TERMINATED}),
    ProductStatus.SUSPENDED: frozenset({ProductStatus.ACTIVE, ProductStatus.PENDING_TERMINATE, ProductStatus.TERMINATED}),
    ProductStatus.PENDING_TERMINATE: frozenset({ProductStatus.TERMINATED}),
}


def can_move(current: ProductStatus, target: ProductStatus) -> bool:
    return current == target or target in _ALLOWED.get(current, frozenset())
