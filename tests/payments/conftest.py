"""Fixtures for payment tests: a fake Stripe over real HTTP, gateways, request and clock helpers."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator

import pytest

from adapters.payments.stripe_gateway import StripeGateway
from domain.payments import ChargeRequest
from tests.fakes.stripe_server import FakeStripeServer


@pytest.fixture(scope="session")
def _stripe_server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as server:
        yield server


@pytest.fixture
def fake_stripe(_stripe_server: FakeStripeServer) -> FakeStripeServer:
    """The shared fake server, emptied for this test (tests run one at a time)."""
    _stripe_server.reset()
    return _stripe_server


@pytest.fixture
def stripe_gateway(fake_stripe: FakeStripeServer) -> StripeGateway:
    # No SDK retries, so a failure surfaces at once; retry behaviour has its own test.
    return StripeGateway(fake_stripe.api_key, api_base=fake_stripe.url, max_network_retries=0)


@pytest.fixture
def make_request() -> Callable[..., ChargeRequest]:
    """ChargeRequest for a fresh invoice (unique id) unless invoice_id is given."""

    def make(payment_method: str, **overrides) -> ChargeRequest:
        fields = dict(
            invoice_id=f"inv-{uuid.uuid4().hex[:10]}",
            attempt=1,
            amount_minor=2379,
            currency="EUR",
            account_id="acc-42",
            payment_method=payment_method,
            description="Invoice for mobile plan",
        )
        fields.update(overrides)
        return ChargeRequest(**fields)

    return make


class FakeClock:
    """Monotonic clock the test moves by hand, so SEPA settlement needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on (port freed just before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
