"""EN 16931 CII XML: every document o2c makes passes the XML Schema and the official business rules
(CEN EN 16931, Factur-X EN16931 profile, KoSIT XRechnung), its totals are compute_invoice's, and no
call detail can reach it."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal as D

import facturx
import pytest
from lxml import etree
from pydantic import ValidationError

from activities.invoice_charges import USAGE_LABELS
from adapters.documents.einvoice import (
    GUIDELINE_IDS,
    UNIT_CODE_ALIASES,
    Buyer,
    CardPayment,
    Contact,
    EInvoiceDocument,
    EInvoiceLine,
    PostalAddress,
    PrecedingInvoice,
    SepaCreditTransfer,
    SepaDirectDebit,
    Seller,
    VatExemption,
    build_cii_xml,
    einvoice_from_computed,
)
from domain.invoicing import ChargeLine, ComputedInvoice, compute_invoice
from tests.documents.validators import VALIDATION_DIR, all_errors, errors, findings, xsd_errors

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
}
SETTLEMENT = "/rsm:CrossIndustryInvoice/rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
SUMS = f"{SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"

# --------------------------------------------------------------------------- sample parties

SELLER = Seller(
    name="o2c Telekom GmbH",
    legal_registration_id="HRB 123456 B",
    address=PostalAddress(line1="Musterstraße 1", postcode="10115", city="Berlin", country_code="DE"),
    vat_id="DE123456789",
    tax_number="27/123/45678",
    electronic_address="rechnung@o2c.example",
    contact=Contact(name="Kundenservice Rechnungen", phone="+49 30 1234567", email="service@o2c.example"),
)
CONSUMER = Buyer(
    name="Jürgen Müller", customer_id="C-100042", electronic_address="juergen@example.org",
    address=PostalAddress(line1="Hauptstraße 12a", postcode="80331", city="München", country_code="DE"),
)
AUSTRIAN_BUSINESS = Buyer(
    name="Alpen Logistik GmbH", customer_id="C-200007", vat_id="ATU12345678", electronic_address="ap@alpen-logistik.example",
    address=PostalAddress(line1="Ringstraße 5", postcode="1010", city="Wien", country_code="AT"),
)
CITY = Buyer(
    name="Stadt Musterstadt, Hauptamt", customer_id="C-300001", electronic_address="eingangsrechnung@musterstadt.example",
    address=PostalAddress(line1="Rathausplatz 1", postcode="12345", city="Musterstadt", country_code="DE"),
)
LEITWEG_ID = "04011000-12345-67"
DIRECT_DEBIT = SepaDirectDebit(mandate_reference="O2C-MANDATE-100042", creditor_id="DE98ZZZ09999999999",
                               debtor_iban="DE89 3704 0044 0532 0130 00")
TRANSFER = SepaCreditTransfer(iban="DE02120300000000202051", account_name="o2c Telekom GmbH", bic="BYLADEM1001")
CARD = CardPayment(pan_last4="4242", holder_name="Jürgen Müller")

FEB = {"period_start": date(2026, 2, 1), "period_end": date(2026, 3, 1)}  # o2c periods end exclusively


def fee(description: str, price: str, rate: str = "19", category: str = "S", **extra: object) -> ChargeLine:
    return ChargeLine(kind="recurring", description=description, quantity=D(1), unit="MON", unit_price=D(price),
                      net_amount=D(price), vat_rate=D(rate), vat_category=category, **FEB, **extra)


def usage(description: str, quantity: str, amount: str, unit: str = "MIN", rate: str = "19", category: str = "S") -> ChargeLine:
    # Rated usage as activities.invoice_charges makes it: no single unit price, sub-cent amount.
    return ChargeLine(kind="usage", description=description, quantity=D(quantity), unit=unit, net_amount=D(amount),
                      vat_rate=D(rate), vat_category=category, **FEB)


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    charges: list[ChargeLine]
    profile: str
    options: dict

    def computed(self) -> ComputedInvoice:
        return compute_invoice(self.charges)

    def document(self) -> EInvoiceDocument:
        options = {"number": "INV-2026-000123", "issue_date": date(2026, 3, 1), "period_start": date(2026, 2, 1),
                   "period_end_exclusive": date(2026, 3, 1), "seller": SELLER, "due_date": date(2026, 3, 15), **self.options}
        return einvoice_from_computed(self.computed(), **options)

    def xml(self) -> bytes:
        return build_cii_xml(self.document(), profile=self.profile)


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "standard-19": lambda: Scenario(
        [fee("Mobil M Grundgebühr", "19.99"),
         ChargeLine(kind="recurring", description="Mobil M Grundgebühr, anteilig 0.4839", quantity=D(1), unit="MON",
                    unit_price=D("19.99"), net_amount=D("9.6732"), **FEB),
         usage("Gespräche außerhalb des Inklusivvolumens (42 Verbindungen)", "120.5", "5.8954"),
         usage("Daten außerhalb des Inklusivvolumens (3 Verbindungen)", "1536", "2.9925", unit="MB"),
         ChargeLine(kind="one_time", description="Anschlussgebühr", unit="C62", unit_price=D("29.99"), net_amount=D("29.99")),
         ChargeLine(kind="discount", description="Treuerabatt", unit="C62", net_amount=D("-2.50"))],
        "en16931",
        {"buyer": CONSUMER, "payment_means": DIRECT_DEBIT,
         "payment_terms": "Der Betrag wird am 15.03.2026 von Ihrem Konto abgebucht."}),
    "mixed-19-7": lambda: Scenario(
        [fee("Mobil S Grundgebühr", "9.99"), fee("Fachzeitschrift Digital-Abo", "28.67", rate="7"),
         usage("SMS außerhalb des Inklusivvolumens (7 SMS)", "7", "0.6293", unit="C62"),
         fee("Hörbuch-Flatrate", "4.99", rate="7")],
        "en16931",
        {"buyer": CONSUMER, "payment_means": TRANSFER, "payment_terms": "Zahlbar bis 15.03.2026 ohne Abzug."}),
    "zero-rated": lambda: Scenario(
        [fee("Mobil S Grundgebühr", "9.99"), fee("Notruf-Zusatzdienst (Nullsatz)", "3.50", rate="0", category="Z")],
        "en16931",
        {"buyer": CONSUMER, "payment_means": CARD, "payment_terms": "Bereits per Karte belastet."}),
    "reverse-charge": lambda: Scenario(
        [fee("Business Mobil L Grundgebühr", "49.00", rate="0", category="AE"),
         usage("Roaming-Daten (12 Sitzungen)", "2048", "10.2400", unit="MB", rate="0", category="AE")],
        "en16931",
        {"buyer": AUSTRIAN_BUSINESS, "payment_means": TRANSFER,
         "payment_terms": "Zahlbar innerhalb von 14 Tagen. Steuerschuldnerschaft des Leistungsempfängers."}),
    "credit-note": lambda: Scenario(
        # As activities.invoice_issuer.issue_credit_note computes it: negative lines.
        [ChargeLine(kind="credit", description="Gutschrift Grundgebühr Februar (Störung)", quantity=D(1), unit="MON",
                    unit_price=D("-9.99"), net_amount=D("-9.99"), **FEB),
         ChargeLine(kind="credit", description="Gutschrift Gespräche (Doppelabrechnung)", quantity=D("12"), unit="MIN",
                    net_amount=D("-1.0805"), **FEB)],
        "en16931",
        {"number": "CN-2026-000004", "type_code": "381", "buyer": CONSUMER, "payment_means": None,
         "preceding_invoice": PrecedingInvoice(number="INV-2026-000101", issue_date=date(2026, 2, 1)),
         "payment_terms": "Der Betrag wird mit Ihrer nächsten Rechnung verrechnet.", "due_date": None}),
    "reverse-charge-credit-note": lambda: Scenario(
        [ChargeLine(kind="credit", description="Gutschrift Business Mobil L", quantity=D(1), unit="MON",
                    net_amount=D("-49.00"), vat_rate=D(0), vat_category="AE", **FEB)],
        "en16931",
        {"number": "CN-2026-000006", "type_code": "381", "buyer": AUSTRIAN_BUSINESS, "payment_means": TRANSFER,
         "preceding_invoice": PrecedingInvoice(number="INV-2026-000103", issue_date=date(2026, 2, 1)),
         "payment_terms": "Wir erstatten den Betrag auf Ihr Konto.", "due_date": None}),
    "xrechnung": lambda: Scenario(
        [fee("Behördentarif Mobil XL", "39.90"), usage("Gespräche (210 Verbindungen)", "640", "12.8000"),
         fee("Mobile Device Management", "5.00")],
        "xrechnung",
        {"buyer": CITY, "buyer_reference": LEITWEG_ID, "contract_reference": "BA-7781", "payment_means": TRANSFER,
         "payment_terms": "Zahlbar innerhalb von 30 Tagen ohne Abzug."}),
    "xrechnung-credit-note": lambda: Scenario(
        [fee("Gutschrift Behördentarif Mobil XL", "39.90")],
        "xrechnung",
        {"number": "CRN-2026-000005", "type_code": "381", "buyer": CITY, "buyer_reference": LEITWEG_ID,
         "payment_means": TRANSFER, "preceding_invoice": PrecedingInvoice(number="INV-2026-000102", issue_date=date(2026, 2, 1)),
         "payment_terms": "Wir überweisen den Betrag auf Ihr Konto.", "due_date": None}),
}


def xpath_text(xml: bytes, path: str) -> list[str]:
    return [node.text for node in etree.fromstring(xml).xpath(path, namespaces=NS)]


def mutate(xml: bytes, path: str, value: str | None) -> bytes:
    """The XML with the first node at ``path`` set to ``value`` (or removed when None)."""
    root = etree.fromstring(xml)
    node = root.xpath(path, namespaces=NS)[0]
    if value is None:
        node.getparent().remove(node)
    else:
        node.text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("name", SCENARIOS)
def test_passes_xsd_and_official_rules(name: str) -> None:
    scenario = SCENARIOS[name]()
    xml = scenario.xml()
    report = all_errors(xml, scenario.profile)
    assert report == {key: [] for key in report}, report
    assert set(report) == ({"xsd", "cen", "facturx"} if scenario.profile == "en16931" else {"xsd", "cen", "xrechnung"})


@pytest.mark.parametrize("name", SCENARIOS)
def test_facturx_package_xsd_check_agrees(name: str) -> None:
    assert facturx.xml_check_xsd(SCENARIOS[name]().xml(), flavor="factur-x", level="en16931") is True


def test_only_known_warnings_remain() -> None:
    # The one warning: Factur-X flags the empty ApplicableHeaderTradeDelivery, which CII requires
    # even when there is nothing to deliver (no BT-72 for a service billed by period).
    xml = SCENARIOS["standard-19"]().xml()
    assert [(f.rule, f.flag) for f in findings(xml, "cen")] == []
    assert [(f.rule, f.flag) for f in findings(xml, "facturx")] == [("PEPPOL-EN16931-R008", "warning")]
    xr = SCENARIOS["xrechnung"]().xml()
    assert findings(xr, "xrechnung") == []


# --------------------------------------------------------------------------- the validators really check


def test_wrong_grand_total_is_caught_by_every_rule_set() -> None:
    xml = SCENARIOS["mixed-19-7"]().xml()
    (grand,) = xpath_text(xml, f"{SUMS}/ram:GrandTotalAmount")
    broken = mutate(xml, f"{SUMS}/ram:GrandTotalAmount", str(D(grand) + D("0.01")))
    assert xsd_errors(broken) == []  # still well-formed and schema-valid: only the business rules see it
    assert "BR-CO-15" in {f.rule for f in errors(broken, "cen")}
    assert "BR-CO-15" in {f.rule for f in errors(broken, "facturx")}


def test_wrong_vat_amount_is_caught() -> None:
    xml = SCENARIOS["standard-19"]().xml()
    broken = mutate(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CalculatedAmount", "0.01")
    rules = {f.rule for f in errors(broken, "cen")}
    assert {"BR-CO-14", "BR-S-09"} <= rules


def test_reverse_charge_without_buyer_vat_id_is_caught() -> None:
    xml = SCENARIOS["reverse-charge"]().xml()
    broken = mutate(xml, "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration", None)
    assert "BR-AE-02" in {f.rule for f in errors(broken, "cen")}


def test_missing_leitweg_id_is_caught_by_kosit_rules() -> None:
    xml = SCENARIOS["xrechnung"]().xml()
    broken = mutate(xml, "//ram:ApplicableHeaderTradeAgreement/ram:BuyerReference", None)
    assert errors(broken, "cen") == []
    assert "BR-DE-15" in {f.rule for f in errors(broken, "xrechnung")}


def test_schema_violation_is_caught_by_xsd() -> None:
    xml = SCENARIOS["standard-19"]().xml()
    broken = mutate(xml, "//rsm:ExchangedDocument/ram:TypeCode", None)
    assert xsd_errors(broken)
    with pytest.raises(Exception, match="not valid against the official XML Schema"):
        facturx.xml_check_xsd(broken, flavor="factur-x", level="en16931")


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize("name", SCENARIOS)
def test_xml_totals_are_compute_invoice_totals(name: str) -> None:
    scenario = SCENARIOS[name]()
    computed = scenario.computed()
    xml = scenario.xml()

    def amount(path: str) -> D:
        (text,) = xpath_text(xml, path)
        return D(text)

    totals = computed.totals
    # A credit note computed with negative lines states them positively (381), exactly negated.
    sign = -1 if scenario.options.get("type_code") == "381" and totals.gross_total < 0 else 1
    assert amount(f"{SUMS}/ram:LineTotalAmount") == sign * totals.net_total
    assert amount(f"{SUMS}/ram:TaxBasisTotalAmount") == sign * totals.net_total
    assert amount(f"{SUMS}/ram:TaxTotalAmount") == sign * totals.vat_total
    assert amount(f"{SUMS}/ram:GrandTotalAmount") == sign * totals.gross_total
    assert amount(f"{SUMS}/ram:DuePayableAmount") == sign * totals.gross_total
    root = etree.fromstring(xml)
    groups = [
        (tax.findtext("ram:CategoryCode", namespaces=NS), D(tax.findtext("ram:RateApplicablePercent", namespaces=NS)),
         D(tax.findtext("ram:BasisAmount", namespaces=NS)), D(tax.findtext("ram:CalculatedAmount", namespaces=NS)))
        for tax in root.xpath(f"{SETTLEMENT}/ram:ApplicableTradeTax", namespaces=NS)
    ]
    assert groups == [(v.vat_category, v.vat_rate, sign * v.taxable_amount, sign * v.tax_amount) for v in totals.vat_breakdown]
    line_amounts = [D(t) for t in xpath_text(xml, "//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount")]
    assert line_amounts == [sign * line.net_amount for line in computed.lines]
    assert xpath_text(xml, "//ram:AssociatedDocumentLineDocument/ram:LineID") == [str(line.line_no) for line in computed.lines]


def test_negative_half_cent_vat_rounds_as_the_rules_expect() -> None:
    # A discount larger than the fees: 19 % of -0.50 is -0.095, rounded half away from zero to
    # -0.10 by compute_invoice; the EN 16931 rules (BR-CO-17, BR-S-09) accept that rounding.
    scenario = Scenario([fee("Mobil S Grundgebühr", "1.00"),
                         ChargeLine(kind="discount", description="Kulanzgutschrift", unit="C62", net_amount=D("-1.50"))],
                        "en16931", {"buyer": CONSUMER, "payment_means": TRANSFER})
    xml = scenario.xml()
    assert xpath_text(xml, f"{SUMS}/ram:TaxTotalAmount") == ["-0.10"]
    assert all_errors(xml, "en16931") == {"xsd": [], "cen": [], "facturx": []}


def test_mixed_rates_give_one_breakdown_per_rate() -> None:
    xml = SCENARIOS["mixed-19-7"]().xml()
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:RateApplicablePercent") == ["19", "7"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:BasisAmount") == ["10.62", "33.66"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CalculatedAmount") == ["2.02", "2.36"]


def test_reverse_charge_names_the_exemption_and_both_vat_ids() -> None:
    xml = SCENARIOS["reverse-charge"]().xml()
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CategoryCode") == ["AE"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReasonCode") == ["VATEX-EU-AE"]
    assert "reverse charge" in xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReason")[0].lower()
    assert xpath_text(xml, f"{SUMS}/ram:TaxTotalAmount") == ["0.00"]
    assert xpath_text(xml, "//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID") == ["ATU12345678"]
    assert xpath_text(xml, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']") == ["DE123456789"]


def test_zero_rated_line_has_no_exemption_reason() -> None:
    xml = SCENARIOS["zero-rated"]().xml()
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CategoryCode") == ["S", "Z"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:ExemptionReason") == []
    assert xpath_text(xml, "//ram:ApplicableTradeSettlementFinancialCard/ram:ID") == ["4242"]


def test_credit_note_references_the_invoice_it_corrects() -> None:
    xml = SCENARIOS["credit-note"]().xml()
    assert xpath_text(xml, "//rsm:ExchangedDocument/ram:TypeCode") == ["381"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:InvoiceReferencedDocument/ram:IssuerAssignedID") == ["INV-2026-000101"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:InvoiceReferencedDocument/ram:FormattedIssueDateTime/qdt:DateTimeString") == ["20260201"]
    # compute_invoice gave -11.07 net, -2.10 VAT, -13.17 gross; the 381 states the credit positively.
    assert SCENARIOS["credit-note"]().computed().totals.gross_total == D("-13.17")
    assert xpath_text(xml, f"{SUMS}/ram:GrandTotalAmount") == ["13.17"]
    assert xpath_text(xml, f"{SUMS}/ram:TaxTotalAmount") == ["2.10"]
    assert xpath_text(xml, "//ram:BilledQuantity") == ["1", "12"]
    reverse = SCENARIOS["reverse-charge-credit-note"]().xml()
    assert xpath_text(reverse, f"{SUMS}/ram:TaxTotalAmount") == ["0.00"]  # never "-0.00"
    assert xpath_text(reverse, f"{SETTLEMENT}/ram:ApplicableTradeTax/ram:CalculatedAmount") == ["0.00"]


def test_xrechnung_carries_leitweg_id_and_its_guideline() -> None:
    xml = SCENARIOS["xrechnung"]().xml()
    assert xpath_text(xml, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID") == [GUIDELINE_IDS["xrechnung"]]
    assert GUIDELINE_IDS["xrechnung"] == "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
    assert xpath_text(xml, "//ram:BuyerReference") == [LEITWEG_ID]
    assert xpath_text(SCENARIOS["standard-19"]().xml(), "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID") == [
        "urn:cen.eu:en16931:2017"]


def test_xrechnung_refuses_a_document_without_its_required_data() -> None:
    scenario = SCENARIOS["standard-19"]()  # a consumer invoice: no Leitweg-ID
    with pytest.raises(ValueError, match="BT-10"):
        build_cii_xml(scenario.document(), profile="xrechnung")
    unknown_profile = "zugferd-basic"
    with pytest.raises(ValueError, match="unknown profile"):
        build_cii_xml(scenario.document(), profile=unknown_profile)  # type: ignore[arg-type]


def test_periods_end_inclusively_in_the_xml() -> None:
    xml = SCENARIOS["standard-19"]().xml()
    assert xpath_text(xml, f"{SETTLEMENT}/ram:BillingSpecifiedPeriod/ram:EndDateTime/udt:DateTimeString") == ["20260228"]
    assert xpath_text(xml, f"{SETTLEMENT}/ram:BillingSpecifiedPeriod/ram:StartDateTime/udt:DateTimeString") == ["20260201"]
    first_line_end = xpath_text(xml, "//ram:SpecifiedLineTradeSettlement/ram:BillingSpecifiedPeriod/ram:EndDateTime/udt:DateTimeString")
    assert first_line_end[0] == "20260228"


def test_line_quantity_times_price_gives_the_line_amount() -> None:
    lines = SCENARIOS["standard-19"]().document().lines
    by_name = {line.name: line for line in lines}
    assert (by_name["Mobil M Grundgebühr"].quantity, by_name["Mobil M Grundgebühr"].net_unit_price) == (D(1), D("19.99"))
    prorated = by_name["Mobil M Grundgebühr, anteilig 0.4839"]
    assert (prorated.quantity, prorated.net_unit_price, prorated.net_amount) == (D(1), D("9.67"), D("9.67"))
    voice = by_name["Gespräche außerhalb des Inklusivvolumens (42 Verbindungen)"]
    assert (voice.quantity, voice.net_unit_price, voice.price_base_quantity) == (D("120.5"), D("5.90"), D("120.5"))
    discount = by_name["Treuerabatt"]
    assert (discount.quantity, discount.net_unit_price, discount.net_amount) == (D(-1), D("2.50"), D("-2.50"))
    for line in lines:
        assert line.quantity * line.net_unit_price / (line.price_base_quantity or 1) == line.net_amount


# --------------------------------------------------------------------------- the model guards the document


def test_model_is_frozen_and_refuses_unknown_fields() -> None:
    doc = SCENARIOS["standard-19"]().document()
    with pytest.raises(ValidationError):
        doc.number = "INV-2026-999999"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EInvoiceDocument.model_validate({**doc.model_dump(), "internal_note": "x"})


def test_model_refuses_totals_that_do_not_add_up() -> None:
    data = SCENARIOS["mixed-19-7"]().document().model_dump()
    with pytest.raises(ValidationError, match="BR-CO-15"):
        EInvoiceDocument.model_validate({**data, "gross_total": data["gross_total"] + D("0.01"),
                                         "due_payable": data["due_payable"] + D("0.01")})
    with pytest.raises(ValidationError, match="BR-CO-10"):
        EInvoiceDocument.model_validate({**data, "net_total": data["net_total"] - D("0.01")})
    with pytest.raises(ValidationError, match="float"):
        EInvoiceDocument.model_validate({**data, "net_total": 44.28})


def test_model_refuses_incomplete_tax_information() -> None:
    exempt = compute_invoice([fee("Steuerfreie Leistung", "10.00", rate="0", category="E")])
    base = {"number": "INV-1", "issue_date": date(2026, 3, 1), "period_start": date(2026, 2, 1),
            "period_end_exclusive": date(2026, 3, 1), "seller": SELLER, "buyer": CONSUMER, "payment_means": TRANSFER,
            "due_date": date(2026, 3, 15)}
    with pytest.raises(ValidationError, match="exemption reason"):
        einvoice_from_computed(exempt, **base)
    reason = VatExemption(text="Steuerfrei nach § 4 Nr. 8 UStG", code="VATEX-EU-132-1H")
    doc = einvoice_from_computed(exempt, **base, exemptions={"E": reason})
    assert all_errors(build_cii_xml(doc, profile="en16931"), "en16931") == {"xsd": [], "cen": [], "facturx": []}
    reverse_charge = compute_invoice([fee("Business Mobil", "49.00", rate="0", category="AE")])
    with pytest.raises(ValidationError, match="BR-AE-02"):
        einvoice_from_computed(reverse_charge, **base)  # a consumer has no VAT ID
    with pytest.raises(ValidationError, match="BG-3"):
        einvoice_from_computed(compute_invoice([fee("x", "1.00")]), **base, type_code="381")


def test_vendored_rules_are_the_files_the_readme_documents() -> None:
    readme = (VALIDATION_DIR / "README.md").read_text(encoding="utf-8")
    for name in ("EN16931-CII-validation.xslt", "XRechnung-CII-validation.xsl"):
        digest = hashlib.sha256((VALIDATION_DIR / name).read_bytes()).hexdigest()
        assert f"`{digest}`" in readme, name


def test_o2c_units_are_un_ece_rec20_codes() -> None:
    # The code list BR-CL-23 checks, read from the official rules themselves.
    rules = (VALIDATION_DIR / "EN16931-CII-validation.xslt").read_text(encoding="utf-8")
    assert_at = rules.index("[BR-CL-23]")
    test = rules[rules.rindex("<xsl:when test=", 0, assert_at):assert_at]
    rec20 = set(re.findall(r"[A-Z0-9]{1,3}", test[test.index("contains('"):]))
    o2c_units = {unit for _label, unit in USAGE_LABELS.values()} | {"MON", "EA", "C62"}
    assert {UNIT_CODE_ALIASES.get(unit, unit) for unit in o2c_units} <= rec20
    assert "MB" not in rec20  # why the alias exists: o2c's data unit is not a Rec 20 code


def test_card_number_is_never_more_than_the_last_four_digits() -> None:
    with pytest.raises(ValidationError):
        CardPayment(pan_last4="4242424242424242")
    with pytest.raises(ValidationError, match="IBAN"):
        SepaCreditTransfer(iban="DE89370400440532013001")  # wrong check digits


# --------------------------------------------------------------------------- no call detail


CDR_FIELD_NAMES = {"called_number", "calling_number", "dialled_number", "destination_number", "msisdn", "a_number",
                   "b_number", "cdr", "cdrs", "records", "usage_ids", "usage_records", "events"}


def test_model_has_no_field_for_call_detail() -> None:
    for model in (EInvoiceDocument, EInvoiceLine, Buyer):
        assert not set(model.model_fields) & CDR_FIELD_NAMES, model
    line = SCENARIOS["standard-19"]().document().lines[0].model_dump()
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EInvoiceLine.model_validate({**line, "called_number": "+493012345678"})


def test_no_dialled_number_reaches_the_xml() -> None:
    # The usage line of an invoice whose records called these numbers, built as o2c builds it:
    # one line per product and usage type, counted records, no per-record data.
    dialled = ["+493087654021", "004989765432109", "01701928374", "+4369955501234"]
    scenario = Scenario(
        [fee("Mobil S Grundgebühr", "9.99"),
         usage(f"Mobil S Voice calls beyond allowance ({len(dialled)} records)", "17", "1.5300")],
        "en16931", {"buyer": CONSUMER, "payment_means": DIRECT_DEBIT})
    xml = scenario.xml().decode("utf-8")
    for number in dialled:
        assert number not in xml
        assert number[-8:] not in xml
    assert not re.search(r"\+\d{6,}", xml)
    assert all_errors(xml.encode(), "en16931") == {"xsd": [], "cen": [], "facturx": []}
