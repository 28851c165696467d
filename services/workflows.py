"""Reaching Temporal from request handlers: connect on first use, and turn transport failures into
`Unavailable` so the caller can answer 503 and the client can retry."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal.client import WorkflowGateway
from services.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TEMPORAL_UNAVAILABLE = "temporal_unavailable"
# Statuses that mean "Temporal is not there right now" rather than "your request is wrong".
_TRANSIENT = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED})


class LazyWorkflows:
    """Holds the WorkflowGateway; connects on the first call so the API can start (and serve reads)
    while Temporal is down. A failed connect is retried on the next call."""

    def __init__(self, connect: Callable[[], Awaitable[WorkflowGateway]] | None = None, gateway: WorkflowGateway | None = None,
                 connect_timeout_s: float = 5.0) -> None:
        if connect is None and gateway is None:
            raise ValueError("give a connect function or a gateway")
        self._connect = connect
        self._gateway = gateway
        self._lock = asyncio.Lock()
        self._timeout = connect_timeout_s

    async def get(self) -> WorkflowGateway:
        if self._gateway is not None:
            return self._gateway
        async with self._lock:
            if self._gateway is None:
                assert self._connect is not None
                try:
                    self._gateway = await asyncio.wait_for(self._connect(), self._timeout)
                except (RuntimeError, OSError, RPCError, asyncio.TimeoutError) as exc:
                    log.warning("cannot connect to Temporal: %s", exc)
                    raise Unavailable(f"Temporal is not reachable: {exc}", code=TEMPORAL_UNAVAILABLE) from exc
        return self._gateway

    async def call(self, operation: Callable[[WorkflowGateway], Awaitable[T]]) -> T:
        """Run one gateway operation; Temporal being down raises Unavailable, other errors pass through."""
        gateway = await self.get()
        try:
            return await operation(gateway)
        except RPCError as exc:
            if exc.status in _TRANSIENT:
                raise Unavailable(f"Temporal is not reachable: {exc.message}", code=TEMPORAL_UNAVAILABLE) from exc
            raise

    async def health(self) -> tuple[bool, str | None]:
        try:
            gateway = await self.get()
        except Unavailable as exc:
            return False, exc.message
        client = getattr(gateway, "client", None)
        if client is None:  # an injected fake without a client: nothing to probe
            return True, None
        try:
            ok = await asyncio.wait_for(client.service_client.check_health(), self._timeout)
        except Exception as exc:  # any failure of the probe means "down" for /health
            return False, str(exc) or type(exc).__name__
        return bool(ok), None if ok else "health check returned not serving"


def is_not_found(exc: BaseException) -> bool:
    """The workflow does not exist (never started, or already closed)."""
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND
