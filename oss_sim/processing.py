"""The order lifecycle: accept or reject, complete now or later, cancel (undoing if needed)."""

import asyncio
import uuid
from typing import NoReturn

from oss_sim.callbacks import CallbackSender, state_change_event
from oss_sim.clock import utc_now_iso
from oss_sim.errors import SimError
from oss_sim.inventory import AppliedChange, ServiceChangeRefused
from oss_sim.models import ServiceOrderCreate
from oss_sim.order_items import fingerprint, parse_items
from oss_sim.rules import NORMAL, Behaviour, OrderFacts, parse_behaviour_header
from oss_sim.settings import SimSettings
from oss_sim.state import OrderItem, SimOrder, SimState

# Barring and termination are switch commands a real OSS applies at once; activation takes time.
IMMEDIATE_ACTIONS = frozenset({"modify", "delete"})


class OrderRejected(Exception):
    """The order was stored as `rejected`; the API answers 400 with this code and reason."""

    def __init__(self, order: SimOrder, code: str, reason: str) -> None:
        super().__init__(reason)
        self.order = order
        self.code = code
        self.reason = reason


class OrderProcessor:
    def __init__(self, state: SimState, settings: SimSettings, sender: CallbackSender) -> None:
        self._state = state
        self._settings = settings
        self._sender = sender

    def submit(self, body: ServiceOrderCreate, behaviour_header: str | None, base_href: str) -> tuple[SimOrder, bool]:
        """Returns the order and whether it was created now (False: an idempotent replay)."""
        requested = parse_behaviour_header(behaviour_header) if behaviour_header else None
        items = parse_items(body)
        existing = self._replayed_order(body.externalId, items)
        if existing is not None:
            return existing, False

        refusal = self._refusal(items)
        if refusal is not None:
            self._reject(self._new_order(body, items, base_href), refusal.code, refusal.reason)
        behaviour = requested or self._behaviour_by_rule(body.externalId, items)
        if behaviour.kind == "unavailable":
            raise SimError(503, "unavailable", "simulated OSS outage; nothing was stored")
        order = self._new_order(body, items, base_href)
        if behaviour.kind == "reject":
            self._reject(order, "rejected", "simulated rejection")

        self._note_activations(order)
        if behaviour.kind == "no-callback":
            order.state = "inProgress"
        elif behaviour == NORMAL and all(item.action in IMMEDIATE_ACTIONS for item in items):
            self._finish(order, fail_reason=None)
            self._state.track(asyncio.create_task(self._notify(order)))
        else:
            delay_s = self._settings.default_delay_s if behaviour.delay_s is None else behaviour.delay_s
            fail_reason = "simulated failure" if behaviour.kind == "fail" else None
            task = asyncio.create_task(self._complete_later(order, delay_s, fail_reason))
            self._state.track(task, order.id)
        return order, True

    def cancel(self, order_id: str, reason: str | None, base_href: str) -> dict[str, object]:
        """Cancels or, for a completed order, undoes it. Safe to repeat: o2c compensates with it."""
        order = self._state.orders.get(order_id)
        if order is None:
            raise SimError(404, "notFound", f"no service order {order_id!r}")
        if order.state == "completed":
            self._undo(order)
            self._mark_cancelled(order, reason)
        elif not order.is_final:
            task = self._state.order_tasks.pop(order.id, None)
            if task is not None:
                task.cancel()
            self._mark_cancelled(order, reason)
        # cancelled: already done; failed or rejected: nothing was applied, nothing to undo.
        cancellation_id = str(uuid.uuid4())
        cancellation: dict[str, object] = {
            "id": cancellation_id,
            "href": f"{base_href}/cancelServiceOrder/{cancellation_id}",
            "state": "done",
            "cancellationReason": reason,
            "effectiveCancellationDate": order.cancellation_date,
            "serviceOrder": {"id": order.id, "href": order.href, "@referredType": "ServiceOrder"},
            "@type": "CancelServiceOrder",
        }
        self._state.cancellations[cancellation_id] = cancellation
        return cancellation

    def _replayed_order(self, external_id: str | None, items: list[OrderItem]) -> SimOrder | None:
        if external_id is None:
            return None
        existing = self._state.order_by_external_id(external_id)
        if existing is None:
            return None
        if self._state.fingerprint_by_external_id[external_id] != fingerprint(items):
            raise SimError(
                409,
                "idempotencyConflict",
                f"externalId {external_id!r} was already used for a different order",
                serviceOrderId=existing.id,
            )
        if existing.rejection is not None:
            # Replaying a rejected order must give the caller the same answer as the first time.
            raise OrderRejected(existing, *existing.rejection)
        return existing

    def _new_order(self, body: ServiceOrderCreate, items: list[OrderItem], base_href: str) -> SimOrder:
        order_id = str(uuid.uuid4())
        order = SimOrder(
            id=order_id,
            href=f"{base_href}/serviceOrder/{order_id}",
            external_id=body.externalId,
            items=items,
            order_date=utc_now_iso(),
            callback_url=body.callbackUrl,
            category=body.category,
            description=body.description,
        )
        self._state.orders[order.id] = order
        if body.externalId is not None:
            self._state.order_id_by_external_id[body.externalId] = order.id
            self._state.fingerprint_by_external_id[body.externalId] = fingerprint(items)
        return order

    def _refusal(self, items: list[OrderItem]) -> ServiceChangeRefused | None:
        try:
            for item in items:
                self._state.inventory.check_can_order(item.action, item.msisdn)
        except ServiceChangeRefused as refused:
            return refused
        return None

    def _reject(self, order: SimOrder, code: str, reason: str) -> NoReturn:
        order.state = "rejected"
        order.rejection = (code, reason)
        order.notes.append(reason)
        raise OrderRejected(order, code, reason)

    def _behaviour_by_rule(self, external_id: str | None, items: list[OrderItem]) -> Behaviour:
        facts = OrderFacts(
            external_id=external_id,
            msisdns=frozenset(item.msisdn for item in items),
            product_offering_ids=frozenset(
                item.characteristics["productOfferingId"]
                for item in items
                if isinstance(item.characteristics.get("productOfferingId"), str)
            ),
            actions=frozenset(item.action for item in items),
        )
        return self._state.rules.take_match(facts) or NORMAL

    def _note_activations(self, order: SimOrder) -> None:
        for item in order.items:
            if item.action == "add":
                self._state.inventory.note_ordered(
                    item.msisdn,
                    order.id,
                    item.characteristics.get("productOfferingId"),
                    item.characteristics.get("customerId"),
                )

    async def _complete_later(self, order: SimOrder, delay_s: float, fail_reason: str | None) -> None:
        order.state = "inProgress"
        await asyncio.sleep(delay_s)
        if order.state != "inProgress":  # cancelled meanwhile
            return
        self._finish(order, fail_reason)
        await self._notify(order)

    def _finish(self, order: SimOrder, fail_reason: str | None) -> None:
        if fail_reason is None:
            try:
                order.applied = self._apply_all(order)
            except ServiceChangeRefused as refused:
                fail_reason = refused.reason
        if fail_reason is None:
            order.state = "completed"
            order.completion_date = utc_now_iso()
        else:
            order.state = "failed"
            order.notes.append(fail_reason)

    def _apply_all(self, order: SimOrder) -> list[AppliedChange]:
        """Applies every item or none: a refused item undoes the ones before it."""
        inventory = self._state.inventory
        applied: list[AppliedChange] = []
        try:
            for item in order.items:
                if item.action == "add":
                    applied.append(inventory.activate(item.msisdn, order.id))
                elif item.action == "modify":
                    roaming = item.characteristics.get("roamingDataBarred")
                    applied.append(inventory.modify(item.msisdn, order.id, barring=item.characteristics.get("barring"),
                                                    roaming_data_barred=None if roaming is None else roaming == "true"))
                else:
                    applied.append(inventory.terminate(item.msisdn, order.id))
        except ServiceChangeRefused:
            for change in reversed(applied):
                inventory.undo(change, order.id)
            raise
        return applied

    def _undo(self, order: SimOrder) -> None:
        for change in reversed(order.applied):
            self._state.inventory.undo(change, order.id)
        order.applied = []

    @staticmethod
    def _mark_cancelled(order: SimOrder, reason: str | None) -> None:
        order.state = "cancelled"
        order.cancellation_date = utc_now_iso()
        order.cancellation_reason = reason

    async def _notify(self, order: SimOrder) -> None:
        url = order.callback_url or self._settings.callback_url
        if url is None:
            return
        event = state_change_event(order_id=order.id, href=order.href, external_id=order.external_id, state=order.state)
        await self._sender.deliver(url, event)
