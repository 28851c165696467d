"""VAT treatment of a buyer, and the VAT category and rate of each invoice line (German seller).

Telecommunication services to a business are supplied where the business is established (§3a Abs. 2
UStG). For a business buyer in another EU member state the buyer owes the VAT (reverse charge, §13b
UStG / Art. 196 VAT Directive): the line is EN 16931 category AE at 0 % and the invoice states the
exemption reason. We grant reverse charge only on the evidence of a VAT ID that passes the offline
format and check-digit test of python-stdnum (`stdnum.eu.vat`); anything else falls back to the
domestic treatment (standard 19 %, reduced 7 %, zero-rated Z) and the reason is reported.

What the offline check does not do: it cannot tell whether a well-formed number is actually issued
and active. That needs a VIES query (`stdnum.eu.vat.check_vies`, network I/O), which belongs in an
adapter, never here. Where stdnum is more lenient than VAT law we are stricter:

* ``GR…`` numbers: stdnum accepts them, but Greek VAT IDs are written ``EL…``; refused.
* ``XI…`` (Northern Ireland) counts as EU for goods only, not for services; refused.
* ``EU…`` / ``IM…`` are non-Union OSS registrations, not an establishment in a member state; refused.

Not legal advice: consumers in other member states (place of supply at their residence, §3a Abs. 5
UStG, via OSS) and buyers outside the EU are given the domestic treatment with `needs_review` set.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError

from domain.money import ExactDecimal

VatRateClass = Literal["standard", "reduced", "zero"]
TreatmentKind = Literal["domestic", "reverse_charge"]

SELLER_COUNTRY = "DE"

# German rates (§12 UStG). EN 16931 has no separate "reduced" category: 7 % is category S too.
GERMAN_RATES: dict[VatRateClass, tuple[str, Decimal]] = {
    "standard": ("S", Decimal("19")),
    "reduced": ("S", Decimal("7")),
    "zero": ("Z", Decimal("0")),
}

REVERSE_CHARGE_REASON = "Steuerschuldnerschaft des Leistungsempfängers / Reverse charge"
REVERSE_CHARGE_REASON_CODE = "VATEX-EU-AE"

# ISO 3166-1 alpha-2 codes of the 27 member states. Greece is GR here, EL in a VAT ID.
EU_MEMBER_STATES = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    }
)
_VAT_PREFIX_TO_COUNTRY = {("EL" if code == "GR" else code): code for code in EU_MEMBER_STATES}

# Why a buyer gets the treatment it gets; stable codes for logs, UI and tests.
ReasonCode = Literal[
    "reverse_charge",
    "consumer",
    "buyer_in_seller_country",
    "buyer_outside_eu",
    "no_vat_id",
    "invalid_vat_id",
    "vat_id_country_mismatch",
]


class VatIdCheck(BaseModel):
    """Result of the offline check of a VAT ID: normalised number, its member state, or why it failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    given: str
    vat_id: str | None = None  # normalised, e.g. "ATU57194903"; None when invalid
    country: str | None = None  # ISO 3166-1 code of the member state (GR for an EL number)
    valid: bool
    reason: str | None = None  # why it is invalid


class Buyer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    country: str = Field(min_length=2, max_length=2)  # ISO 3166-1 alpha-2 of the buyer's establishment/residence
    is_business: bool = False
    vat_id: str | None = None

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError(f"country must be an ISO 3166-1 alpha-2 code, got {value!r}")
        return value.upper()


class VatTreatment(BaseModel):
    """How every line of this buyer's invoice is taxed, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TreatmentKind
    reason_code: ReasonCode
    reason: str
    buyer_vat_id: str | None = None  # normalised, printed on the invoice for reverse charge (BT-48)
    vat_id_check: VatIdCheck | None = None
    needs_review: bool = False  # German VAT applied where another member state's VAT may be due

    @property
    def exemption_reason(self) -> str | None:
        return REVERSE_CHARGE_REASON if self.kind == "reverse_charge" else None

    @property
    def exemption_reason_code(self) -> str | None:
        return REVERSE_CHARGE_REASON_CODE if self.kind == "reverse_charge" else None


class LineVat(BaseModel):
    """EN 16931 VAT of one line: category (BT-151), rate (BT-152) and, for exempt categories, BT-120/121."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str
    rate: ExactDecimal
    exemption_reason: str | None = None
    exemption_reason_code: str | None = None


DOMESTIC = VatTreatment(kind="domestic", reason_code="consumer", reason="consumer: domestic VAT")


def check_vat_id(vat_id: str) -> VatIdCheck:
    """Offline check of an EU VAT ID (format and check digits only; no VIES query)."""
    text = vat_id.strip()
    compact = "".join(ch for ch in text if ch.isalnum()).upper()
    prefix = compact[:2]
    if prefix == "GR":
        return VatIdCheck(given=vat_id, valid=False, reason="Greek VAT IDs start with EL, not GR")
    if prefix == "XI":
        return VatIdCheck(given=vat_id, valid=False, reason="XI (Northern Ireland) numbers do not count as EU for services")
    if prefix in ("EU", "IM"):
        return VatIdCheck(given=vat_id, valid=False, reason=f"{prefix} numbers are non-Union OSS registrations, not a member state VAT ID")
    if prefix not in _VAT_PREFIX_TO_COUNTRY:
        return VatIdCheck(given=vat_id, valid=False, reason=f"{prefix or 'empty'}: not an EU member state VAT prefix")
    try:
        normalised = eu_vat.validate(compact)
    except InvalidChecksum:
        return VatIdCheck(given=vat_id, valid=False, reason="check digit does not match")
    except InvalidLength:
        return VatIdCheck(given=vat_id, valid=False, reason="wrong length")
    except InvalidComponent:
        return VatIdCheck(given=vat_id, valid=False, reason="a part of the number is invalid")
    except ValidationError:
        return VatIdCheck(given=vat_id, valid=False, reason="invalid format")
    return VatIdCheck(given=vat_id, vat_id=normalised, country=_VAT_PREFIX_TO_COUNTRY[prefix], valid=True)


def vat_treatment(buyer: Buyer, seller_country: str = SELLER_COUNTRY) -> VatTreatment:
    """Reverse charge for a business in another member state with a valid VAT ID; domestic otherwise."""
    if not buyer.is_business:
        foreign = buyer.country != seller_country
        return VatTreatment(
            kind="domestic", reason_code="consumer", reason="consumer: domestic VAT", needs_review=foreign
        )
    if buyer.country == seller_country:
        return VatTreatment(
            kind="domestic", reason_code="buyer_in_seller_country", reason=f"business buyer in {seller_country}: domestic VAT"
        )
    if buyer.country not in EU_MEMBER_STATES:
        return VatTreatment(
            kind="domestic",
            reason_code="buyer_outside_eu",
            reason=f"business buyer in {buyer.country}, outside the EU: not handled, domestic VAT applied",
            needs_review=True,
        )
    if not buyer.vat_id or not buyer.vat_id.strip():
        return VatTreatment(
            kind="domestic", reason_code="no_vat_id", reason="no VAT ID given: no reverse charge, domestic VAT"
        )
    check = check_vat_id(buyer.vat_id)
    if not check.valid:
        return VatTreatment(
            kind="domestic",
            reason_code="invalid_vat_id",
            reason=f"VAT ID {buyer.vat_id!r} is invalid ({check.reason}): no reverse charge, domestic VAT",
            vat_id_check=check,
        )
    if check.country != buyer.country:
        return VatTreatment(
            kind="domestic",
            reason_code="vat_id_country_mismatch",
            reason=f"VAT ID {check.vat_id} is from {check.country}, buyer is in {buyer.country}: no reverse charge, domestic VAT",
            vat_id_check=check,
        )
    return VatTreatment(
        kind="reverse_charge",
        reason_code="reverse_charge",
        reason=f"business buyer in {buyer.country} with VAT ID {check.vat_id}: reverse charge",
        buyer_vat_id=check.vat_id,
        vat_id_check=check,
    )


def line_vat(treatment: VatTreatment, rate_class: VatRateClass = "standard") -> LineVat:
    """The VAT category and rate of a line of `rate_class` under `treatment`."""
    if treatment.kind == "reverse_charge":
        return LineVat(
            category="AE",
            rate=Decimal("0"),
            exemption_reason=REVERSE_CHARGE_REASON,
            exemption_reason_code=REVERSE_CHARGE_REASON_CODE,
        )
    category, rate = GERMAN_RATES[rate_class]
    return LineVat(category=category, rate=rate)


def rate_class_for(vat_rate: Decimal) -> VatRateClass:
    """The rate class of a catalog VAT rate (offering.vat_rate: 19, 7 or 0)."""
    for rate_class, (_category, rate) in GERMAN_RATES.items():
        if Decimal(vat_rate) == rate:
            return rate_class
    raise ValueError(f"{vat_rate}% is not a German VAT rate (19, 7 or 0)")


def exemption_for(category: str) -> tuple[str, str] | None:
    """The exemption reason text and code (BT-120, BT-121) an invoice must state for a VAT category."""
    if category == "AE":
        return REVERSE_CHARGE_REASON, REVERSE_CHARGE_REASON_CODE
    return None
