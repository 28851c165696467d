"""Request body of TMF676 POST /refund (shape checks only; services.refunds checks against stored data)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, StringConstraints
from typing_extensions import Annotated

from api.schemas import MoneyIn, NonEmpty, Ref, TmfModel

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class RefundCreate(TmfModel):
    type_: Literal["Refund", "Chargeback"] = Field(
        default="Refund", alias="@type",
        description="Refund: money o2c gives back; Chargeback (o2c): a bank took the payment back, e.g. a SEPA return")
    correlatorId: NonEmpty | None = Field(default=None, description="idempotency key, when no Idempotency-Key header is sent")
    account: Ref
    payment: Ref = Field(description="the payment the money comes from")
    totalAmount: MoneyIn
    reason: Reason = Field(description="o2c: why (required; kept in the audit log)")
    chargebackFee: MoneyIn | None = Field(default=None, description="Chargeback: the fee passed on (default: the configured chargeback fee)")
