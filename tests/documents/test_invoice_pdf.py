from __future__ import annotations

import re
from io import BytesIO
from datetime import date
from decimal import Decimal as D

import pytest
from pydantic import ValidationError
from pypdf import PdfReader

from adapters.documents import InvoicePdfData, PdfLine, PdfParty, PdfVat, render_invoice_pdf
from adapters.documents.invoice_pdf import format_eur, format_quantity, to_core_font_text


def pdf_text(pdf: bytes) -> str:
    """All strings drawn in the PDF's pages, one text-showing operation per line.

    The invoice embeds a TrueType subset (DejaVu Sans, for PDF/A-3), so strings are glyph ids;
    pypdf decodes them through the font's ToUnicode map, and its visitor hands over each Tj/TJ
    on its own, which keeps table cells apart.
    """
    chunks: list[str] = []
    for page in PdfReader(BytesIO(pdf)).pages:
        page.extract_text(visitor_text=lambda text, *_: chunks.append(text) if text.strip() else None)
    return "\n".join(chunk.strip() for chunk in chunks)


def make_invoice(**overrides: object) -> InvoicePdfData:
    data = dict(
        invoice_number="INV-2026-000123",
        issue_date=date(2026, 12, 1),
        due_date=date(2026, 12, 15),
        service_period="01.11.2026 – 30.11.2026",
        seller=PdfParty(
            name="o2c Telekom GmbH",
            address_lines=["Musterstraße 1", "10115 Berlin", "Deutschland"],
            vat_id="DE123456789",
            tax_number="27/123/45678",
        ),
        buyer=PdfParty(name="Jürgen Müller", address_lines=["Hauptstraße 12a", "80331 München"]),
        customer_number="C-100042",
        billing_account_id="BA-7781",
        lines=[
            PdfLine(
                line_no=1,
                description="Mobilfunk Tarif XL (5G, 50 GB)",
                quantity=D("1"),
                unit="Monat",
                unit_price=D("1199.99"),
                net_amount=D("1199.99"),
                vat_rate=D("19"),
                period="01.11.2026 – 30.11.2026",
            ),
            PdfLine(
                line_no=2,
                description="Auslandsgespräche EU",
                quantity=D("120.5"),
                unit="Min",
                unit_price=D("0.049"),
                net_amount=D("5.90"),
                vat_rate=D("19"),
            ),
            PdfLine(
                line_no=3,
                description="Fachzeitschrift Digital-Abo",
                quantity=D("1"),
                unit="Stk",
                unit_price=D("28.67"),
                net_amount=D("28.67"),
                vat_rate=D("7"),
            ),
        ],
        vat_breakdown=[
            PdfVat(vat_category="S", vat_rate=D("19"), taxable_amount=D("1205.89"), tax_amount=D("229.12")),
            PdfVat(vat_category="S", vat_rate=D("7"), taxable_amount=D("28.67"), tax_amount=D("2.01")),
        ],
        net_total=D("1234.56"),
        vat_total=D("231.13"),
        gross_total=D("1465.69"),
        payment_note="Der Betrag wird am 15.12.2026 per SEPA-Lastschrift eingezogen.",
    )
    data.update(overrides)
    return InvoicePdfData(**data)


@pytest.fixture(scope="module")
def rendered() -> bytes:
    return render_invoice_pdf(make_invoice())


def test_output_is_a_complete_a4_pdf(rendered: bytes) -> None:
    assert rendered.startswith(b"%PDF-")
    assert rendered.rstrip().endswith(b"%%EOF")
    assert b"/MediaBox [0 0 595.28 841.89]" in rendered  # A4 in points
    assert len(re.findall(rb"/Type /Page\b", rendered)) == 1


def test_same_input_renders_byte_identical(rendered: bytes) -> None:
    assert render_invoice_pdf(make_invoice()) == rendered
    # The creation date comes from the invoice, not the clock.
    assert b"/CreationDate (D:20261201000000Z" in rendered


def test_different_invoice_renders_differently(rendered: bytes) -> None:
    assert render_invoice_pdf(make_invoice(invoice_number="INV-2026-000124")) != rendered


def test_header_fields_are_printed(rendered: bytes) -> None:
    text = pdf_text(rendered)
    for expected in [
        "o2c Telekom GmbH",
        "Musterstraße 1",
        "Jürgen Müller",
        "80331 München",
        "INV-2026-000123",
        "01.12.2026",  # issue date
        "15.12.2026",  # due date
        "01.11.2026 – 30.11.2026",  # en dash survives via cp1252
        "C-100042",
        "BA-7781",
        "USt-IdNr.: DE123456789 · Steuernummer: 27/123/45678",
        "Rechnung / Invoice INV-2026-000123",
    ]:
        assert expected in text, expected


def test_lines_are_printed_with_german_amounts(rendered: bytes) -> None:
    lines = pdf_text(rendered).splitlines()
    for expected in [
        "Mobilfunk Tarif XL (5G, 50 GB)",
        "Auslandsgespräche EU",
        "Fachzeitschrift Digital-Abo",
        "1.199,99 €",
        "120,5",  # quantity without padding zeros
        "0,049 €",  # per-minute price keeps its third decimal
        "5,90 €",
        "28,67 €",
    ]:
        assert expected in lines, expected


def test_vat_breakdown_and_totals_are_printed(rendered: bytes) -> None:
    lines = pdf_text(rendered).splitlines()
    for expected in ["19 %", "7 %", "1.205,89 €", "229,12 €", "2,01 €", "1.234,56 €", "231,13 €"]:
        assert expected in lines, expected
    # The amount due is printed right after its label.
    label = lines.index("Rechnungsbetrag / Total due")
    assert lines[label + 1] == "1.465,69 €"


def test_payment_note_is_printed(rendered: bytes) -> None:
    assert "SEPA-Lastschrift eingezogen." in pdf_text(rendered)


def test_characters_of_the_embedded_font_print_and_the_rest_fall_back() -> None:
    buyer = PdfParty(name="Łukasz Dvořák", address_lines=["ul. Długa 5 ≥ 2", "Αθήνα 東京"])
    text = pdf_text(render_invoice_pdf(make_invoice(buyer=buyer)))
    assert "Łukasz Dvořák" in text  # DejaVu Sans has every Latin Extended glyph
    assert "ul. Długa 5 ≥ 2" in text
    assert "Αθήνα ??" in text  # Greek prints, CJK has no glyph in DejaVu Sans


def test_fonts_are_embedded_for_pdfa(rendered: bytes) -> None:
    """PDF/A-3 (Factur-X) requires every font embedded: DejaVu Sans as a subset, no core font."""
    reader = PdfReader(BytesIO(rendered))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    assert fonts
    for ref in fonts.values():
        font = ref.get_object()
        descendant = font["/DescendantFonts"][0].get_object()
        assert "DejaVuSans" in str(font["/BaseFont"])
        assert "/FontFile2" in descendant["/FontDescriptor"].get_object()
    assert b"/Helvetica" not in rendered


def test_long_invoice_breaks_pages_and_numbers_them() -> None:
    lines = [
        PdfLine(
            line_no=i,
            description=f"Zusatzoption {i} mit einer Beschreibung, die umbrechen muss, weil sie lang ist",
            quantity=D("1"),
            unit="Monat",
            unit_price=D("1.00"),
            net_amount=D("1.00"),
            vat_rate=D("19"),
        )
        for i in range(1, 61)
    ]
    pdf = render_invoice_pdf(
        make_invoice(
            lines=lines,
            vat_breakdown=[
                PdfVat(vat_category="S", vat_rate=D("19"), taxable_amount=D("60.00"), tax_amount=D("11.40"))
            ],
            net_total=D("60.00"),
            vat_total=D("11.40"),
            gross_total=D("71.40"),
        )
    )
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    assert pages > 1
    text = pdf_text(pdf)
    # fpdf2 draws the page-count alias as its own string, hence the \s*.
    assert re.search(rf"INV-2026-000123 · Seite 1/\s*{pages}$", text, re.M)
    assert re.search(rf"INV-2026-000123 · Seite {pages}/\s*{pages}$", text, re.M)
    assert "Zusatzoption 60 mit einer" in text  # the last line made it too
    assert "71,40 €" in text


def test_inconsistent_totals_are_refused() -> None:
    with pytest.raises(ValidationError, match="gross_total"):
        make_invoice(gross_total=D("1465.70"))
    with pytest.raises(ValidationError, match="net_total"):
        make_invoice(net_total=D("1234.55"), gross_total=D("1465.68"))
    with pytest.raises(ValidationError, match="vat_total"):
        make_invoice(vat_total=D("231.14"), gross_total=D("1465.70"))


def test_float_money_is_refused() -> None:
    with pytest.raises(ValidationError, match="never float"):
        PdfVat(vat_category="S", vat_rate=D("19"), taxable_amount=100.10, tax_amount=D("19.02"))


def test_vat_rate_given_as_fraction_is_refused() -> None:
    with pytest.raises(ValidationError, match="percentage"):
        PdfVat(vat_category="S", vat_rate=D("0.19"), taxable_amount=D("100"), tax_amount=D("19"))
    # Zero-rated is a real rate.
    assert PdfVat(vat_category="Z", vat_rate=D("0"), taxable_amount=D("5"), tax_amount=D("0"))


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (D("1234.56"), {}, "1.234,56 €"),
        (D("1000000"), {}, "1.000.000,00 €"),
        (D("0.5"), {}, "0,50 €"),
        (D("-12.345"), {}, "-12,35 €"),  # half-up, away from zero
        (D("-0.001"), {}, "0,00 €"),  # no negative zero
        (D("0.0490"), {"max_decimals": 4}, "0,049 €"),
        (D("0.04999"), {"max_decimals": 4}, "0,0500 €"),
        (D("12.00"), {"max_decimals": 4}, "12,00 €"),
    ],
)
def test_format_eur(value: D, kwargs: dict[str, int], expected: str) -> None:
    assert format_eur(value, **kwargs) == expected


def test_format_eur_shows_code_for_other_currencies() -> None:
    assert format_eur(D("9.99"), "CHF") == "9,99 CHF"


@pytest.mark.parametrize(
    ("value", "expected"), [(D("1"), "1"), (D("120.50"), "120,5"), (D("1500"), "1.500"), (D("0.25"), "0,25")]
)
def test_format_quantity(value: D, expected: str) -> None:
    assert format_quantity(value) == expected


def test_to_core_font_text_keeps_cp1252_and_replaces_the_rest() -> None:
    assert to_core_font_text("„Grüße“ – 5 €") == "„Grüße“ – 5 €"
    assert to_core_font_text("a\u2212b\u202fc") == "a-b c"
    assert to_core_font_text("Ćmielów") == "Cmielów"
    assert to_core_font_text("☎") == "?"
