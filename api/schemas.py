"""Request bodies as TMF shapes (camelCase). Shape and format checks live here so a malformed request
is answered with per-field errors before any service runs; checks against stored data (does the
customer exist?) are the services' job."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator
from stdnum.de import leitweg

from api.errors import CodedValueError
from domain.billing_cycle import zone
from domain.payments import InvalidPaymentMethod, MandateAcceptance, parse_payment_method

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class TmfModel(BaseModel):
    # TMF clients send @type, @baseType, @schemaLocation and fields o2c does not use; ignore them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Ref(TmfModel):
    id: NonEmpty


class PartyRef(TmfModel):
    id: NonEmpty
    role: str = "customer"


def _exact_amount(value: Any) -> Any:
    # JSON numbers arrive as floats; str() gives back the digits the client wrote ("12.34"),
    # and no arithmetic is ever done on the float itself.
    if isinstance(value, bool):
        raise CodedValueError("invalid_amount", "amount must be a decimal string such as \"12.34\"")
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise CodedValueError("invalid_amount", f"not a decimal amount: {value!r}") from None
        if not parsed.is_finite():
            raise CodedValueError("invalid_amount", f"not a finite amount: {value!r}")
        return parsed
    return value


def _two_decimals_positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise CodedValueError("amount_not_positive", "the amount must be greater than 0")
    if value != value.quantize(Decimal("0.01")):
        raise CodedValueError("too_many_decimals", "EUR amounts have at most 2 decimals")
    return value


PositiveMoney = Annotated[Decimal, BeforeValidator(_exact_amount)]


class MoneyIn(TmfModel):
    unit: Literal["EUR"]
    value: PositiveMoney

    @field_validator("value")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        return _two_decimals_positive(value)


# --- TMF629 -------------------------------------------------------------------------------------


class MediumCharacteristic(TmfModel):
    emailAddress: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    phoneNumber: str | None = Field(default=None, pattern=r"^\+?[0-9 ()/-]{5,20}$")
    street1: str | None = Field(default=None, max_length=200)
    street2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    postCode: str | None = Field(default=None, max_length=20)
    country: str | None = Field(default=None, max_length=60)


# What each medium type must carry; the invoice needs a full postal address (§14 UStG).
_REQUIRED_CHARACTERISTICS = {
    "email": ("emailAddress",),
    "postalAddress": ("street1", "city", "postCode", "country"),
    "phone": ("phoneNumber",),
    "telephoneNumber": ("phoneNumber",),
}


class ContactMedium(TmfModel):
    mediumType: Literal["email", "postalAddress", "phone", "telephoneNumber"]
    preferred: bool | None = None
    characteristic: MediumCharacteristic

    @model_validator(mode="after")
    def _complete(self) -> ContactMedium:
        missing = [name for name in _REQUIRED_CHARACTERISTICS[self.mediumType] if not getattr(self.characteristic, name)]
        if missing:
            raise CodedValueError("incomplete_contact_medium", f"a {self.mediumType} contact medium needs characteristic {', '.join(missing)}")
        return self


class CustomerCreate(TmfModel):
    name: NonEmpty
    contactMedium: list[ContactMedium] = Field(default_factory=list, max_length=20)
    vatId: str | None = Field(default=None, pattern=r"^[A-Z]{2}[0-9A-Z+*.]{2,13}$", description="o2c extension: VAT id for B2B invoices")


# --- TMF666 -------------------------------------------------------------------------------------


def _timezone(value: str) -> str:
    try:
        zone(value)
    except ValueError:
        raise CodedValueError("unknown_timezone", f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    return value


def _payment_method(value: Ref | None) -> Ref | None:
    if value is not None:
        try:
            parse_payment_method(value.id)
        except InvalidPaymentMethod as exc:
            raise CodedValueError("invalid_payment_method", str(exc)) from None
    return value


class SpendingLimitIn(TmfModel):
    """The customer is told at 80 % and 100 % of the limit; with hardCap, outgoing use is barred at 100 %
    until the next cycle starts."""

    amount: MoneyIn
    hardCap: bool = False


class TrafficDataHoldIn(TmfModel):
    """o2c extension: a complaint about a bill is open, so the account's traffic data (called numbers, times,
    roaming) is kept past its six months until the hold is released (`"trafficDataHold": null`)."""

    model_config = ConfigDict(extra="forbid")

    reason: NonEmpty = Field(max_length=500)


class RoamingDataCapIn(TmfModel):
    """o2c extension: the EU roaming data cut-off limit (50 EUR of data a cycle while roaming outside roam-like-at-home,
    Regulation (EU) 2022/612). Every account has it unless it opts out (`optOut: true`); at 100 % roaming data
    stops until the next cycle, or until the customer asks to continue (POST .../roamingDataCap/continue)."""

    model_config = ConfigDict(extra="forbid")

    optOut: StrictBool


class RoamingDataContinueIn(TmfModel):
    """The customer asks to go on using roaming data this cycle past the roaming data limit; the reason is recorded."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


# Leitweg-ID (XRechnung BT-10): coarse address (2-12 digits), optional fine address, 2 check digits.
LEITWEG_ID_PATTERN = r"^[0-9]{2,12}(-[0-9A-Za-z]{1,30})?-[0-9]{2}$"


def _leitweg_check_digits(value: str) -> str:
    """The last two digits are an ISO 7064 Mod 97-10 check over the rest: a typo would route the XRechnung
    to nobody, and the public buyer would reject it weeks later."""
    if not leitweg.is_valid(value):
        raise CodedValueError("invalid_leitweg_id", f"{value!r} fails the Leitweg-ID check digits (ISO 7064 Mod 97-10)")
    return value


LeitwegId = Annotated[str, Field(pattern=LEITWEG_ID_PATTERN, max_length=46,
                                 description="o2c extension: the public buyer's Leitweg-ID; its bills' XML is then an XRechnung"),
                      AfterValidator(_leitweg_check_digits)]


class MandateAcceptanceIn(TmfModel):
    """o2c extension: how the customer accepted the SEPA Direct Debit mandate. `online` (a web form) needs the
    customer's ipAddress and userAgent; `offline` (the default) is a mandate signed with the contract."""

    type: Literal["online", "offline"] = "offline"
    ipAddress: str | None = Field(default=None, max_length=45)
    userAgent: str | None = Field(default=None, max_length=500)
    acceptedAt: datetime | None = None
    accountHolder: str | None = Field(default=None, min_length=1, max_length=200, description="the account holder's name; default the customer's")

    @model_validator(mode="after")
    def _online_evidence(self) -> "MandateAcceptanceIn":
        if self.type == "online" and not (self.ipAddress and self.userAgent):
            raise CodedValueError("incomplete_mandate_acceptance", "an online mandate acceptance needs ipAddress and userAgent")
        if self.acceptedAt is not None and self.acceptedAt.tzinfo is None:
            raise CodedValueError("timezone_required", "acceptedAt needs a time zone offset (e.g. Z)")
        return self

    def domain(self) -> MandateAcceptance:
        accepted = int(self.acceptedAt.timestamp()) if self.acceptedAt is not None else None
        return MandateAcceptance(type=self.type, ip_address=self.ipAddress, user_agent=self.userAgent, accepted_at=accepted)


def _mandate_for_sepa(method: Ref | None, acceptance: MandateAcceptanceIn | None) -> None:
    if acceptance is not None and (method is None or parse_payment_method(method.id).kind != "sepa_debit"):
        raise CodedValueError("mandate_not_applicable", "mandateAcceptance goes with a SEPA defaultPaymentMethod (sepa:<IBAN>)")


class BillingAccountUpdate(TmfModel):
    """PATCH: only the fields present change; `"spendingLimit": null` removes the limit, `"leitwegId": null`
    the Leitweg-ID, `"defaultPaymentMethod": null` the payment method. A new defaultPaymentMethod is saved at the
    payment gateway before the answer (docs/payments-methods.md)."""

    defaultPaymentMethod: Ref | None = None
    mandateAcceptance: MandateAcceptanceIn | None = None
    spendingLimit: SpendingLimitIn | None = None
    roamingDataCap: RoamingDataCapIn | None = None
    trafficDataHold: TrafficDataHoldIn | None = Field(default=None, description="o2c extension: keep traffic data while a complaint is open; null releases")
    leitwegId: LeitwegId | None = None
    itemisedBill: bool | None = Field(default=None, description="o2c extension: itemised bill (EVN) appended to the invoice PDF")
    itemisedBillMaskLast3: bool | None = Field(default=None, description="o2c extension: EVN shows called numbers with the last 3 digits as xxx")

    @field_validator("defaultPaymentMethod")
    @classmethod
    def _pm(cls, value: Ref | None) -> Ref | None:
        return _payment_method(value)

    @model_validator(mode="after")
    def _mandate(self) -> "BillingAccountUpdate":
        _mandate_for_sepa(self.defaultPaymentMethod, self.mandateAcceptance)
        return self


class BillingAccountCreate(TmfModel):
    name: NonEmpty
    relatedParty: list[PartyRef] = Field(min_length=1)
    billCycleDay: int = Field(default=1, ge=1, le=31, description="o2c extension: day of month a cycle starts")
    timeZone: str = Field(default="Europe/Berlin", description="o2c extension: IANA zone of the account's cycles")
    billingProfile: NonEmpty = Field(default="standard", description="o2c extension: a billing profile name")
    defaultPaymentMethod: Ref | None = None
    mandateAcceptance: MandateAcceptanceIn | None = None
    spendingLimit: SpendingLimitIn | None = Field(default=None, description="o2c extension: a limit on a cycle's usage cost")
    roamingDataCap: RoamingDataCapIn | None = Field(default=None, description="o2c extension: the EU roaming data limit; absent = applies")
    leitwegId: LeitwegId | None = None
    itemisedBill: bool = Field(default=False, description="o2c extension: itemised bill (EVN, only on the customer's request)")
    itemisedBillMaskLast3: bool = Field(default=False, description="o2c extension: EVN shows called numbers with the last 3 digits as xxx")

    @field_validator("timeZone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _timezone(value)

    @field_validator("defaultPaymentMethod")
    @classmethod
    def _pm(cls, value: Ref | None) -> Ref | None:
        return _payment_method(value)

    @model_validator(mode="after")
    def _mandate(self) -> "BillingAccountCreate":
        _mandate_for_sepa(self.defaultPaymentMethod, self.mandateAcceptance)
        return self


# --- TMF622 -------------------------------------------------------------------------------------


class OfferingRef(TmfModel):
    id: str | None = None


class PriceAlterationIn(TmfModel):
    # A catalog promotion: productOfferingPrice.id names catalog.yaml `promotions[].id`.
    productOfferingPrice: OfferingRef | None = None


class OrderPriceIn(TmfModel):
    priceAlteration: list[PriceAlterationIn] = Field(default_factory=list, max_length=10)


class OrderItemCreate(TmfModel):
    id: NonEmpty
    action: NonEmpty
    productOffering: OfferingRef | None = None
    product: OfferingRef | None = None  # action "modify": the product whose plan changes
    itemPrice: list[OrderPriceIn] = Field(default_factory=list, max_length=10)  # read by services.plan_changes.item_extras


class ProductOrderCreate(TmfModel):
    relatedParty: list[PartyRef] = Field(min_length=1)
    billingAccount: Ref
    productOrderItem: list[OrderItemCreate] = Field(max_length=100)
    externalId: str | None = Field(default=None, max_length=255)


class CancelProductOrderCreate(TmfModel):
    productOrder: Ref
    cancellationReason: str | None = Field(default=None, max_length=1000)


# --- TMF641 callback ----------------------------------------------------------------------------


class ServiceOrderRefIn(TmfModel):
    id: NonEmpty
    href: str | None = None
    externalId: str | None = None
    state: NonEmpty


class ServiceOrderEventPayload(TmfModel):
    serviceOrder: ServiceOrderRefIn


class ServiceOrderStateChangeEvent(TmfModel):
    eventId: NonEmpty
    eventTime: str | None = None
    eventType: Literal["ServiceOrderStateChangeEvent"]
    event: ServiceOrderEventPayload


# --- TMF676 -------------------------------------------------------------------------------------


class PaymentMethodIn(TmfModel):
    type_: str = Field(alias="@type")


class PaymentItemIn(TmfModel):
    item: Ref


class PaymentCreate(TmfModel):
    correlatorId: NonEmpty
    account: Ref
    totalAmount: MoneyIn
    paymentMethod: PaymentMethodIn
    description: str | None = Field(default=None, max_length=500)
    paymentItem: list[PaymentItemIn] = Field(default_factory=list, max_length=1, description="o2c: at most one bill per payment")

    @field_validator("paymentMethod")
    @classmethod
    def _bank_transfer_only(cls, value: PaymentMethodIn) -> PaymentMethodIn:
        # Card and SEPA payments are collected by dunning through the gateway, never posted here.
        if value.type_ != "bankTransfer":
            raise CodedValueError("unsupported_payment_method", "only {\"@type\": \"bankTransfer\"} can be recorded manually")
        return value


# --- TMF event hubs (POST {api}/hub) ------------------------------------------------------------


class EventSubscriptionInput(TmfModel):
    """TMF EventSubscriptionInput. The callback is checked by services.hubs (422 with a reason code)."""

    callback: str = Field(max_length=2000, description="absolute http(s) URL; events go to {callback}/listener/{eventType}")
    query: str | None = Field(default=None, max_length=2000, description="filter, e.g. eventType=ProductOrderStateChangeEvent")
