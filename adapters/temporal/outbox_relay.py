"""Delivers outbox messages to the workflows they are meant for, at least once.

Runs beside the worker. A message that cannot be delivered (Temporal unreachable, the account's
workflow not running yet) stays in the outbox and is tried again with back-off; receivers
de-duplicate, so a message delivered twice (two relays, a crash after the signal and before the
bookkeeping) does no harm."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from adapters.temporal.client import WorkflowGateway
from persistence.db import session_scope
from services.billing_accounts import ROAMING_OPT_OUT_TOPIC, roaming_opt_out_signal
from services.outbox import DueMessage, due_messages, mark_delivered, mark_failed
from services.spending_monitor import SPENDING_TOPIC
from services.stripe_webhooks import PAYMENT_RESULT_TOPIC, payment_signal
from services.workflows import is_not_found
from workflows.messages import SIGNAL_ROAMING_DATA_CONTINUE, SpendingThresholdCrossed, billing_account_workflow_id

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def workflow_handlers(gateway: WorkflowGateway) -> dict[str, Handler]:
    async def spending_threshold(payload: dict[str, Any]) -> None:
        event = SpendingThresholdCrossed(
            period_start=datetime.fromisoformat(payload["periodStart"]),
            threshold_percent=int(payload["thresholdPercent"]),
            usage_cost=Decimal(payload["usageCost"]),
            limit=Decimal(payload["limit"]),
            hard_cap=bool(payload["hardCap"]),
            kind=payload.get("kind", "spending"),
        )
        await gateway.spending_threshold(payload["billingAccountId"], event)

    async def payment_result(payload: dict[str, Any]) -> None:
        # A Stripe webhook's final payment result (services.stripe_webhooks) the API could not signal.
        billing_account_id, signal = payment_signal(payload)
        try:
            await gateway.payment_received(billing_account_id, signal)
        except Exception as exc:
            if is_not_found(exc):
                return  # no workflow runs for the account: it allocates the payment when it starts
            raise

    async def roaming_opt_out(payload: dict[str, Any]) -> None:
        # An opt-out of the roaming data limit (services.billing_accounts): the workflow lifts this cycle's barring.
        billing_account_id, signal = roaming_opt_out_signal(payload)
        try:
            await gateway.client.get_workflow_handle(billing_account_workflow_id(billing_account_id)).signal(SIGNAL_ROAMING_DATA_CONTINUE, signal)
        except Exception as exc:
            if is_not_found(exc):
                return  # no workflow bills the account, so nothing is barred; one started later reads the opt-out
            raise

    return {SPENDING_TOPIC: spending_threshold, PAYMENT_RESULT_TOPIC: payment_result, ROAMING_OPT_OUT_TOPIC: roaming_opt_out}


class OutboxRelay:
    def __init__(self, db_url: str, handlers: Mapping[str, Handler], *, batch_size: int = 100,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.db_url = db_url
        self.handlers = dict(handlers)
        self.batch_size = batch_size
        self.clock = clock

    async def deliver_due(self) -> int:
        """One pass: tries every due message once. Returns how many were delivered."""
        due = await asyncio.to_thread(self._due)
        delivered = 0
        for message in due:
            try:
                await self.handlers[message.topic](message.payload)
            except Exception as exc:  # noqa: BLE001 - any failure is retried later; the loop must go on
                log.warning("outbox message %s (%s) not delivered, attempt %d: %r", message.key, message.topic, message.attempts + 1, exc)
                await asyncio.to_thread(self._record, mark_failed, message.id, repr(exc))
                continue
            await asyncio.to_thread(self._record, mark_delivered, message.id)
            delivered += 1
        return delivered

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.deliver_due()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the relay
                log.exception("outbox relay pass failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    def _due(self) -> list[DueMessage]:
        with session_scope(self.db_url) as session:
            return due_messages(session, self.handlers.keys(), self.clock(), self.batch_size)

    def _record(self, mark: Callable[..., None], message_id: int, *args: Any) -> None:
        with session_scope(self.db_url) as session:
            mark(session, message_id, *args, self.clock())
