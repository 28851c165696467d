"""The invoice PDF embeds DejaVu Sans subset once per process to a fixed repertoire, unless a document uses a
glyph outside it: then that document gets its own subset. Either way every printed character must have its
real glyph in the embedded font program (a missing glyph would print as a blank box or nothing at all)."""
from __future__ import annotations

import re
from datetime import date
from decimal import Decimal as D
from io import BytesIO

import pytest
from fontTools import ttLib
from pypdf import PdfReader

from adapters.documents import PdfParty, render_invoice_pdf
from adapters.documents.invoice_pdf import _FONT_FILES, PdfReference, PdfUsageItem, _font_file, _font_template
from adapters.documents.pdf_fonts import FIXED_CHARACTERS, fixed_subset
from tests.documents.test_invoice_pdf import make_invoice, pdf_text


def embedded_fonts(pdf: bytes) -> list[dict]:
    """Per font of the document: its font program, and the code -> (unicode text, glyph id) it prints with."""
    reader = PdfReader(BytesIO(pdf))
    fonts = {}
    for page in reader.pages:
        for ref in page["/Resources"]["/Font"].values():
            fonts[ref.idnum] = ref.get_object()
    result = []
    for font in fonts.values():
        descendant = font["/DescendantFonts"][0].get_object()
        program = descendant["/FontDescriptor"].get_object()["/FontFile2"].get_object().get_data()
        cid_to_gid = descendant["/CIDToGIDMap"].get_object().get_data()
        to_unicode = font["/ToUnicode"].get_object().get_data().decode("latin-1")
        codes = {}
        for code, hexa in re.findall(r"<([0-9A-F]{4})> <([0-9A-F]+)>", to_unicode):
            cid = int(code, 16)
            codes[cid] = (bytes.fromhex(hexa).decode("utf-16-be"), int.from_bytes(cid_to_gid[2 * cid:2 * cid + 2], "big"))
        result.append({"program": program, "codes": codes, "bold": "Bold" in str(font["/BaseFont"])})
    return result


def assert_every_character_has_its_glyph(pdf: bytes) -> None:
    for font in embedded_fonts(pdf):
        program = ttLib.TTFont(BytesIO(font["program"]))
        full = _font_template("B" if font["bold"] else "").ttfont
        order, glyf, hmtx = program.getGlyphOrder(), program["glyf"], program["hmtx"]
        assert len(font["codes"]) > 10
        for text, gid in font["codes"].values():
            if text == "\x00":
                continue  # fpdf2 maps code 0 to .notdef, glyph 0
            assert 0 < gid < len(order), text
            full_name = full.getBestCmap()[ord(text)]
            # The glyph the code points at is the character's glyph: same advance width and outline size.
            assert hmtx[order[gid]][0] == full["hmtx"][full_name][0], text
            if not text.isspace():
                glyph = glyf[order[gid]]
                assert glyph.numberOfContours != 0, f"{text!r} has no outline in the embedded font"


def uses_fixed_subset(pdf: bytes) -> list[bool]:
    fixed = {fixed_subset(_font_file(style)).program for style in _FONT_FILES}
    return [font["program"] in fixed for font in embedded_fonts(pdf)]


def test_an_ordinary_invoice_embeds_the_fixed_subset_with_every_glyph() -> None:
    pdf = render_invoice_pdf(make_invoice())
    assert uses_fixed_subset(pdf) == [True, True]
    assert_every_character_has_its_glyph(pdf)
    # The font stream compressed once per process is a valid stream of the whole program (/Length1: its length).
    for ref in PdfReader(BytesIO(pdf)).pages[0]["/Resources"]["/Font"].values():
        descriptor = ref.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
        stream = descriptor["/FontFile2"].get_object()
        assert stream["/Filter"] == "/FlateDecode" and stream["/Length1"] == len(stream.get_data())


@pytest.mark.parametrize("kind", ["credit_note", "reverse_charge", "itemised", "itemised_empty"])
def test_every_label_of_the_layout_lies_in_the_fixed_repertoire(kind: str) -> None:
    """The layout's own texts never force the slow path: only customer data can."""
    overrides: dict[str, object] = {
        "credit_note": dict(document_kind="credit_note", due_date=None, document_title="Rechnungskorrektur / Credit note",
                            reference=PdfReference(invoice_number="INV-2026-000001", issue_date=date(2026, 11, 1)),
                            reason="Kulanz – doppelt berechnet"),
        "reverse_charge": dict(vat_notes=["Steuerschuldnerschaft des Leistungsempfängers (§13b UStG, Art. 196 MwStSystRL)"]),
        "itemised": dict(itemised=[PdfUsageItem(time="03.11.2026 14:05:12", kind="Telefonie", called_number="0301234xxx",
                                                amount_text="2:05", net_amount=D("0.1234"))]),
        "itemised_empty": dict(itemised=[]),
    }[kind]
    pdf = render_invoice_pdf(make_invoice(**overrides))
    assert uses_fixed_subset(pdf) == [True, True]
    assert_every_character_has_its_glyph(pdf)


def test_a_glyph_outside_the_fixed_repertoire_gets_a_subset_of_its_own() -> None:
    buyer = PdfParty(name="Αθηνά Παπαδοπούλου", address_lines=["Odós 5 ≥ 2", "10115 Berlin"])
    pdf = render_invoice_pdf(make_invoice(buyer=buyer))
    assert "Αθηνά Παπαδοπούλου" in pdf_text(pdf)
    assert sorted(uses_fixed_subset(pdf)) == [False, True]  # the regular font left the fixed subset, bold kept it
    assert_every_character_has_its_glyph(pdf)


def test_polish_czech_and_turkish_names_stay_in_the_fixed_repertoire() -> None:
    buyer = PdfParty(name="Łukasz Dvořák-Şahin", address_lines=["ul. Długa 5", "İstanbul Cd. 3, Ğ"])
    pdf = render_invoice_pdf(make_invoice(buyer=buyer))
    assert "Łukasz Dvořák-Şahin" in pdf_text(pdf)
    assert uses_fixed_subset(pdf) == [True, True]
    assert_every_character_has_its_glyph(pdf)


def test_fixed_repertoire_covers_cp1252_and_exists_in_the_font() -> None:
    cp1252 = {ord(bytes([b]).decode("cp1252")) for b in range(0x20, 0x100) if b not in (0x7F, 0x81, 0x8D, 0x8F, 0x90, 0x9D)}
    assert cp1252 <= FIXED_CHARACTERS
    for style in _FONT_FILES:
        cmap = _font_template(style).cmap
        subset = fixed_subset(_font_file(style))
        missing = [chr(c) for c in FIXED_CHARACTERS if c not in cmap or cmap[c] not in subset.glyph_ids]
        assert not missing, missing


def test_a_document_rendered_after_a_fallback_is_byte_identical_to_one_rendered_before() -> None:
    before = render_invoice_pdf(make_invoice())
    render_invoice_pdf(make_invoice(buyer=PdfParty(name="東京 Αθήνα", address_lines=["x"])))
    assert render_invoice_pdf(make_invoice()) == before
