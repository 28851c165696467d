"""What an EN 16931 e-invoice says, as a frozen model, and how to make one from a computed o2c invoice.

The model holds finished business data only. Every amount arrives already rounded by
``domain.invoicing.compute_invoice``; the validators here refuse a document whose totals do not
add up (BR-CO-10/-13/-14/-15/-16) instead of fixing it, so the XML can never disagree with the PDF.

Data protection: there is deliberately no field for call detail (dialled numbers, CDR ids,
timestamps of single events). Every model forbids unknown fields, so such data cannot be smuggled
in either; an itemised bill (EVN) is a separate document only sent on request (TKG).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.invoicing import ComputedInvoice
from domain.money import ExactDecimal, Money, to_cents

__all__ = [
    "Buyer",
    "CardPayment",
    "Contact",
    "DEFAULT_VAT_EXEMPTIONS",
    "EInvoiceDocument",
    "EInvoiceLine",
    "PaymentMeans",
    "PostalAddress",
    "PrecedingInvoice",
    "SepaCreditTransfer",
    "SepaDirectDebit",
    "Seller",
    "VatBreakdownEntry",
    "VatExemption",
    "UNIT_CODE_ALIASES",
    "einvoice_from_computed",
]

_ZERO = Decimal("0.00")
_HUNDRED = Decimal(100)

# UNCL5305 categories EN 16931 knows. Which ones carry an exemption reason (BT-120/BT-121):
# required for E, AE, K, G, O (BR-E-10, BR-AE-10, BR-IC-10, BR-G-10, BR-O-10), forbidden for S and Z.
VatCategory = Literal["S", "Z", "E", "AE", "K", "G", "O", "L", "M"]
_NEEDS_EXEMPTION = frozenset({"E", "AE", "K", "G", "O"})
_NO_EXEMPTION = frozenset({"S", "Z"})
_ZERO_RATE = frozenset({"Z", "E", "AE", "K", "G", "O"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _cents_only(value: Decimal, what: str) -> Decimal:
    # EN 16931 BR-DEC-*: document and line amounts carry at most two decimals.
    if value != to_cents(value):
        raise ValueError(f"{what} must be rounded to cents, got {value}")
    return value


def _iban_ok(iban: str) -> bool:
    if not (15 <= len(iban) <= 34 and iban[:2].isalpha() and iban[2:4].isdigit() and iban.isalnum()):
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _normalize_iban(value: str) -> str:
    iban = value.replace(" ", "").upper()
    if not _iban_ok(iban):
        raise ValueError(f"not a valid IBAN: {value!r}")
    return iban


# --------------------------------------------------------------------------- parties


class PostalAddress(_Frozen):
    """BG-5 / BG-8. ``country_code`` is ISO 3166-1 alpha-2 (BT-40/BT-55)."""

    line1: str | None = None  # street and number (BT-35/BT-50)
    line2: str | None = None
    line3: str | None = None
    postcode: str | None = None
    city: str | None = None
    country_subdivision: str | None = None
    country_code: str = Field(pattern=r"^[A-Z]{2}$")


class Contact(_Frozen):
    """BG-6 seller contact (XRechnung requires name, phone and e-mail: BR-DE-5/-6/-7)."""

    name: str | None = None  # person or department (BT-41)
    phone: str | None = None  # BT-42
    email: str | None = None  # BT-43


_VAT_ID = r"^[A-Z]{2}[0-9A-Za-z+*.]{2,13}$"  # BR-CO-9: starts with the ISO country prefix (EL for Greece)


class Seller(_Frozen):
    name: str = Field(min_length=1)  # BT-27
    trading_name: str | None = None  # BT-28
    legal_registration_id: str | None = None  # BT-30, e.g. "HRB 123456 B"
    address: PostalAddress
    vat_id: str | None = Field(default=None, pattern=_VAT_ID)  # BT-31
    tax_number: str | None = None  # BT-32 (Steuernummer, scheme FC)
    electronic_address: str | None = None  # BT-34, an e-mail address (scheme EM)
    contact: Contact | None = None  # BG-6

    @model_validator(mode="after")
    def _taxed(self) -> Seller:
        if not (self.vat_id or self.tax_number):
            raise ValueError("the seller needs a VAT ID or a tax number (§14 Abs. 4 UStG, BR-S-02)")
        return self


class Buyer(_Frozen):
    name: str = Field(min_length=1)  # BT-44
    customer_id: str | None = None  # BT-46, o2c's customer number
    address: PostalAddress
    vat_id: str | None = Field(default=None, pattern=_VAT_ID)  # BT-48, needed for reverse charge
    electronic_address: str | None = None  # BT-49, an e-mail address (scheme EM)
    contact: Contact | None = None  # BG-9


# --------------------------------------------------------------------------- payment


class SepaDirectDebit(_Frozen):
    """BG-19, payment means code 59."""

    kind: Literal["sepa_direct_debit"] = "sepa_direct_debit"
    mandate_reference: str = Field(min_length=1)  # BT-89
    creditor_id: str = Field(min_length=1)  # BT-90, the seller's SEPA creditor identifier
    debtor_iban: str | None = None  # BT-91, required by XRechnung (BR-DE-31)

    @field_validator("debtor_iban")
    @classmethod
    def _iban(cls, value: str | None) -> str | None:
        return None if value is None else _normalize_iban(value)


class SepaCreditTransfer(_Frozen):
    """BG-17, payment means code 58."""

    kind: Literal["sepa_credit_transfer"] = "sepa_credit_transfer"
    iban: str  # BT-84
    account_name: str | None = None  # BT-85
    bic: str | None = Field(default=None, pattern=r"^[A-Z0-9]{8}([A-Z0-9]{3})?$")  # BT-86

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str) -> str:
        return _normalize_iban(value)


class CardPayment(_Frozen):
    """BG-18, payment means code 48 (bank card). Never the full card number (BR-51): last four digits only."""

    kind: Literal["card"] = "card"
    pan_last4: str | None = Field(default=None, pattern=r"^[0-9]{4}$")  # BT-87
    holder_name: str | None = None  # BT-88


PaymentMeans = Annotated[Union[SepaDirectDebit, SepaCreditTransfer, CardPayment], Field(discriminator="kind")]


# --------------------------------------------------------------------------- document


class PrecedingInvoice(_Frozen):
    """BG-3: the invoice a credit note corrects (BT-25 number, BT-26 issue date)."""

    number: str = Field(min_length=1)
    issue_date: date


class VatExemption(_Frozen):
    text: str | None = None  # BT-120
    code: str | None = Field(default=None, pattern=r"^VATEX-[A-Z0-9-]+$")  # BT-121 (CEF VATEX list)

    @model_validator(mode="after")
    def _something(self) -> VatExemption:
        if not (self.text or self.code):
            raise ValueError("an exemption reason needs a text or a VATEX code")
        return self


# Categories whose reason is the same for every o2c invoice. E (exempt) has no default:
# its legal basis depends on the service and must be named by the caller.
DEFAULT_VAT_EXEMPTIONS: Mapping[str, VatExemption] = {
    "AE": VatExemption(text="Steuerschuldnerschaft des Leistungsempfängers / Reverse charge", code="VATEX-EU-AE"),
    "K": VatExemption(text="Innergemeinschaftliche Leistung, steuerfrei", code="VATEX-EU-IC"),
    "G": VatExemption(text="Ausfuhr, steuerfrei", code="VATEX-EU-G"),
    "O": VatExemption(text="Nicht im Inland steuerbare Leistung", code="VATEX-EU-O"),
}


class EInvoiceLine(_Frozen):
    """BG-25. ``net_amount`` = ``quantity`` × ``net_unit_price`` / ``price_base_quantity`` (PEPPOL-EN16931-R120)."""

    id: str = Field(min_length=1)  # BT-126
    name: str = Field(min_length=1)  # BT-153
    quantity: ExactDecimal  # BT-129 (negative for a credit line)
    unit_code: str = Field(pattern=r"^[A-Z0-9]{1,3}$")  # BT-130, UN/ECE Rec 20 (C62, MON, MIN, MBT ...)
    net_unit_price: ExactDecimal = Field(ge=0)  # BT-146 (BR-27: never negative)
    price_base_quantity: ExactDecimal | None = Field(default=None, gt=0)  # BT-149
    net_amount: Money  # BT-131
    vat_category: VatCategory  # BT-151
    vat_rate: ExactDecimal = Field(ge=0, le=100)  # BT-152, percent
    period_start: date | None = None  # BT-134, inclusive
    period_end: date | None = None  # BT-135, inclusive

    @model_validator(mode="after")
    def _consistent(self) -> EInvoiceLine:
        _cents_only(self.net_amount, f"line {self.id} net amount")
        base = self.price_base_quantity or Decimal(1)
        if to_cents(self.quantity * self.net_unit_price / base) != self.net_amount:
            raise ValueError(f"line {self.id}: quantity × price / base quantity does not give the net amount {self.net_amount}")
        if self.vat_category in _ZERO_RATE and self.vat_rate != 0:
            raise ValueError(f"line {self.id}: VAT category {self.vat_category} requires a 0 % rate")
        if self.vat_category == "S" and self.vat_rate <= 0:
            raise ValueError(f"line {self.id}: VAT category S requires a rate above 0 %")
        if self.period_start and self.period_end and self.period_end < self.period_start:
            raise ValueError(f"line {self.id}: period end before period start (BR-30)")
        return self


class VatBreakdownEntry(_Frozen):
    """BG-23, one per VAT category and rate."""

    category: VatCategory  # BT-118
    rate: ExactDecimal = Field(ge=0, le=100)  # BT-119
    taxable_amount: Money  # BT-116
    tax_amount: Money  # BT-117
    exemption: VatExemption | None = None  # BT-120/BT-121

    @model_validator(mode="after")
    def _consistent(self) -> VatBreakdownEntry:
        _cents_only(self.taxable_amount, "VAT taxable amount")
        _cents_only(self.tax_amount, "VAT amount")
        if self.tax_amount != to_cents(self.taxable_amount * self.rate / _HUNDRED):
            raise ValueError(f"VAT {self.category} {self.rate} %: {self.tax_amount} is not the rounded rate of {self.taxable_amount}")
        if self.category in _NEEDS_EXEMPTION and self.exemption is None:
            raise ValueError(f"VAT category {self.category} needs an exemption reason (BT-120/BT-121)")
        if self.category in _NO_EXEMPTION and self.exemption is not None:
            raise ValueError(f"VAT category {self.category} must not carry an exemption reason")
        return self


class EInvoiceDocument(_Frozen):
    """Everything EN 16931 (and the XRechnung CIUS) needs for an o2c invoice or credit note."""

    type_code: Literal["380", "381"] = "380"  # BT-3: 380 commercial invoice, 381 credit note
    number: str = Field(min_length=1)  # BT-1
    issue_date: date  # BT-2
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")  # BT-5
    preceding_invoice: PrecedingInvoice | None = None  # BG-3
    buyer_reference: str | None = None  # BT-10 (Leitweg-ID for German public buyers)
    contract_reference: str | None = None  # BT-12, e.g. the billing account
    notes: tuple[str, ...] = ()  # BG-1
    period_start: date  # BT-73, inclusive
    period_end: date  # BT-74, inclusive
    seller: Seller
    buyer: Buyer
    payment_means: PaymentMeans | None = None  # BG-16 (XRechnung requires it: BR-DE-1)
    payment_reference: str | None = None  # BT-83, defaults to the number in the XML
    payment_terms: str | None = None  # BT-20
    due_date: date | None = None  # BT-9
    lines: tuple[EInvoiceLine, ...] = Field(min_length=1)  # BR-16
    vat_breakdown: tuple[VatBreakdownEntry, ...] = Field(min_length=1)
    net_total: Money  # BT-106 = BT-109 (o2c has no document-level allowances or charges)
    vat_total: Money  # BT-110
    gross_total: Money  # BT-112
    prepaid_amount: Money = _ZERO  # BT-113
    due_payable: Money  # BT-115

    @model_validator(mode="after")
    def _consistent(self) -> EInvoiceDocument:
        for value, what in ((self.net_total, "net total"), (self.vat_total, "VAT total"), (self.gross_total, "gross total"),
                            (self.prepaid_amount, "prepaid amount"), (self.due_payable, "amount due")):
            _cents_only(value, what)
        if self.period_end < self.period_start:
            raise ValueError("billing period ends before it starts (BR-29)")
        if self.type_code == "381" and self.preceding_invoice is None:
            raise ValueError("a credit note (381) must name the invoice it corrects (BG-3)")
        if len({line.id for line in self.lines}) != len(self.lines):
            raise ValueError("line ids must be unique within the document")
        self._check_totals()
        self._check_vat_parties()
        if self.due_payable > 0 and self.due_date is None and not self.payment_terms:
            raise ValueError("an amount due needs a due date or payment terms (BR-CO-25)")
        return self

    def _check_totals(self) -> None:
        line_sum = sum((line.net_amount for line in self.lines), _ZERO)
        if line_sum != self.net_total:
            raise ValueError(f"net total {self.net_total} != sum of line net amounts {line_sum} (BR-CO-10)")
        groups: dict[tuple[str, Decimal], Decimal] = {}
        for line in self.lines:
            key = (line.vat_category, line.vat_rate)
            groups[key] = groups.get(key, _ZERO) + line.net_amount
        entries = {(v.category, v.rate): v.taxable_amount for v in self.vat_breakdown}
        if len(entries) != len(self.vat_breakdown) or entries != groups:
            raise ValueError(f"VAT breakdown {entries} does not match the lines {groups} (BR-CO-18, BR-S-08 ...)")
        vat_sum = sum((v.tax_amount for v in self.vat_breakdown), _ZERO)
        if vat_sum != self.vat_total:
            raise ValueError(f"VAT total {self.vat_total} != sum of the VAT breakdown {vat_sum} (BR-CO-14)")
        if self.net_total + self.vat_total != self.gross_total:
            raise ValueError(f"gross total {self.gross_total} != net + VAT {self.net_total + self.vat_total} (BR-CO-15)")
        if self.gross_total - self.prepaid_amount != self.due_payable:
            raise ValueError(f"amount due {self.due_payable} != gross - prepaid {self.gross_total - self.prepaid_amount} (BR-CO-16)")

    def _check_vat_parties(self) -> None:
        categories = {v.category for v in self.vat_breakdown}
        if categories & {"AE", "K"} and not (self.seller.vat_id and self.buyer.vat_id):
            raise ValueError("reverse charge (AE) and intra-community supply (K) need the seller's and "
                             "the buyer's VAT ID (BR-AE-02, BR-IC-02)")
        if "S" in categories and not (self.seller.vat_id or self.seller.tax_number):
            raise ValueError("standard-rated lines need the seller's VAT ID or tax number (BR-S-02)")
        if "O" in categories and (self.seller.vat_id or self.buyer.vat_id):
            raise ValueError("an invoice with 'not subject to VAT' (O) lines must not carry VAT IDs (BR-O-02)")


# --------------------------------------------------------------------------- from o2c's computed invoice

# Unit names o2c charges carry that are not UN/ECE Rec 20 codes (BR-CL-23 rejects them).
UNIT_CODE_ALIASES: Mapping[str, str] = {"MB": "4L", "GB": "E34", "KB": "2P", "SMS": "C62", "MONTH": "MON"}


def _line_quantities(quantity: Decimal, unit_price: Decimal | None, net_amount: Decimal) -> tuple[Decimal, Decimal, Decimal | None]:
    """(BT-129 quantity, BT-146 price, BT-149 base quantity) whose product is exactly the line amount.

    o2c's own unit price is used when it reproduces the amount. Otherwise (rated usage without a
    single price, a prorated fee) the price is the line amount for the whole quantity: the quantity
    stays what o2c billed and nothing is invented. A negative amount (discount, credit) gets a
    negative quantity, because the price may not be negative (BR-27).
    """
    sign = -1 if net_amount < 0 else 1
    qty = abs(quantity) * sign if quantity != 0 else Decimal(sign)
    if unit_price is not None and unit_price >= 0 and to_cents(qty * unit_price) == net_amount:
        return qty, unit_price, None
    if abs(qty) == 1:
        return qty, abs(net_amount), None
    return qty, abs(net_amount), abs(qty)


def einvoice_from_computed(
    computed: ComputedInvoice,
    *,
    number: str,
    issue_date: date,
    period_start: date,
    period_end_exclusive: date,
    seller: Seller,
    buyer: Buyer,
    payment_means: SepaDirectDebit | SepaCreditTransfer | CardPayment | None,
    due_date: date | None = None,
    payment_terms: str | None = None,
    currency: str = "EUR",
    type_code: Literal["380", "381"] = "380",
    preceding_invoice: PrecedingInvoice | None = None,
    buyer_reference: str | None = None,
    contract_reference: str | None = None,
    prepaid_amount: Decimal = _ZERO,
    exemptions: Mapping[str, VatExemption] | None = None,
    notes: Sequence[str] = (),
) -> EInvoiceDocument:
    """Map ``compute_invoice``'s result onto the e-invoice model; totals are taken, never recomputed.

    A credit note (``type_code="381"``) that o2c computed with negative amounts is stated with
    positive ones, as EN 16931 expects of a 381 (the type code says it is a credit); every amount
    is then exactly the negated compute_invoice amount (half-away-from-zero rounding is symmetric).
    ``prepaid_amount`` is in the document's sign.

    Unit names that are not Rec 20 codes are translated (:data:`UNIT_CODE_ALIASES`, e.g. MB -> 4L).
    o2c periods end exclusively (``BillingPeriod.local_end``, ``ChargeLine.period_end``);
    EN 16931 periods end inclusively, so one day is taken off both here.
    ``exemptions`` (by VAT category) override :data:`DEFAULT_VAT_EXEMPTIONS`.
    """
    reasons = {**DEFAULT_VAT_EXEMPTIONS, **(exemptions or {})}
    totals = computed.totals
    # o2c computes a credit note with negative lines; a 381 states the credited amounts positively.
    sign = Decimal(-1) if type_code == "381" and totals.gross_total < 0 else Decimal(1)
    lines = []
    for line in computed.lines:
        net_amount = sign * line.net_amount
        quantity, price, base = _line_quantities(line.quantity, line.unit_price, net_amount)
        lines.append(EInvoiceLine(
            id=str(line.line_no), name=line.description, quantity=quantity,
            unit_code=UNIT_CODE_ALIASES.get(line.unit.upper(), line.unit),
            net_unit_price=price, price_base_quantity=base, net_amount=net_amount,
            vat_category=line.vat_category, vat_rate=line.vat_rate,
            period_start=line.period_start,
            period_end=line.period_end - timedelta(days=1) if line.period_end else None,
        ))
    breakdown = tuple(
        VatBreakdownEntry(category=v.vat_category, rate=v.vat_rate, taxable_amount=sign * v.taxable_amount,
                          tax_amount=sign * v.tax_amount,
                          exemption=reasons.get(v.vat_category) if v.vat_category in _NEEDS_EXEMPTION else None)
        for v in totals.vat_breakdown
    )
    gross_total = sign * totals.gross_total
    return EInvoiceDocument(
        type_code=type_code, number=number, issue_date=issue_date, currency=currency,
        preceding_invoice=preceding_invoice, buyer_reference=buyer_reference, contract_reference=contract_reference,
        notes=tuple(notes), period_start=period_start, period_end=period_end_exclusive - timedelta(days=1),
        seller=seller, buyer=buyer, payment_means=payment_means, payment_terms=payment_terms, due_date=due_date,
        lines=tuple(lines), vat_breakdown=breakdown,
        net_total=sign * totals.net_total, vat_total=sign * totals.vat_total, gross_total=gross_total,
        prepaid_amount=prepaid_amount, due_payable=gross_total - prepaid_amount,
    )
