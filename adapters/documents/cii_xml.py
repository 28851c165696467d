"""Serialise an :class:`EInvoiceDocument` as UN/CEFACT Cross Industry Invoice (CII D16B) XML.

Two profiles: ``"en16931"`` (Factur-X / ZUGFeRD 2.x profile EN 16931, BT-24
``urn:cen.eu:en16931:2017``) and ``"xrechnung"`` (the German CIUS XRechnung 3.0, which additionally
requires a buyer reference / Leitweg-ID, a full seller contact and electronic addresses).
Element order follows the CII D16B schema as restricted by Factur-X 1.0 EN16931.
No number is computed here: amounts are written exactly as the model holds them.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from lxml import etree

from adapters.documents.einvoice_model import (
    Buyer,
    CardPayment,
    Contact,
    EInvoiceDocument,
    EInvoiceLine,
    PostalAddress,
    SepaCreditTransfer,
    SepaDirectDebit,
    Seller,
)

__all__ = ["GUIDELINE_IDS", "Profile", "build_cii_xml", "xrechnung_problems"]

Profile = Literal["en16931", "xrechnung"]
GUIDELINE_IDS: dict[str, str] = {
    "en16931": "urn:cen.eu:en16931:2017",
    "xrechnung": "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0",
}
# BT-23, the process XRechnung 3.0 asks for (PEPPOL-EN16931-R001).
_XRECHNUNG_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"

_RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
_RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
_UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
_QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
_NSMAP = {"rsm": _RSM, "ram": _RAM, "udt": _UDT, "qdt": _QDT}

_PAYMENT_CODES = {"sepa_direct_debit": "59", "sepa_credit_transfer": "58", "card": "48"}
_PAYMENT_INFO = {"sepa_direct_debit": "SEPA-Lastschrift", "sepa_credit_transfer": "SEPA-Überweisung", "card": "Kartenzahlung"}


def _ram(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{_RAM}}}{tag}", attrs or None)
    if text is not None:
        element.text = text
    return element


def _amount(value: Decimal) -> str:
    return f"{abs(value) if value == 0 else value:.2f}"  # never "-0.00"


def _decimal(value: Decimal) -> str:
    # Plain notation, no exponent and no trailing zeros: 120.5, 0.049, 19.
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _date(parent: etree._Element, tag: str, value: date, *, qualified: bool = False) -> None:
    holder = _ram(parent, tag)
    ns = _QDT if qualified else _UDT
    etree.SubElement(holder, f"{{{ns}}}DateTimeString", {"format": "102"}).text = value.strftime("%Y%m%d")


def xrechnung_problems(doc: EInvoiceDocument) -> list[str]:
    """What the XRechnung CIUS needs beyond EN 16931 and ``doc`` lacks (empty when it is complete)."""
    problems = []
    if not doc.buyer_reference:
        problems.append("buyer reference / Leitweg-ID (BT-10, BR-DE-15)")
    contact = doc.seller.contact
    if contact is None or not (contact.name and contact.phone and contact.email):
        problems.append("seller contact with name, phone and e-mail (BG-6, BR-DE-2/-5/-6/-7)")
    for who, address in (("seller", doc.seller.address), ("buyer", doc.buyer.address)):
        if not (address.city and address.postcode):
            problems.append(f"{who} city and post code (BR-DE-3/-4/-8/-9)")
    if not doc.seller.electronic_address:
        problems.append("seller electronic address (BT-34, PEPPOL-EN16931-R020)")
    if not doc.buyer.electronic_address:
        problems.append("buyer electronic address (BT-49, PEPPOL-EN16931-R010)")
    payment = doc.payment_means
    if payment is None:
        problems.append("payment instructions (BG-16, BR-DE-1)")
    if isinstance(payment, SepaDirectDebit) and not payment.debtor_iban:
        problems.append("debited account IBAN for direct debit (BT-91, BR-DE-31)")
    if isinstance(payment, CardPayment) and not payment.pan_last4:
        problems.append("card number's last digits for card payment (BT-87, BR-DE-24)")
    return problems


def build_cii_xml(doc: EInvoiceDocument, *, profile: Profile) -> bytes:
    """The invoice as CII XML (UTF-8 bytes). Raises ValueError if ``profile`` needs data ``doc`` lacks."""
    if profile not in GUIDELINE_IDS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(GUIDELINE_IDS)}")
    if profile == "xrechnung" and (problems := xrechnung_problems(doc)):
        raise ValueError("XRechnung needs: " + "; ".join(problems))

    root = etree.Element(f"{{{_RSM}}}CrossIndustryInvoice", nsmap=_NSMAP)
    context = etree.SubElement(root, f"{{{_RSM}}}ExchangedDocumentContext")
    if profile == "xrechnung":
        _ram(_ram(context, "BusinessProcessSpecifiedDocumentContextParameter"), "ID", _XRECHNUNG_PROCESS)
    _ram(_ram(context, "GuidelineSpecifiedDocumentContextParameter"), "ID", GUIDELINE_IDS[profile])

    header = etree.SubElement(root, f"{{{_RSM}}}ExchangedDocument")
    _ram(header, "ID", doc.number)
    _ram(header, "TypeCode", doc.type_code)
    _date(header, "IssueDateTime", doc.issue_date)
    for note in doc.notes:
        _ram(_ram(header, "IncludedNote"), "Content", note)

    transaction = etree.SubElement(root, f"{{{_RSM}}}SupplyChainTradeTransaction")
    for line in doc.lines:
        _line(transaction, line)
    _agreement(transaction, doc)
    _ram(transaction, "ApplicableHeaderTradeDelivery")
    _settlement(transaction, doc)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8", pretty_print=True)


def _line(transaction: etree._Element, line: EInvoiceLine) -> None:
    item = _ram(transaction, "IncludedSupplyChainTradeLineItem")
    _ram(_ram(item, "AssociatedDocumentLineDocument"), "LineID", line.id)
    _ram(_ram(item, "SpecifiedTradeProduct"), "Name", line.name)
    price = _ram(_ram(item, "SpecifiedLineTradeAgreement"), "NetPriceProductTradePrice")
    _ram(price, "ChargeAmount", _decimal(line.net_unit_price))
    if line.price_base_quantity is not None:
        _ram(price, "BasisQuantity", _decimal(line.price_base_quantity), unitCode=line.unit_code)
    _ram(_ram(item, "SpecifiedLineTradeDelivery"), "BilledQuantity", _decimal(line.quantity), unitCode=line.unit_code)
    settlement = _ram(item, "SpecifiedLineTradeSettlement")
    tax = _ram(settlement, "ApplicableTradeTax")
    _ram(tax, "TypeCode", "VAT")
    _ram(tax, "CategoryCode", line.vat_category)
    if line.vat_category != "O":  # BR-O-05: no rate for "not subject to VAT"
        _ram(tax, "RateApplicablePercent", _decimal(line.vat_rate))
    if line.period_start or line.period_end:
        period = _ram(settlement, "BillingSpecifiedPeriod")
        if line.period_start:
            _date(period, "StartDateTime", line.period_start)
        if line.period_end:
            _date(period, "EndDateTime", line.period_end)
    _ram(_ram(settlement, "SpecifiedTradeSettlementLineMonetarySummation"), "LineTotalAmount", _amount(line.net_amount))


def _contact(parent: etree._Element, contact: Contact) -> None:
    holder = _ram(parent, "DefinedTradeContact")
    if contact.name:
        _ram(holder, "PersonName", contact.name)
    if contact.phone:
        _ram(_ram(holder, "TelephoneUniversalCommunication"), "CompleteNumber", contact.phone)
    if contact.email:
        _ram(_ram(holder, "EmailURIUniversalCommunication"), "URIID", contact.email)


def _address(parent: etree._Element, address: PostalAddress) -> None:
    holder = _ram(parent, "PostalTradeAddress")
    for tag, value in (("PostcodeCode", address.postcode), ("LineOne", address.line1), ("LineTwo", address.line2),
                       ("LineThree", address.line3), ("CityName", address.city)):
        if value:
            _ram(holder, tag, value)
    _ram(holder, "CountryID", address.country_code)
    if address.country_subdivision:
        _ram(holder, "CountrySubDivisionName", address.country_subdivision)


def _party(parent: etree._Element, tag: str, party: Seller | Buyer) -> None:
    holder = _ram(parent, tag)
    if isinstance(party, Buyer) and party.customer_id:
        _ram(holder, "ID", party.customer_id)
    _ram(holder, "Name", party.name)
    if isinstance(party, Seller) and (party.legal_registration_id or party.trading_name):
        legal = _ram(holder, "SpecifiedLegalOrganization")
        if party.legal_registration_id:
            _ram(legal, "ID", party.legal_registration_id)
        if party.trading_name:
            _ram(legal, "TradingBusinessName", party.trading_name)
    if party.contact:
        _contact(holder, party.contact)
    _address(holder, party.address)
    if party.electronic_address:
        _ram(_ram(holder, "URIUniversalCommunication"), "URIID", party.electronic_address, schemeID="EM")
    if party.vat_id:
        _ram(_ram(holder, "SpecifiedTaxRegistration"), "ID", party.vat_id, schemeID="VA")
    if isinstance(party, Seller) and party.tax_number:
        _ram(_ram(holder, "SpecifiedTaxRegistration"), "ID", party.tax_number, schemeID="FC")


def _agreement(transaction: etree._Element, doc: EInvoiceDocument) -> None:
    agreement = _ram(transaction, "ApplicableHeaderTradeAgreement")
    if doc.buyer_reference:
        _ram(agreement, "BuyerReference", doc.buyer_reference)
    _party(agreement, "SellerTradeParty", doc.seller)
    _party(agreement, "BuyerTradeParty", doc.buyer)
    if doc.contract_reference:
        _ram(_ram(agreement, "ContractReferencedDocument"), "IssuerAssignedID", doc.contract_reference)


def _payment_means(settlement: etree._Element, doc: EInvoiceDocument) -> None:
    payment = doc.payment_means
    if payment is None:
        return
    means = _ram(settlement, "SpecifiedTradeSettlementPaymentMeans")
    _ram(means, "TypeCode", _PAYMENT_CODES[payment.kind])
    _ram(means, "Information", _PAYMENT_INFO[payment.kind])
    if isinstance(payment, CardPayment) and payment.pan_last4:
        card = _ram(means, "ApplicableTradeSettlementFinancialCard")
        _ram(card, "ID", payment.pan_last4)
        if payment.holder_name:
            _ram(card, "CardholderName", payment.holder_name)
    if isinstance(payment, SepaDirectDebit) and payment.debtor_iban:
        _ram(_ram(means, "PayerPartyDebtorFinancialAccount"), "IBANID", payment.debtor_iban)
    if isinstance(payment, SepaCreditTransfer):
        account = _ram(means, "PayeePartyCreditorFinancialAccount")
        _ram(account, "IBANID", payment.iban)
        if payment.account_name:
            _ram(account, "AccountName", payment.account_name)
        if payment.bic:
            _ram(_ram(means, "PayeeSpecifiedCreditorFinancialInstitution"), "BICID", payment.bic)


def _settlement(transaction: etree._Element, doc: EInvoiceDocument) -> None:
    settlement = _ram(transaction, "ApplicableHeaderTradeSettlement")
    payment = doc.payment_means
    if isinstance(payment, SepaDirectDebit):
        _ram(settlement, "CreditorReferenceID", payment.creditor_id)
    _ram(settlement, "PaymentReference", doc.payment_reference or doc.number)
    _ram(settlement, "InvoiceCurrencyCode", doc.currency)
    _payment_means(settlement, doc)
    for vat in doc.vat_breakdown:
        tax = _ram(settlement, "ApplicableTradeTax")
        _ram(tax, "CalculatedAmount", _amount(vat.tax_amount))
        _ram(tax, "TypeCode", "VAT")
        if vat.exemption and vat.exemption.text:
            _ram(tax, "ExemptionReason", vat.exemption.text)
        _ram(tax, "BasisAmount", _amount(vat.taxable_amount))
        _ram(tax, "CategoryCode", vat.category)
        if vat.exemption and vat.exemption.code:
            _ram(tax, "ExemptionReasonCode", vat.exemption.code)
        if vat.category != "O":
            _ram(tax, "RateApplicablePercent", _decimal(vat.rate))
    period = _ram(settlement, "BillingSpecifiedPeriod")
    _date(period, "StartDateTime", doc.period_start)
    _date(period, "EndDateTime", doc.period_end)
    if doc.payment_terms or doc.due_date or isinstance(payment, SepaDirectDebit):
        terms = _ram(settlement, "SpecifiedTradePaymentTerms")
        if doc.payment_terms:
            _ram(terms, "Description", doc.payment_terms)
        if doc.due_date:
            _date(terms, "DueDateDateTime", doc.due_date)
        if isinstance(payment, SepaDirectDebit):
            _ram(terms, "DirectDebitMandateID", payment.mandate_reference)
    sums = _ram(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation")
    _ram(sums, "LineTotalAmount", _amount(doc.net_total))
    _ram(sums, "TaxBasisTotalAmount", _amount(doc.net_total))
    _ram(sums, "TaxTotalAmount", _amount(doc.vat_total), currencyID=doc.currency)
    _ram(sums, "GrandTotalAmount", _amount(doc.gross_total))
    if doc.prepaid_amount:
        _ram(sums, "TotalPrepaidAmount", _amount(doc.prepaid_amount))
    _ram(sums, "DuePayableAmount", _amount(doc.due_payable))
    if doc.preceding_invoice:
        reference = _ram(settlement, "InvoiceReferencedDocument")
        _ram(reference, "IssuerAssignedID", doc.preceding_invoice.number)
        _date(reference, "FormattedIssueDateTime", doc.preceding_invoice.issue_date, qualified=True)
