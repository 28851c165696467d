"""Render an invoice as a PDF (A4, German/English labels) from an already-computed invoice.

The renderer never calculates money: every amount arrives finished from billing and is only
formatted here. It does check that the totals it is asked to print agree with each other,
because a legally binding document with inconsistent totals is worse than no document.
"""
from __future__ import annotations

import copy
import unicodedata
from functools import cache
from pathlib import Path
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from fpdf import FPDF
from fpdf.enums import Align
from fpdf.fonts import FontFace, SubsetMap, TTFFont
from fpdf.output import OutputProducer
from pydantic import BaseModel, BeforeValidator, field_validator, model_validator

from adapters.documents import pdf_fonts
from adapters.documents.pdf_table import TableLayout, draw_table

__all__ = [
    "InvoicePdfData",
    "PdfLine",
    "PdfParty",
    "PdfReference",
    "PdfUsageItem",
    "PdfVat",
    "format_eur",
    "format_quantity",
    "format_rate",
    "lay_out_invoice",
    "render_invoice_pdf",
    "write_pdf",
]


# --------------------------------------------------------------------------- input models


def _reject_float(value: Any) -> Any:
    # A float has already lost the cents by the time it reaches us; refuse it instead of
    # printing a silently rounded amount on a legal document.
    if isinstance(value, float):
        raise ValueError("money and quantities must be Decimal, int or str, never float")
    return value


Dec = Annotated[Decimal, BeforeValidator(_reject_float)]


class PdfParty(BaseModel):
    name: str
    address_lines: list[str]
    vat_id: str | None = None
    tax_number: str | None = None


class PdfLine(BaseModel):
    line_no: int
    description: str
    quantity: Dec
    unit: str
    unit_price: Dec | None  # None for lines without a meaningful unit price (e.g. rated usage)
    net_amount: Dec
    vat_rate: Dec  # a percentage as in EN 16931 (19 means 19 %)
    period: str | None = None

    @field_validator("vat_rate")
    @classmethod
    def _rate_is_percent(cls, v: Decimal) -> Decimal:
        return _check_percent(v)


class PdfVat(BaseModel):
    vat_category: str  # EN 16931 code: S, Z, E, AE, K, G, O
    vat_rate: Dec  # percentage
    taxable_amount: Dec
    tax_amount: Dec

    @field_validator("vat_rate")
    @classmethod
    def _rate_is_percent(cls, v: Decimal) -> Decimal:
        return _check_percent(v)


class PdfReference(BaseModel):
    """The invoice a credit note corrects, as §14 UStG needs it named: number and issue date."""

    invoice_number: str
    issue_date: date


class PdfUsageItem(BaseModel):
    """One row of the itemised bill (Einzelverbindungsnachweis, EVN): already formatted and, where the
    customer asked for it, with the called number shortened (last 3 digits as xxx)."""

    time: str  # local date and time, e.g. "03.11.2026 14:05:12"
    kind: str  # Telefonie / SMS / Daten
    called_number: str | None  # None for data
    amount_text: str  # duration (m:ss), messages or volume
    net_amount: Dec


class InvoicePdfData(BaseModel):
    """An invoice, or with ``document_kind="credit_note"`` a credit note (Rechnungskorrektur /
    Stornorechnung): negative amounts, no due date, and the invoice it corrects in ``reference``."""

    invoice_number: str
    issue_date: date
    due_date: date | None  # None: nothing falls due (a credit note)
    service_period: str  # e.g. "01.11.2026 – 30.11.2026"
    seller: PdfParty
    buyer: PdfParty
    customer_number: str
    billing_account_id: str
    currency: str = "EUR"
    lines: list[PdfLine]
    vat_breakdown: list[PdfVat]
    net_total: Dec
    vat_total: Dec
    gross_total: Dec
    payment_note: str | None = None
    document_title: str = "Rechnung / Invoice"
    document_kind: Literal["invoice", "credit_note"] = "invoice"
    reference: PdfReference | None = None  # the corrected invoice; required for a credit note
    reason: str | None = None  # why a credit note was issued
    vat_notes: list[str] = []  # exemption notes, e.g. reverse charge (§14a UStG)
    itemised: list[PdfUsageItem] | None = None  # the EVN appendix, only when the customer opted in

    @model_validator(mode="after")
    def _totals_agree(self) -> InvoicePdfData:
        # The EN 16931 sum rules (BR-CO-10/-14/-15) for an invoice without document-level
        # allowances or charges, which this document cannot show anyway.
        line_sum = sum((ln.net_amount for ln in self.lines), Decimal(0))
        vat_sum = sum((v.tax_amount for v in self.vat_breakdown), Decimal(0))
        if line_sum != self.net_total:
            raise ValueError(f"net_total {self.net_total} != sum of line net amounts {line_sum}")
        if vat_sum != self.vat_total:
            raise ValueError(f"vat_total {self.vat_total} != sum of VAT breakdown {vat_sum}")
        if self.net_total + self.vat_total != self.gross_total:
            raise ValueError(
                f"gross_total {self.gross_total} != net_total + vat_total "
                f"{self.net_total + self.vat_total}"
            )
        if self.document_kind == "credit_note" and self.reference is None:
            raise ValueError("a credit note must name the invoice it corrects (reference)")
        if self.document_kind == "invoice" and self.due_date is None:
            raise ValueError("an invoice needs a due date")
        return self


def _check_percent(v: Decimal) -> Decimal:
    # 0.19 instead of 19 is the classic integration slip; no EU VAT rate lies strictly between
    # 0 % and 1 %, so such a value is a fraction passed by mistake, not a real rate.
    if v < 0 or v > 100 or (0 < v < 1):
        raise ValueError(f"vat_rate is a percentage (19 for 19 %), got {v}")
    return v


# --------------------------------------------------------------------------- formatting

_CURRENCY_SIGNS = {"EUR": "€"}


def _german_number(value: Decimal, decimals: int) -> str:
    q = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    if q == 0:
        q = abs(q)  # never print "-0,00"
    english = f"{q:,.{decimals}f}"  # "1,234.56"
    return english.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def format_eur(value: Decimal, currency: str = "EUR", *, max_decimals: int = 2) -> str:
    """German money format: "1.234,56 €". Shows more than two decimals only if
    ``max_decimals`` allows it and the value really has them (per-minute unit prices)."""
    exponent = value.normalize().as_tuple().exponent
    significant = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    decimals = min(max(2, significant), max_decimals)
    return f"{_german_number(value, decimals)} {_CURRENCY_SIGNS.get(currency, currency)}"


def format_quantity(value: Decimal) -> str:
    """Quantities without padding zeros: 1, 2,5, 1.500."""
    exponent = value.normalize().as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return _german_number(value, decimals)


def format_rate(value: Decimal) -> str:
    return f"{format_quantity(value)} %"


def format_date(value: date) -> str:
    return value.strftime("%d.%m.%Y")


_VAT_CATEGORY_LABELS = {
    "S": "Normal-/ermäßigter Satz",
    "Z": "Nullsatz",
    "E": "Steuerbefreit",
    "AE": "Reverse Charge",
    "K": "Innergem. Lieferung",
    "G": "Ausfuhr",
    "O": "Nicht steuerbar",
}


# --------------------------------------------------------------------------- text fallback

# Characters outside cp1252 (the WinAnsi encoding of the PDF core fonts) that have an
# obvious ASCII stand-in. Anything else is decomposed (č -> c) or becomes "?".
_FALLBACKS = {
    "\u2212": "-",  # minus sign
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2015": "-",
    "\u2009": " ",  # thin space
    "\u202f": " ",  # narrow no-break space (used in some locales for grouping)
    "\u2007": " ",
    "\u200b": "",  # zero-width space
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2248": "~",
    "\u2032": "'",
    "\u2033": '"',
    "\t": " ",
    # Letters with a stroke do not decompose under NFKD.
    "\u0141": "L",
    "\u0142": "l",
    "\u0110": "D",
    "\u0111": "d",
    "\u0131": "i",
}


def to_core_font_text(text: str) -> str:
    """Make text printable with a PDF core font (cp1252) without failing the whole render."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        try:
            ch.encode("cp1252")
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        if ch in _FALLBACKS:
            out.append(_FALLBACKS[ch])
            continue
        base = "".join(
            c
            for c in unicodedata.normalize("NFKD", ch)
            if not unicodedata.combining(c) and c.encode("cp1252", errors="ignore")
        )
        out.append(base or "?")
    return "".join(out)


# --------------------------------------------------------------------------- rendering

_MARGIN = 20.0  # mm, DIN 5008 left margin
_GREY = (110, 110, 110)
_RULE = (200, 200, 200)
_HEAD_FILL = (235, 238, 242)


# DejaVu Sans (fonts/, licence in fonts/LICENSE-DejaVu.txt), embedded as a subset: PDF/A-3 requires
# every font to be embedded, so the core font Helvetica cannot be used for a Factur-X invoice.
_FONT = "dejavu"
_FONT_DIR = Path(__file__).parent / "fonts"
_FONT_FILES = {"": _FONT_DIR / "DejaVuSans.ttf", "B": _FONT_DIR / "DejaVuSans-Bold.ttf"}


@cache
def _font_file(style: str) -> bytes:
    return _FONT_FILES[style].read_bytes()


@cache
def _font_template(style: str) -> TTFFont:
    """The font parsed once per process (cmap, widths, glyph ids: about a fifth of a render's time when
    parsed per document). Never written itself: each document gets a copy with its own fontTools font,
    because fpdf2 subsets that font in place when it writes the document."""
    scratch = FPDF()
    scratch.add_font(_FONT, style, str(_FONT_FILES[style]))
    (font,) = scratch.fonts.values()
    return font


def _document_font(pdf: FPDF, style: str) -> TTFFont:
    template = _font_template(style)
    font = copy.copy(template)  # shares the read-only metrics (cw, cmap, glyph_ids)
    font.i = len(pdf.fonts) + 1
    font.desc = copy.copy(template.desc)  # a PDF object: writing the document numbers it and attaches the font file
    font.ttfont = None  # chosen when the document is written (_OutputProducer): the fixed subset or a font to subset
    font.biggest_size_pt = 0
    font.missing_glyphs = []
    font._hbfont = None
    font.subset = SubsetMap(font)
    return font


pdf_fonts.install()


class _OutputProducer(OutputProducer):
    """Writes the document; first gives each font the program to embed, once every glyph is known (the
    footer and the page count are drawn by ``output()`` itself, just before this runs)."""

    def bufferize(self) -> bytearray:
        for style, font in self.fpdf.styled_fonts.items():
            pdf_fonts.use_fixed_subset(font, _font_file(style))
        return super().bufferize()


class _InvoicePdf(FPDF):
    def __init__(self, data: InvoicePdfData, *, compliance: str | None = None) -> None:
        super().__init__(orientation="P", unit="mm", format="A4", enforce_compliance=compliance)
        self._data = data
        self.styled_fonts: dict[str, TTFFont] = {}
        for style in _FONT_FILES:  # as add_font(_FONT, style, path) would, without parsing the font again
            font = _document_font(self, style)
            self.fonts[font.fontkey] = font
            self.styled_fonts[style] = font

    def normalize_text(self, text: str) -> str:
        # Every text path in fpdf2 goes through here. DejaVu Sans covers Latin, Greek and Cyrillic;
        # a character it has no glyph for (CJK, tabs) gets the core-font stand-in instead of a blank.
        cmap = getattr(self.current_font, "cmap", None) or {}
        text = "".join(ch if ord(ch) in cmap and ch not in "\t\u200b" else to_core_font_text(ch) for ch in text)
        return super().normalize_text(text)

    def footer(self) -> None:
        seller = self._data.seller
        parts = [seller.name, *seller.address_lines]
        tax_ids = []
        if seller.vat_id:
            tax_ids.append(f"USt-IdNr.: {seller.vat_id}")
        if seller.tax_number:
            tax_ids.append(f"Steuernummer: {seller.tax_number}")
        self.set_y(-17)
        self.set_draw_color(*_RULE)
        self.line(_MARGIN, self.get_y(), self.w - _MARGIN, self.get_y())
        self.set_font(_FONT, "", 7)
        self.set_text_color(*_GREY)
        self.cell(0, 4, " · ".join(parts), new_x="LMARGIN", new_y="NEXT")
        self.cell(self.epw * 0.65, 4, " · ".join(tax_ids))
        self.cell(0, 4, f"{self._data.invoice_number} · Seite {self.page_no()}/{{nb}}", align=Align.R)
        self.set_text_color(0, 0, 0)


def render_invoice_pdf(data: InvoicePdfData) -> bytes:
    """Render the invoice. The same ``data`` always gives byte-identical output."""
    return write_pdf(lay_out_invoice(data))


def lay_out_invoice(data: InvoicePdfData, *, compliance: str | None = None) -> FPDF:
    """The invoice drawn but not yet written, for a caller that adds to the document before ``write_pdf``
    (adapters.documents.facturx attaches the e-invoice XML). ``compliance``: fpdf2's enforce_compliance,
    e.g. "PDFA_3B"."""
    pdf = _InvoicePdf(data, compliance=compliance)
    # Creation date and file /ID are the only time-dependent bytes; pin them to the invoice.
    pdf.set_creation_date(datetime.combine(data.issue_date, time(0), tzinfo=timezone.utc))
    pdf.set_title(f"{data.document_title} {data.invoice_number}")
    pdf.set_author(data.seller.name)
    if data.reference is not None:
        pdf.set_subject(f"Credit note {data.invoice_number} for invoice {data.reference.invoice_number}, customer {data.customer_number}")
    else:
        pdf.set_subject(f"Invoice {data.invoice_number} for customer {data.customer_number}")
    pdf.set_creator("o2c")
    pdf.set_lang("de-DE")
    pdf.set_margins(_MARGIN, 15, _MARGIN)
    pdf.set_auto_page_break(auto=True, margin=25)
    pdf.add_page()

    _seller_block(pdf, data)
    _buyer_block(pdf, data)
    _info_block(pdf, data)
    _title(pdf, data)
    _reference(pdf, data)
    _lines_table(pdf, data)
    _vat_table(pdf, data)
    _totals(pdf, data)
    _vat_notes(pdf, data)
    _payment_note(pdf, data)
    _itemised(pdf, data)
    return pdf


def write_pdf(pdf: FPDF) -> bytes:
    """The bytes of a document from ``lay_out_invoice``."""
    return bytes(pdf.output(output_producer_class=_OutputProducer))


def _seller_block(pdf: FPDF, data: InvoicePdfData) -> None:
    pdf.set_xy(_MARGIN, 15)
    pdf.set_font(_FONT, "B", 14)
    pdf.cell(0, 7, data.seller.name, align=Align.R, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FONT, "", 9)
    pdf.set_text_color(*_GREY)
    for line in data.seller.address_lines:
        pdf.cell(0, 4.5, line, align=Align.R, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)


def _buyer_block(pdf: FPDF, data: InvoicePdfData) -> None:
    # DIN 5008 form B: the address field of a window envelope starts 45 mm from the top.
    pdf.set_xy(_MARGIN, 45)
    pdf.set_font(_FONT, "U", 7)
    pdf.set_text_color(*_GREY)
    sender = ", ".join([data.seller.name, *data.seller.address_lines])
    pdf.cell(85, 4, sender, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_y(pdf.get_y() + 2)
    pdf.set_font(_FONT, "", 10)
    for line in [data.buyer.name, *data.buyer.address_lines]:
        pdf.cell(85, 5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FONT, "", 8)
    if data.buyer.vat_id:
        pdf.cell(85, 4, f"USt-IdNr.: {data.buyer.vat_id}", new_x="LMARGIN", new_y="NEXT")


def _info_block(pdf: FPDF, data: InvoicePdfData) -> None:
    credit = data.document_kind == "credit_note"
    rows = [
        ("Gutschriftsnr. / Credit note no." if credit else "Rechnungsnr. / Invoice no.", data.invoice_number),
        ("Datum / Date" if credit else "Rechnungsdatum / Date", format_date(data.issue_date)),
    ]
    if data.reference is not None:
        rows.append(("Zu Rechnung / For invoice", data.reference.invoice_number))
    rows += [
        ("Leistungszeitraum / Period", data.service_period),
        ("Kundennummer / Customer no.", data.customer_number),
        ("Kundenkonto / Account", data.billing_account_id),
    ]
    if data.due_date is not None:
        rows.append(("Fällig am / Due date", format_date(data.due_date)))
    # 105 mm: the widest value (a service period "01.11.2026 – 30.11.2026") must end before the label column does.
    x, y = 105.0, 50.0
    for index, (label, value) in enumerate(rows):
        pdf.set_xy(x, y)
        pdf.set_font(_FONT, "", 8)
        pdf.set_text_color(*_GREY)
        pdf.cell(42, 5, label)
        pdf.set_text_color(0, 0, 0)
        pdf.set_font(_FONT, "B" if index == 0 else "", 9)
        pdf.cell(pdf.w - _MARGIN - x - 42, 5, value, align=Align.R)
        y += 5.5


def _title(pdf: FPDF, data: InvoicePdfData) -> None:
    pdf.set_xy(_MARGIN, max(pdf.get_y(), 95.0))
    pdf.set_font(_FONT, "B", 16)
    pdf.cell(0, 9, f"{data.document_title} {data.invoice_number}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _reference(pdf: FPDF, data: InvoicePdfData) -> None:
    """A credit note says which invoice it corrects, by number and date, and why."""
    if data.reference is None:
        return
    pdf.set_font(_FONT, "", 9.5)
    number, issued = data.reference.invoice_number, format_date(data.reference.issue_date)
    pdf.multi_cell(0, 5, f"Korrektur der Rechnung {number} vom {issued} /", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 5, f"Correction of invoice {number} dated {issued}", new_x="LMARGIN", new_y="NEXT")
    if data.reason:
        pdf.multi_cell(0, 5, f"Grund / Reason: {data.reason}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


_HEADINGS = FontFace(emphasis="B", size_pt=8, fill_color=_HEAD_FILL)
_LINES_TABLE = TableLayout(
    col_widths=(10, 61, 15, 16, 24, 13, 31),
    text_align=("RIGHT", "LEFT", "RIGHT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
    headings_style=_HEADINGS,
    line_height=4.5,
    padding=(1.2, 1.5),
    v_align="TOP",
)
_VAT_TABLE = TableLayout(
    col_widths=(60, 20, 45, 45),
    text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
    headings_style=_HEADINGS,
    line_height=4.5,
    padding=(1.2, 1.5),
)


def _lines_table(pdf: FPDF, data: InvoicePdfData) -> None:
    pdf.set_font(_FONT, "", 8.5)
    pdf.set_draw_color(*_RULE)
    rows = []
    for ln in sorted(data.lines, key=lambda ln: ln.line_no):
        description = ln.description if ln.period is None else f"{ln.description}\n{ln.period}"
        unit_price = "" if ln.unit_price is None else format_eur(ln.unit_price, data.currency, max_decimals=4)
        rows.append((str(ln.line_no), description, format_quantity(ln.quantity), ln.unit, unit_price,
                     format_rate(ln.vat_rate), format_eur(ln.net_amount, data.currency)))
    draw_table(pdf, _LINES_TABLE, ("Pos.", "Beschreibung / Description", "Menge", "Einheit", "Einzelpreis", "USt", "Netto"), rows)
    pdf.ln(4)


def _vat_table(pdf: FPDF, data: InvoicePdfData) -> None:
    pdf.set_font(_FONT, "", 8.5)
    rows = []
    for vat in sorted(data.vat_breakdown, key=lambda v: (v.vat_category, -v.vat_rate)):
        label = _VAT_CATEGORY_LABELS.get(vat.vat_category)
        rows.append((f"{vat.vat_category} – {label}" if label else vat.vat_category, format_rate(vat.vat_rate),
                     format_eur(vat.taxable_amount, data.currency), format_eur(vat.tax_amount, data.currency)))
    draw_table(pdf, _VAT_TABLE, ("USt-Kategorie / VAT category", "Satz", "Bemessungsgrundlage", "USt-Betrag"), rows)
    pdf.ln(4)


def _totals(pdf: FPDF, data: InvoicePdfData) -> None:
    rows = [
        ("Nettobetrag / Net total", data.net_total, ""),
        ("Umsatzsteuer / VAT", data.vat_total, ""),
        ("Gutschriftsbetrag / Total credited" if data.document_kind == "credit_note" else "Rechnungsbetrag / Total due", data.gross_total, "B"),
    ]
    label_w, value_w = 60.0, 35.0
    row_h = 6.0
    # Net, VAT and total belong together; never let a page break split them.
    if pdf.will_page_break(row_h * len(rows)):
        pdf.add_page()
    x = pdf.w - _MARGIN - label_w - value_w
    for label, amount, style in rows:
        if style:
            pdf.set_draw_color(0, 0, 0)
            pdf.line(x, pdf.get_y(), pdf.w - _MARGIN, pdf.get_y())
        pdf.set_x(x)
        pdf.set_font(_FONT, style, 10 if style else 9)
        pdf.cell(label_w, row_h, label)
        pdf.cell(
            value_w,
            row_h,
            format_eur(amount, data.currency),
            align=Align.R,
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(6)


def _payment_note(pdf: FPDF, data: InvoicePdfData) -> None:
    if not data.payment_note:
        return
    pdf.set_font(_FONT, "", 9)
    pdf.multi_cell(0, 4.8, data.payment_note, align=Align.L)


def _vat_notes(pdf: FPDF, data: InvoicePdfData) -> None:
    if not data.vat_notes:
        return
    pdf.set_font(_FONT, "B", 9)
    for note in data.vat_notes:
        pdf.multi_cell(0, 4.8, note, align=Align.L, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)


def _itemised(pdf: FPDF, data: InvoicePdfData) -> None:
    """Anlage: Einzelverbindungsnachweis, on its own page(s) after the invoice."""
    if data.itemised is None:
        return
    pdf.add_page()
    pdf.set_font(_FONT, "B", 13)
    pdf.cell(0, 8, f"Einzelverbindungsnachweis / Itemised bill – {data.invoice_number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FONT, "", 8)
    pdf.set_text_color(*_GREY)
    pdf.multi_cell(0, 4, f"Leistungszeitraum / Period {data.service_period}. Beträge netto / amounts net of VAT.",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(2)
    if not data.itemised:
        pdf.cell(0, 5, "Keine Verbindungen in diesem Zeitraum / No usage in this period.", new_x="LMARGIN", new_y="NEXT")
        return
    # Plain cells rather than fpdf2's table: an EVN can run to thousands of rows, and a row of cells
    # costs a tenth of a table row. The heading is repeated on every page.
    widths = (38.0, 22.0, 50.0, 30.0, 30.0)
    aligns = (Align.L, Align.L, Align.L, Align.R, Align.R)
    row_h = 4.4

    def heading() -> None:
        pdf.set_font(_FONT, "B", 8)
        pdf.set_fill_color(*_HEAD_FILL)
        for width, align, text in zip(widths, aligns, ("Zeit / Time", "Art / Type", "Rufnummer / Number", "Dauer / Menge", "Betrag / Amount")):
            pdf.cell(width, row_h + 1, text, align=align, fill=True)
        pdf.ln(row_h + 1)
        pdf.set_font(_FONT, "", 8)

    heading()
    for item in data.itemised:
        if pdf.will_page_break(row_h):
            pdf.add_page()
            heading()
        cells = (item.time, item.kind, item.called_number or "", item.amount_text, format_eur(item.net_amount, data.currency, max_decimals=4))
        for width, align, text in zip(widths, aligns, cells):
            pdf.cell(width, row_h, text, align=align)
        pdf.ln(row_h)
