"""The product catalog: what can be ordered and how it is priced. Pure data, validated on load."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.rating import Allowances, Rates


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


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    version: str
    currency: Literal["EUR"] = "EUR"
    offerings: list[ProductOffering] = Field(min_length=1)

    @field_validator("offerings")
    @classmethod
    def _unique_ids(cls, offerings: list[ProductOffering]) -> list[ProductOffering]:
        ids = [o.id for o in offerings]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate offering ids: {', '.join(duplicates)}")
        return offerings

    def offering(self, offering_id: str) -> ProductOffering | None:
        return next((o for o in self.offerings if o.id == offering_id), None)


def parse_catalog(data: object) -> Catalog:
    """Validate raw catalog data (as read from YAML); raises pydantic.ValidationError with field paths."""
    return Catalog.model_validate(data)
