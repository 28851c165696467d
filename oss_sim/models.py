"""Wire models for the TMF641 subset the simulator accepts, plus its admin rule model.

Field names are the TMF camelCase names on purpose: these classes *are* the JSON shape.
Unknown TMF fields are ignored rather than refused, as a real OSS would.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

OrderAction = Literal["add", "modify", "delete"]
BehaviourKind = Literal["fail", "reject", "no-callback", "slow", "unavailable"]


class Characteristic(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    value: Any


class ServiceRefOrValue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    serviceCharacteristic: list[Characteristic] = Field(default_factory=list)


class ServiceOrderItemCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    action: OrderAction
    service: ServiceRefOrValue


class ServiceOrderCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    externalId: str | None = Field(default=None, min_length=1, description="The caller's idempotency key.")
    category: str | None = None
    description: str | None = None
    priority: str | None = None
    serviceOrderItem: list[ServiceOrderItemCreate] = Field(min_length=1)
    callbackUrl: str | None = Field(
        default=None,
        min_length=1,
        description="Simulator extension, not TMF: where to POST this order's state change events.",
    )


class ServiceOrderRefIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)


class CancelServiceOrderCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    serviceOrder: ServiceOrderRefIn
    cancellationReason: str | None = None


class RuleMatch(BaseModel):
    # A misspelt key would silently widen the rule to every order, so refuse unknown keys.
    model_config = ConfigDict(extra="forbid")

    msisdn: str | None = None
    externalId: str | None = None
    productOfferingId: str | None = None
    action: OrderAction | None = None


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: RuleMatch = Field(default_factory=RuleMatch)
    behaviour: BehaviourKind
    delaySeconds: float | None = Field(default=None, ge=0)
    times: int | None = Field(default=None, ge=1, description="Matches before the rule expires; absent = forever.")

    @model_validator(mode="after")
    def _slow_needs_a_delay(self) -> "RuleCreate":
        if self.behaviour == "slow" and self.delaySeconds is None:
            raise ValueError("behaviour 'slow' requires delaySeconds")
        return self
