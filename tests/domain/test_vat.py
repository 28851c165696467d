from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.invoicing import ChargeLine, compute_invoice
from domain.vat import (
    REVERSE_CHARGE_REASON,
    REVERSE_CHARGE_REASON_CODE,
    Buyer,
    check_vat_id,
    exemption_for,
    line_vat,
    rate_class_for,
    vat_treatment,
)

# Well-formed VAT IDs with correct check digits (python-stdnum's documented examples and checks).
VALID = {
    "AT": "ATU57194903",
    "BE": "BE0697449992",
    "FR": "FR61954506077",
    "NL": "NL004495445B01",
    "IE": "IE6388047V",
    "ES": "ESB58378431",
    "PL": "PL8567346215",
    "GR": "EL094259216",
    "DE": "DE136695976",
}


@pytest.mark.parametrize(("country", "vat_id"), [(c, v) for c, v in VALID.items() if c != "DE"])
def test_eu_business_with_valid_vat_id_gets_reverse_charge(country, vat_id):
    treatment = vat_treatment(Buyer(country=country, is_business=True, vat_id=vat_id))
    assert treatment.kind == "reverse_charge"
    assert treatment.reason_code == "reverse_charge"
    assert treatment.buyer_vat_id == vat_id
    assert treatment.exemption_reason == "Steuerschuldnerschaft des Leistungsempfängers / Reverse charge"
    assert treatment.exemption_reason_code == "VATEX-EU-AE"
    vat = line_vat(treatment, "standard")
    assert (vat.category, vat.rate) == ("AE", Decimal("0"))
    assert (vat.exemption_reason, vat.exemption_reason_code) == (REVERSE_CHARGE_REASON, REVERSE_CHARGE_REASON_CODE)


def test_vat_id_is_normalised_before_checking():
    check = check_vat_id(" atu 571.949-03 ")
    assert check.valid and check.vat_id == "ATU57194903" and check.country == "AT"
    treatment = vat_treatment(Buyer(country="at", is_business=True, vat_id="atu 571 949 03"))
    assert treatment.kind == "reverse_charge" and treatment.buyer_vat_id == "ATU57194903"


def test_wrong_check_digit_means_domestic_vat_and_says_why():
    # ATU57194903 with the last digit changed.
    treatment = vat_treatment(Buyer(country="AT", is_business=True, vat_id="ATU57194904"))
    assert treatment.kind == "domestic"
    assert treatment.reason_code == "invalid_vat_id"
    assert "check digit" in treatment.reason
    assert treatment.vat_id_check is not None and not treatment.vat_id_check.valid
    assert treatment.exemption_reason is None
    vat = line_vat(treatment, "standard")
    assert (vat.category, vat.rate) == ("S", Decimal("19"))


@pytest.mark.parametrize(
    ("vat_id", "reason_part"),
    [
        ("GR094259216", "EL"),  # stdnum accepts GR, but Greek VAT IDs are EL
        ("XI980780684", "Northern Ireland"),  # valid for goods only
        ("EU372000041", "OSS"),  # non-Union OSS registration
        ("US123456789", "not an EU member state"),
        ("ATU5719490", "length"),
        ("", "empty"),
    ],
)
def test_numbers_stdnum_would_accept_or_that_are_malformed_are_refused(vat_id, reason_part):
    check = check_vat_id(vat_id)
    assert not check.valid
    assert reason_part in (check.reason or "")


def test_vat_id_from_another_country_than_the_buyer_is_no_reverse_charge():
    treatment = vat_treatment(Buyer(country="FR", is_business=True, vat_id=VALID["AT"]))
    assert treatment.kind == "domestic"
    assert treatment.reason_code == "vat_id_country_mismatch"


def test_german_business_is_domestic_even_with_a_valid_vat_id():
    treatment = vat_treatment(Buyer(country="DE", is_business=True, vat_id=VALID["DE"]))
    assert treatment.kind == "domestic" and treatment.reason_code == "buyer_in_seller_country"


def test_consumer_is_domestic_even_with_a_vat_id():
    treatment = vat_treatment(Buyer(country="AT", is_business=False, vat_id=VALID["AT"]))
    assert treatment.kind == "domestic" and treatment.reason_code == "consumer"
    # A consumer elsewhere in the EU may owe that country's VAT (OSS): flagged, not decided here.
    assert treatment.needs_review


def test_business_without_vat_id_is_domestic():
    treatment = vat_treatment(Buyer(country="NL", is_business=True))
    assert treatment.kind == "domestic" and treatment.reason_code == "no_vat_id"


def test_business_outside_the_eu_is_flagged_for_review():
    treatment = vat_treatment(Buyer(country="CH", is_business=True, vat_id="CHE-123.456.788"))
    assert treatment.kind == "domestic" and treatment.reason_code == "buyer_outside_eu" and treatment.needs_review


def test_domestic_rates():
    domestic = vat_treatment(Buyer(country="DE"))
    assert [(v.category, v.rate) for v in (line_vat(domestic, c) for c in ("standard", "reduced", "zero"))] == [
        ("S", Decimal("19")),
        ("S", Decimal("7")),
        ("Z", Decimal("0")),
    ]
    assert [rate_class_for(Decimal(r)) for r in ("19", "7", "0", "19.00")] == ["standard", "reduced", "zero", "standard"]
    with pytest.raises(ValueError):
        rate_class_for(Decimal("16"))
    assert exemption_for("AE") == (REVERSE_CHARGE_REASON, REVERSE_CHARGE_REASON_CODE)
    assert exemption_for("S") is None


def test_reverse_charge_invoice_has_no_vat():
    treatment = vat_treatment(Buyer(country="BE", is_business=True, vat_id="BE 0697.449.992"))
    vat = line_vat(treatment, "standard")
    lines = [
        ChargeLine(kind="recurring", description="fee", net_amount=Decimal("100.00"), vat_rate=vat.rate, vat_category=vat.category),
        ChargeLine(kind="usage", description="usage", net_amount=Decimal("3.456"), vat_rate=vat.rate, vat_category=vat.category),
    ]
    totals = compute_invoice(lines).totals
    # 100.00 + 3.46 (3.456 rounded) = 103.46 net, 0 % VAT.
    assert (totals.net_total, totals.vat_total, totals.gross_total) == (Decimal("103.46"), Decimal("0.00"), Decimal("103.46"))
    assert [(g.vat_category, g.vat_rate) for g in totals.vat_breakdown] == [("AE", Decimal("0"))]


@given(st.sampled_from(sorted(v for c, v in VALID.items() if c != "NL")), st.data())
def test_a_mistyped_digit_is_caught_offline(vat_id, data):
    # These schemes' check digits catch every single-digit substitution. (Not NL: its "B01" suffix
    # is a branch number outside the check, and the 2020 mod-97 scheme admits other numbers.)
    positions = [i for i, ch in enumerate(vat_id) if i >= 2 and ch.isdigit()]
    position = data.draw(st.sampled_from(positions))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != vat_id[position]]))
    typo = vat_id[:position] + digit + vat_id[position + 1 :]
    assert not check_vat_id(typo).valid
    country = next(c for c, v in VALID.items() if v == vat_id)
    treatment = vat_treatment(Buyer(country=country, is_business=True, vat_id=typo))
    assert treatment.kind == "domestic"
