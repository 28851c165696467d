"""POSTs TMF events from the hub delivery outbox to the listeners' callbacks, at least once.

Each pass claims the due deliveries (the first pending one per listener and resource, see
services.hub_delivery), POSTs them concurrently (one per resource at a time, so each resource's
events arrive in order), and records the outcome: a 2xx is delivered, anything else (a connection
refused, a timeout, a 3xx/4xx/5xx) is retried with exponential back-off until the retry window has
passed, then the delivery is failed and waits for the listener to replay it.

Nothing is kept in memory between passes: a new dispatcher (after a restart) continues from the
database. Run it beside the worker (`run_hub_dispatcher`) or alone (`o2c hub-dispatcher`)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from persistence.db import session_scope
from services.hub_delivery import SIGNATURE_HEADER, DueDelivery, RetryPolicy, claim_due, mark_attempt_failed, mark_delivered, signature

log = logging.getLogger(__name__)

USER_AGENT = "o2c-hub/1"


def encode_body(body: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact UTF-8 JSON."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class PassResult:
    attempted: int
    delivered: int


class HubDispatcher:
    def __init__(self, db_url: str, *, policy: RetryPolicy | None = None, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), wall_clock: Callable[[], float] = time.time,
                 timeout_s: float = 10.0, batch_size: int = 100, concurrency: int = 8, lease: timedelta | None = None) -> None:
        """`clock` schedules retries (inject one to test back-off); `wall_clock` stamps signatures,
        which listeners compare with their own clock, so it stays real."""
        self.db_url = db_url
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.wall_clock = wall_clock
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        # Long enough that a slow listener is not sent the same event twice while we wait for it.
        self.lease = lease or timedelta(seconds=timeout_s * 3 + 30)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                              headers={"User-Agent": USER_AGENT})

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> "HubDispatcher":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def deliver_due(self) -> PassResult:
        """One pass: tries every claimed due delivery once."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return PassResult(0, 0)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(delivery: DueDelivery) -> bool:
            async with gate:
                return await self._deliver(delivery)

        outcomes = await asyncio.gather(*(one(d) for d in claimed))
        return PassResult(len(claimed), sum(outcomes))

    async def drain(self, max_passes: int = 1000) -> int:
        """Passes until nothing is due (a resource's next event becomes due as soon as the one before
        it is delivered). Returns how many were delivered."""
        delivered = 0
        for _ in range(max_passes):
            result = await self.deliver_due()
            delivered += result.delivered
            if result.attempted == 0:
                break
        return delivered

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        log.info("hub dispatcher running (retry window %s)", self.policy.window)
        while not stop.is_set():
            try:
                result = await self.deliver_due()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the dispatcher
                log.exception("hub dispatcher pass failed")
                result = PassResult(0, 0)
            if result.delivered:
                continue  # the next events of those resources are due now
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def _deliver(self, delivery: DueDelivery) -> bool:
        content = encode_body(delivery.body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(delivery.secret, content, int(self.wall_clock())),
            "X-O2C-Event-Id": delivery.event_id,
            "X-O2C-Delivery-Id": str(delivery.id),
            "X-O2C-Sequence": str(delivery.sequence),
            "X-O2C-Attempt": str(delivery.attempts + 1),
        }
        status_code: int | None = None
        try:
            response = await self.http.post(delivery.url, content=content, headers=headers)
            status_code = response.status_code
            if 200 <= status_code < 300:
                await asyncio.to_thread(self._record, mark_delivered, delivery.id, status_code)
                return True
            error = f"HTTP {status_code}: {response.text[:300]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - anything else is a failed attempt too
            error = f"{type(exc).__name__}: {exc}"
        status = await asyncio.to_thread(self._record_failure, delivery.id, error, status_code)
        log.warning("hub delivery %s (%s to %s) attempt %d failed: %s%s", delivery.id, delivery.event_id, delivery.url,
                    delivery.attempts + 1, error, "; giving up" if status == "failed" else "")
        return False

    def _claim(self) -> list[DueDelivery]:
        with session_scope(self.db_url) as session:
            return claim_due(session, self.clock(), self.lease, self.batch_size)

    def _record(self, mark: Callable[..., None], delivery_id: int, status_code: int | None) -> None:
        with session_scope(self.db_url) as session:
            mark(session, delivery_id, self.clock(), status_code)

    def _record_failure(self, delivery_id: int, error: str, status_code: int | None) -> str | None:
        with session_scope(self.db_url) as session:
            return mark_attempt_failed(session, delivery_id, error, self.clock(), self.policy, status_code)


def dispatcher_from_env(db_url: str, **overrides: Any) -> HubDispatcher:
    """A dispatcher configured by O2C_HUB_* variables (retry policy, O2C_HUB_TIMEOUT_S, O2C_HUB_CONCURRENCY)."""
    import os

    options: dict[str, Any] = {"policy": RetryPolicy.from_env()}
    if os.environ.get("O2C_HUB_TIMEOUT_S"):
        options["timeout_s"] = float(os.environ["O2C_HUB_TIMEOUT_S"])
    if os.environ.get("O2C_HUB_CONCURRENCY"):
        options["concurrency"] = int(os.environ["O2C_HUB_CONCURRENCY"])
    options.update(overrides)
    return HubDispatcher(db_url, **options)


async def run_hub_dispatcher(db_url: str, stop_event: asyncio.Event, *, interval_s: float = 1.0, **overrides: Any) -> None:
    """Delivers hub events until `stop_event` is set. The worker runs it as a task beside the outbox relay."""
    dispatcher = dispatcher_from_env(db_url, **overrides)
    try:
        await dispatcher.run(stop_event, interval_s=interval_s)
    finally:
        await dispatcher.aclose()
