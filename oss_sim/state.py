"""All in-memory state of one simulator instance: orders, cancellations, inventory, rules."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from oss_sim.inventory import AppliedChange, ServiceInventory
from oss_sim.rules import RuleBook

FINAL_STATES = frozenset({"completed", "failed", "rejected", "cancelled"})


@dataclass
class OrderItem:
    id: str
    action: str
    characteristics: dict[str, Any]

    @property
    def msisdn(self) -> str:
        return self.characteristics["msisdn"]

    def to_tmf(self, order_state: str) -> dict[str, object]:
        return {
            "id": self.id,
            "action": self.action,
            # The simulator processes an order's items together, so they share its state.
            "state": order_state,
            "service": {
                "serviceCharacteristic": [{"name": k, "value": v} for k, v in self.characteristics.items()],
                "@type": "Service",
            },
            "@type": "ServiceOrderItem",
        }


@dataclass
class SimOrder:
    id: str
    href: str
    external_id: str | None
    items: list[OrderItem]
    order_date: str
    state: str = "acknowledged"
    callback_url: str | None = None
    category: str | None = None
    description: str | None = None
    completion_date: str | None = None
    cancellation_date: str | None = None
    cancellation_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    rejection: tuple[str, str] | None = None  # (code, reason), kept so a replay answers alike
    applied: list[AppliedChange] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_tmf(self) -> dict[str, object]:
        document: dict[str, object] = {
            "id": self.id,
            "href": self.href,
            "externalId": self.external_id,
            "state": self.state,
            "orderDate": self.order_date,
            "completionDate": self.completion_date,
            "cancellationDate": self.cancellation_date,
            "cancellationReason": self.cancellation_reason,
            "category": self.category,
            "description": self.description,
            "callbackUrl": self.callback_url,
            "note": [{"text": text, "@type": "Note"} for text in self.notes] or None,
            "serviceOrderItem": [item.to_tmf(self.state) for item in self.items],
            "@type": "ServiceOrder",
        }
        return {key: value for key, value in document.items() if value is not None}


@dataclass
class SimState:
    orders: dict[str, SimOrder] = field(default_factory=dict)
    order_id_by_external_id: dict[str, str] = field(default_factory=dict)
    # Fingerprints of the items first submitted under an externalId, to spot key reuse.
    fingerprint_by_external_id: dict[str, str] = field(default_factory=dict)
    cancellations: dict[str, dict[str, object]] = field(default_factory=dict)
    inventory: ServiceInventory = field(default_factory=ServiceInventory)
    rules: RuleBook = field(default_factory=RuleBook)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    order_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def order_by_external_id(self, external_id: str) -> SimOrder | None:
        order_id = self.order_id_by_external_id.get(external_id)
        return self.orders[order_id] if order_id else None

    def track(self, task: asyncio.Task[None], order_id: str | None = None) -> None:
        """Keep a reference so background work is not garbage-collected and can be stopped."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if order_id is not None:
            self.order_tasks[order_id] = task
            task.add_done_callback(lambda _t: self.order_tasks.pop(order_id, None))

    def stop_background_work(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.order_tasks.clear()

    def reset(self) -> None:
        self.stop_background_work()
        self.orders.clear()
        self.order_id_by_external_id.clear()
        self.fingerprint_by_external_id.clear()
        self.cancellations.clear()
        self.inventory.clear()
        self.rules.clear()
