"""TMF678 request bodies: customerBill state change, credit notes, customerBillOnDemand, invoice hold.
Shape and format checks only (as api.schemas); whether a line or an amount is still creditable is the
service's job."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from api.errors import CodedValueError
from api.schemas import NonEmpty, Ref, TmfModel, _exact_amount, _two_decimals_positive


_PATCHABLE = frozenset({"state", "@type", "@baseType", "@schemaLocation"})


class CustomerBillUpdate(TmfModel):
    """PATCH customerBill: TMF678 lets a client change `state` only; o2c lets staff validate an onHold draft.
    Any other field is refused (an issued bill's content never changes; correct it with a credit note)."""

    state: Literal["new", "onHold", "validated", "sent", "partiallyPaid", "settled"]

    @model_validator(mode="before")
    @classmethod
    def _state_only(cls, data: object) -> object:
        if isinstance(data, dict):
            read_only = sorted(set(data) - _PATCHABLE)
            if read_only:
                raise CodedValueError("read_only_field", f"only state can be changed on a customerBill, not {', '.join(read_only)}; "
                                                         "an issued bill is corrected by a credit note")
        return data


class CreditAmountIn(TmfModel):
    unit: Literal["EUR"]
    value: Annotated[Decimal, BeforeValidator(_exact_amount)]

    @field_validator("value")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        return _two_decimals_positive(value)


class CreditNoteItem(TmfModel):
    lineNo: int = Field(ge=1, description="the bill line (`@lines[].lineNo`) to credit")
    taxExcludedAmount: CreditAmountIn | None = Field(default=None, description="net amount to credit on the line; default: all that is left of it")


class CreditNoteCreate(TmfModel):
    """POST customerBill/{id}/creditNote (o2c extension of TMF678). No items: everything still creditable
    (a full credit, Stornorechnung); otherwise the named lines, each in full or by a net amount."""

    reason: NonEmpty = Field(description="why the bill is corrected; printed on the credit note")
    creditNoteItem: list[CreditNoteItem] = Field(default_factory=list, max_length=1000)
    correlatorId: str | None = Field(default=None, min_length=1, max_length=255,
                                     description="the client's idempotency key, when it does not send an Idempotency-Key header")


class CustomerBillOnDemandCreate(TmfModel):
    billingAccount: Ref
    name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=1000)
    state: str | None = None  # set by the server; a client value is ignored unless it contradicts

    @model_validator(mode="after")
    def _state_is_the_servers(self) -> CustomerBillOnDemandCreate:
        if self.state not in (None, "inProgress"):
            raise CodedValueError("state_not_settable", "a customerBillOnDemand starts inProgress; its state is set by o2c")
        return self


class InvoiceHoldUpdate(TmfModel):
    invoiceHold: bool
