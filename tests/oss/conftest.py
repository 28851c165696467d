"""Fixtures: the OSS simulator and a callback receiver, each served by uvicorn on a free port."""

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from oss_sim.app import create_app
from oss_sim.settings import SimSettings
from tests.support.servers import ServerThread

CALLBACK_API_KEY = "test-callback-key"
SIM_DELAY_S = 0.1


@dataclass
class ReceivedCallback:
    path: str
    api_key: str | None
    body: dict[str, Any]
    answered: int

    @property
    def order(self) -> dict[str, Any]:
        return self.body["event"]["serviceOrder"]


@dataclass
class CallbackReceiver:
    """Records every callback POST (also those it answered with 503 on purpose)."""

    url: str = ""
    fail_next: int = 0
    _received: list[ReceivedCallback] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(path: str, request: Request) -> Response:
            with self._lock:
                status = 503 if self.fail_next > 0 else 204
                self.fail_next = max(0, self.fail_next - 1)
                self._received.append(
                    ReceivedCallback("/" + path, request.headers.get("x-api-key"), await request.json(), status)
                )
            return Response(status_code=status)

        return app

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self.fail_next = 0

    def received(self, order_id: str | None = None) -> list[ReceivedCallback]:
        """Callbacks the receiver accepted, optionally only those about one order."""
        with self._lock:
            return [
                c for c in self._received if c.answered == 204 and (order_id is None or c.order["id"] == order_id)
            ]

    def attempts(self, order_id: str) -> list[ReceivedCallback]:
        with self._lock:
            return [c for c in self._received if c.order["id"] == order_id]

    async def wait_for(self, order_id: str, timeout_s: float = 5.0) -> ReceivedCallback:
        """The first accepted callback about the order; fails the test if none comes in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if callbacks := self.received(order_id):
                return callbacks[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no callback for order {order_id} within {timeout_s}s")


WaitUntil = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


async def _wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
def wait_until() -> WaitUntil:
    """Polls an async condition until it holds (a wait for an outcome, not a speed measurement)."""
    return _wait_until


@pytest.fixture(scope="session")
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    with ServerThread(receiver.app()) as server:
        receiver.url = server.url
        yield receiver


@pytest.fixture(scope="session")
def sim_settings(callback_receiver: CallbackReceiver) -> SimSettings:
    return SimSettings(
        callback_url=f"{callback_receiver.url}/oss/callbacks",
        callback_api_key=CALLBACK_API_KEY,
        default_delay_s=SIM_DELAY_S,
        callback_attempts=4,
        callback_backoff_s=0.02,
        callback_timeout_s=2.0,
    )


@pytest.fixture(scope="session")
def sim_url(sim_settings: SimSettings) -> Iterator[str]:
    with ServerThread(create_app(sim_settings)) as server:
        yield server.url


@pytest.fixture(autouse=True)
def fresh_simulator(sim_url: str, callback_receiver: CallbackReceiver) -> None:
    httpx.post(f"{sim_url}/sim/reset").raise_for_status()
    callback_receiver.clear()


_numbers = itertools.count(1)


@pytest.fixture
def new_msisdn() -> Callable[[], str]:
    """Distinct MSISDNs, so a test never trips over a service another test created."""
    return lambda: f"4917{next(_numbers):08d}"


@pytest.fixture
async def sim(sim_url: str) -> Any:
    async with httpx.AsyncClient(base_url=sim_url, timeout=5.0) as client:
        yield client
