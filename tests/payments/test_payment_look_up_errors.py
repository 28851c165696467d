"""How a failed look at an in-flight payment (activities.billing.PaymentLookUp) reaches Temporal: what an operator can
fix or what passes by itself is retried; what the gateway answered for good ends the look."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from temporalio.exceptions import ApplicationError

from activities.billing import PaymentLookUp
from adapters.payments.port import GatewayConfigError, GatewayRequestRejected, GatewayUnavailable, PaymentNotFound
from persistence.db import session_scope
from persistence.tables import Payment


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def retrieve(self, _gateway_payment_id: str):
        raise self.error


class _Look(PaymentLookUp):
    def __init__(self, db_url: str, gateway) -> None:  # noqa: ANN001
        self.db_url, self.gateway = db_url, gateway


def _payment(db_url: str) -> str:
    payment_id = f"pay-{uuid.uuid4().hex[:12]}"
    with session_scope(db_url) as session:
        session.add(Payment(id=payment_id, correlator_id=payment_id, billing_account_id="ba-x", amount_cents=100, currency="EUR", method="sepa_debit",
                            status="processing", gateway_payment_id=f"pi_{uuid.uuid4().hex[:8]}", recorded_by="test",
                            created_at=datetime.now(timezone.utc)))
    return payment_id


@pytest.mark.parametrize(("error", "retried"), [
    (GatewayUnavailable("connection reset"), True),
    (GatewayConfigError("invalid API key"), True),  # a rotated key: fixed by an operator, the look must not fail for good
    (PaymentNotFound("no such payment_intent"), False),
    (GatewayRequestRejected("bad request"), False),
], ids=["unavailable", "config", "not-found", "rejected"])
async def test_which_gateway_failures_temporal_retries(db_url, error, retried) -> None:
    with pytest.raises(ApplicationError) as raised:
        await _Look(db_url, _Failing(error))._look_up_payment(_payment(db_url))
    assert raised.value.non_retryable is (not retried)
    assert raised.value.type == type(error).__name__
