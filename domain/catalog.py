"""The product catalog: what can be ordered and how it is priced. Pure data, validated on load."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.charges import PlanChangePolicy
from domain.rating import Allowances, Rates

# Who suspended a line (persistence ProductStatusChange.source) decides whether the monthly fee runs on.
SuspensionSource = Literal["manual", "dunning", "spending", "reconciliation"]


class ProductOffering(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    name: str
    description: str = ""
    version: str
    lifecycle_status: Literal["Active", "Retired"] = "Active"
    monthly_fee: Decimal = Field(ge=0)
    activation_fee: Decimal = Field(default=Decimal("0"), ge=0)
    vat_rate: Decimal = Field(default=Decimal("19"), ge=0, le=100)
    allowances: Allowances
    rates: Rates
    # The rating tariff (catalog/tariffs.yaml) that prices this offering's usage; its latest version
    # rates new usage. None: usage is priced by `rates` alone (domain.offering_tariff compiles them
    # into a tariff, so every record still names what priced it).
    tariff_id: str | None = Field(default=None, alias="tariff")
    # When a change *to* this offering takes effect (upgrade: higher monthly fee); None: the catalog's policy.
    plan_change: PlanChangePolicy | None = None

    @field_validator("monthly_fee", "activation_fee", "vat_rate", mode="before")
    @classmethod
    def _no_float_money(cls, value: object) -> object:
        # YAML turns 9.99 into a float; money must be written as a string so no binary rounding sneaks in.
        if isinstance(value, float):
            raise ValueError("write money as a quoted string, e.g. '9.99'")
        return value

    @property
    def orderable(self) -> bool:
        return self.lifecycle_status == "Active"


class Promotion(BaseModel):
    """A discount an order item can carry (TMF622 itemPrice[].priceAlteration[].productOfferingPrice.id):
    `percent` or a fixed net `amount` per cycle, off one product's recurring fee or off the whole
    invoice, for `cycles` cycles from the first one billed (None: no end)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    name: str = Field(min_length=1)
    percent: Decimal | None = Field(default=None, gt=0, le=100)
    amount: Decimal | None = Field(default=None, gt=0)
    applies_to: Literal["recurring", "invoice"] = "recurring"
    cycles: int | None = Field(default=None, ge=1)

    @field_validator("percent", "amount", mode="before")
    @classmethod
    def _no_float_money(cls, value: object) -> object:
        if isinstance(value, float):
            raise ValueError("write amounts as a quoted string, e.g. '5.00'")
        return value

    @model_validator(mode="after")
    def _one_value(self) -> Promotion:
        if (self.percent is None) == (self.amount is None):
            raise ValueError("a promotion has exactly one of percent and amount")
        return self

    @property
    def kind(self) -> Literal["percent", "fixed"]:
        return "percent" if self.percent is not None else "fixed"

    @property
    def value(self) -> Decimal:
        return self.percent if self.percent is not None else self.amount  # type: ignore[return-value]


class SuspensionBilling(BaseModel):
    """Whether the monthly fee runs on while a line is suspended, by who suspended it. German practice:
    a barring for arrears (§61 TKG) leaves the customer liable for the fee; a suspension staff grant
    (e.g. a stolen phone, a stay abroad) may be free of charge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    free_sources: list[SuspensionSource] = Field(default_factory=lambda: ["manual"])


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    version: str
    currency: Literal["EUR"] = "EUR"
    offerings: list[ProductOffering] = Field(min_length=1)
    promotions: list[Promotion] = Field(default_factory=list)
    plan_change: PlanChangePolicy = PlanChangePolicy()  # upgrades at once, downgrades at the cycle end
    suspension_billing: SuspensionBilling = SuspensionBilling()

    @field_validator("offerings")
    @classmethod
    def _unique_ids(cls, offerings: list[ProductOffering]) -> list[ProductOffering]:
        ids = [o.id for o in offerings]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate offering ids: {', '.join(duplicates)}")
        return offerings

    @field_validator("promotions")
    @classmethod
    def _unique_promotions(cls, promotions: list[Promotion]) -> list[Promotion]:
        ids = [p.id for p in promotions]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate promotion ids: {', '.join(duplicates)}")
        return promotions

    def offering(self, offering_id: str) -> ProductOffering | None:
        return next((o for o in self.offerings if o.id == offering_id), None)

    def promotion(self, promotion_id: str) -> Promotion | None:
        return next((p for p in self.promotions if p.id == promotion_id), None)

    def plan_change_policy(self, target: ProductOffering) -> PlanChangePolicy:
        """When a change to `target` takes effect: its own policy, else the catalog's."""
        return target.plan_change or self.plan_change


def parse_catalog(data: object) -> Catalog:
    """Validate raw catalog data (as read from YAML); raises pydantic.ValidationError with field paths."""
    return Catalog.model_validate(data)
