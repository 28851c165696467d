"""draw_table draws what fpdf2's FPDF.table() draws for the invoice's tables: the same rules, fills and text at
the same positions, page breaks and repeated headings included (it only measures and places the text with
cheaper calls)."""
from __future__ import annotations

import re
from io import BytesIO

import pytest
from fpdf import FPDF
from fpdf.fonts import FontFace
from pypdf import PdfReader

from adapters.documents.invoice_pdf import _FONT_FILES, _LINES_TABLE, _VAT_TABLE
from adapters.documents.pdf_table import TableLayout, draw_table

HEADING = ("Pos.", "Beschreibung / Description", "Menge", "Einheit", "Einzelpreis", "USt", "Netto")


def document(y: float = 100) -> FPDF:
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    for style, path in _FONT_FILES.items():
        pdf.add_font("dejavu", style, str(path))
    pdf.set_margins(20, 15, 20)
    pdf.set_auto_page_break(auto=True, margin=25)
    pdf.add_page()
    pdf.set_font("dejavu", "", 8.5)
    pdf.set_draw_color(200, 200, 200)
    pdf.set_y(y)
    return pdf


def with_fpdf2_table(layout: TableLayout, heading: tuple[str, ...], rows: list[tuple[str, ...]], y: float = 100) -> bytes:
    pdf = document(y)
    with pdf.table(col_widths=layout.col_widths, text_align=layout.text_align, headings_style=layout.headings_style,
                   borders_layout=layout.borders_layout, line_height=layout.line_height, padding=layout.padding,
                   v_align=layout.v_align, width=pdf.epw) as table:
        for row in (heading, *rows):
            table.row(row)
    pdf.cell(0, 5, f"after the table at {pdf.get_y():.2f}")  # where the table left the cursor
    return bytes(pdf.output())


def with_draw_table(layout: TableLayout, heading: tuple[str, ...], rows: list[tuple[str, ...]], y: float = 100) -> bytes:
    pdf = document(y)
    draw_table(pdf, layout, heading, rows)
    pdf.cell(0, 5, f"after the table at {pdf.get_y():.2f}")
    return bytes(pdf.output())


def drawing(pdf: bytes) -> list[bytes]:
    """Each page's content with the strings blanked: glyph codes are numbered in order of first use, which
    differs when fpdf2 measures cells that draw_table does not need to measure."""
    return [re.sub(rb"\((?:\\.|[^\\)])*\) Tj", b"() Tj", page.get_contents().get_data()) for page in PdfReader(BytesIO(pdf)).pages]


def placed_text(pdf: bytes) -> list[tuple[str, list[float]]]:
    out: list[tuple[str, list[float]]] = []
    for page in PdfReader(BytesIO(pdf)).pages:
        page.extract_text(visitor_text=lambda text, _cm, tm, *_: out.append((text, [round(v, 2) for v in tm])) if text.strip() else None)
    return out


def line(n: int, description: str, period: str | None = None) -> tuple[str, ...]:
    return (str(n), description if period is None else f"{description}\n{period}", "1", "Monat", "1,00 €", "19 %", "1,00 €")


CASES = {
    "one_line_cells": (_LINES_TABLE, HEADING, [line(1, "Mobilfunk Tarif XL"), line(2, "Fachzeitschrift Digital-Abo")]),
    "period_under_the_description": (_LINES_TABLE, HEADING, [line(1, "Mobilfunk Tarif XL", "01.11.2026 – 30.11.2026")]),
    "wrapping_description": (_LINES_TABLE, HEADING, [line(1, "Gespräche außerhalb des Inklusivvolumens (42 Verbindungen) ins EU-Ausland",
                                                          "01.11.2026 – 30.11.2026")]),
    "page_breaks_repeat_the_heading": (_LINES_TABLE, HEADING, [
        line(n, f"Zusatzoption {n} mit einer Beschreibung, die umbrechen muss, weil sie lang ist", "01.11.2026 – 30.11.2026" if n % 3 else None)
        for n in range(1, 61)]),
    "not_plain_text_left_to_multi_cell": (_LINES_TABLE, HEADING, [
        line(1, "Donaudampfschifffahrtsgesellschaftskapitänsmützenzubehör"),  # wider than the column: broken mid-word
        line(2, "Soft\u00adhyphen\u00adated Zusatz\u00adoption mit langem Namen und noch mehr Text"),
        line(3, "Zwei  Leerzeichen und ein Zeilenende \n"), line(4, "Digital-Abo Fachzeitschrift Wirtschaft-Recht-Steuern 2026")]),
    "empty_cells": (_LINES_TABLE, HEADING, [("1", "Rabatt", "", "", "", "19 %", "-2,50 €")]),
    "vat_table_middle_aligned": (_VAT_TABLE, ("USt-Kategorie / VAT category", "Satz", "Bemessungsgrundlage", "USt-Betrag"), [
        ("S – Normal-/ermäßigter Satz", "19 %", "1.205,89 €", "229,12 €"), ("AE – Reverse Charge", "0 %", "10,26 €", "0,00 €")]),
    "middle_aligned_with_a_wrapped_neighbour": (
        TableLayout(col_widths=(20, 80), text_align=("LEFT", "RIGHT"), headings_style=FontFace(emphasis="B", size_pt=8, fill_color=(235, 238, 242)),
                    line_height=4.5, padding=(1.2, 1.5)),
        ("A", "B"), [("kurz", "eine sehr lange Zelle, die auf jeden Fall umbrechen muss, weil sie viel breiter ist als ihre Spalte")]),
}


@pytest.mark.parametrize("case", CASES)
def test_draws_what_fpdf2_table_draws(case: str) -> None:
    layout, heading, rows = CASES[case]
    expected, actual = with_fpdf2_table(layout, heading, rows), with_draw_table(layout, heading, rows)
    assert drawing(actual) == drawing(expected)
    assert placed_text(actual) == placed_text(expected)
    assert len(placed_text(actual)) > len(rows)


def test_the_long_table_really_breaks_pages_and_repeats_its_heading() -> None:
    layout, heading, rows = CASES["page_breaks_repeat_the_heading"]
    text = [t.strip() for t, _ in placed_text(with_draw_table(layout, heading, rows))]
    pages = len(PdfReader(BytesIO(with_draw_table(layout, heading, rows))).pages)
    assert pages > 2
    assert text.count("Beschreibung / Description") == pages


@pytest.mark.parametrize("y", [262.0, 266.0, 270.0])
def test_near_the_bottom_of_the_page_the_heading_goes_over_with_its_first_row(y: float) -> None:
    layout, heading, rows = CASES["period_under_the_description"]
    expected, actual = with_fpdf2_table(layout, heading, rows, y), with_draw_table(layout, heading, rows, y)
    assert len(PdfReader(BytesIO(actual)).pages) == 2
    assert drawing(actual) == drawing(expected)
    assert placed_text(actual) == placed_text(expected)


def test_a_row_taller_than_a_page_is_refused_like_fpdf2_does_not_spilled_over_pages() -> None:
    tall = line(1, " ".join(["Leistungsbeschreibung"] * 900))
    with pytest.raises(ValueError, match="too high"):
        with_fpdf2_table(_LINES_TABLE, HEADING, [tall])
    with pytest.raises(ValueError, match="too high"):
        with_draw_table(_LINES_TABLE, HEADING, [tall])
