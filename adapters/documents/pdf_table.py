"""The invoice's tables, drawn as fpdf2's ``FPDF.table()`` draws them, for a fraction of its CPU.

``FPDF.table()`` lays every cell out twice: once with ``multi_cell(dry_run=True)`` to learn the row heights,
once to draw it; each pass breaks the text into lines character by character, re-measuring the line at
every character. In an invoice that was the largest part of a render (~10 ms for a line table of six
rows). Here the lines of a cell come from whole-string widths (``get_string_width``): its line breaks, and
word wrapping at single spaces exactly where multi_cell wraps (before the word that would exceed the
cell); each line is drawn with ``cell()`` at the position multi_cell draws it at. A cell whose text is not
that plain (a word wider than the cell, soft hyphens, runs of spaces, a line within a hair of the width)
is measured and drawn by ``multi_cell`` with the arguments fpdf2's table uses. Borders and the heading
fill are drawn by fpdf2's own cell border style of ``borders_layout``. The result draws the same rules,
fills and text at the same positions as ``FPDF.table()`` (tests/documents/test_pdf_table.py compares
them); only the order in which glyphs are first used, and so their codes in the font subset, can differ.

Only what the invoice uses is supported: one heading row repeated on every page, no spans, no images,
no gutters, the table at the left margin.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, TableBordersLayout, VAlign
from fpdf.fonts import FontFace
from fpdf.line_break import BREAKING_SPACE_SYMBOLS_STR, SOFT_HYPHEN
from fpdf.util import Padding

__all__ = ["TableLayout", "draw_table"]


@dataclass(frozen=True)
class TableLayout:
    col_widths: tuple[float, ...]  # relative, like FPDF.table(col_widths=...)
    text_align: tuple[str, ...]
    headings_style: FontFace
    line_height: float
    padding: tuple[float, float]  # vertical, horizontal (mm)
    v_align: str = "MIDDLE"
    borders_layout: TableBordersLayout = TableBordersLayout.HORIZONTAL_LINES


def draw_table(pdf: FPDF, layout: TableLayout, heading: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Draw ``heading`` and ``rows`` at the current position, with the font set now for the body, as
    ``with pdf.table(**layout) as t: t.row(heading); [t.row(r) for r in rows]`` would."""
    all_rows = [tuple(heading), *(tuple(r) for r in rows)]
    body_style = pdf.font_face()
    heading_style = FontFace.combine(body_style, layout.headings_style)
    padding = Padding.new(layout.padding)
    aligns = [Align.coerce(a) for a in layout.text_align]
    v_align = VAlign.coerce(layout.v_align)
    width = pdf.epw
    total = sum(layout.col_widths)
    col_widths = [ratio / total * width for ratio in layout.col_widths]  # fpdf2's float arithmetic, for the same positions
    xs = [pdf.l_margin]
    for col_width in col_widths:
        xs.append(xs[-1] + col_width)

    # Every cell's own height (rendered_heights) and the row's (the tallest cell's).
    cell_heights: list[list[float]] = []
    plain_lines: list[list[list[str] | None]] = []  # per cell: its lines where _plain_lines knows them (drawn with cell())
    with pdf._disable_writing():  # noqa: SLF001 - as FPDF.table() measures: no font or colour change reaches the page
        for index, row in enumerate(all_rows):
            with pdf.use_font_face(heading_style if index == 0 else body_style):
                lines = [_plain_lines(pdf, text, w, padding) for text, w in zip(row, col_widths)]
                plain_lines.append(lines)
                cell_heights.append([_text_height(pdf, text, w, layout.line_height, padding, cell_lines)
                                     for text, w, cell_lines in zip(row, col_widths, lines)])
    row_heights = [max(heights) if heights and max(heights) else layout.line_height for heights in cell_heights]

    def draw_row(index: int, row: tuple[str, ...]) -> None:
        y = pdf.y
        style = heading_style if index == 0 else body_style
        for col, text in enumerate(row):
            pdf.set_x(xs[col])
            x1, y1 = pdf.x, pdf.y
            layout.borders_layout.cell_style_getter(
                row_idx=index, col_idx=col, col_pos=col, num_heading_rows=1, num_rows=len(all_rows),
                num_col_idx=len(row), num_col_pos=len(row),
            ).draw_cell_border(pdf, x1, y1, x1 + col_widths[col], y1 + row_heights[index], fill_color=style.fill_color)
            if text:
                dy = 0.0
                if v_align == VAlign.M:
                    dy = (row_heights[index] - cell_heights[index][col]) / 2
                elif v_align == VAlign.B:
                    dy = row_heights[index] - cell_heights[index][col]
                pdf.y += dy
                with pdf.use_font_face(style):
                    if plain_lines[index][col]:
                        _lines_cell(pdf, plain_lines[index][col], col_widths[col], layout.line_height, aligns[col], padding)
                    else:
                        pdf.multi_cell(w=col_widths[col], h=layout.line_height, text=text, max_line_height=layout.line_height,
                                       border=0, align=aligns[col], new_x="RIGHT", new_y="TOP", fill=False,
                                       output=MethodReturnValue.PAGE_BREAK | MethodReturnValue.HEIGHT, padding=padding)
                pdf.y -= dy
            pdf.set_y(y)
        pdf.ln(row_heights[index])

    # As fpdf2's table(): a row taller than a page's body cannot be drawn (its cells would spill over a page per
    # line, far from their amounts); fail loudly before anything is drawn rather than seal such a document.
    body = pdf.h - pdf.t_margin - pdf.b_margin
    for index, height in enumerate(row_heights):
        if height + (row_heights[0] if index else 0) > body:
            raise ValueError(f"table row {index} is too high ({height:.1f} mm) for a page ({body:.1f} mm): shorten its text")
    # As fpdf2: never leave the heading alone at the bottom of a page; repeat it on top of every new page.
    if len(all_rows) > 1:
        pdf._perform_page_break_if_need_be(row_heights[0] + row_heights[1])  # noqa: SLF001 - what FPDF.table() calls
    for index, row in enumerate(all_rows):
        if pdf._perform_page_break_if_need_be(row_heights[index]) and index >= 1:  # noqa: SLF001
            draw_row(0, all_rows[0])
        draw_row(index, row)
    pdf.x = pdf.l_margin


# Characters after which fpdf2 may also break a line, or which it treats specially: a text holding one is
# left to multi_cell. Plain spaces and line breaks are handled here.
_LEFT_TO_MULTI_CELL = frozenset((set(BREAKING_SPACE_SYMBOLS_STR) - {" "}) | {SOFT_HYPHEN, "\r", "\t", "\f"})
_SLACK = 0.01  # mm: a line within this of the cell's width is left to multi_cell's own arithmetic


def _plain_lines(pdf: FPDF, text: str, width: float, padding: Padding) -> list[str] | None:
    """The lines multi_cell breaks ``text`` into (at its line breaks, and word-wrapped at single spaces where
    a line would exceed the cell), or None when that is not plain: a word wider than the cell, a line within
    a hair of the width, runs of spaces, other breaking characters. None means: let multi_cell do it."""
    if not text or any(ch in _LEFT_TO_MULTI_CELL for ch in text):
        return None
    available = width - padding.left - padding.right
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if not paragraph or paragraph.strip(" ") != paragraph or "  " in paragraph:
            return None
        words = paragraph.split(" ")
        line = words[0]
        if pdf.get_string_width(line) >= available - _SLACK:
            return None
        for word in words[1:]:
            candidate = f"{line} {word}"
            candidate_width = pdf.get_string_width(candidate)
            if abs(candidate_width - available) <= _SLACK:
                return None
            if candidate_width < available:
                line = candidate
                continue
            if pdf.get_string_width(word) >= available - _SLACK:
                return None
            lines.append(line)  # fpdf2 breaks at the space and drops it
            line = word
        lines.append(line)
    return lines


def _text_height(pdf: FPDF, text: str, width: float, line_height: float, padding: Padding, lines: list[str] | None) -> float:
    """What ``multi_cell(dry_run=True, output=HEIGHT)`` returns for a table cell, from its plain lines if it has them."""
    if not text:
        return 0.0
    if lines is not None:
        return len(lines) * line_height + padding.top + padding.bottom
    return pdf.multi_cell(w=width, h=line_height, text=text, max_line_height=line_height, border=0, new_x="RIGHT",
                          new_y="TOP", dry_run=True, output=MethodReturnValue.HEIGHT, padding=padding)


def _lines_cell(pdf: FPDF, lines: list[str], width: float, line_height: float, align: Align, padding: Padding) -> None:
    """A cell's plain lines, placed where ``multi_cell(..., padding=padding)`` places them: inside the
    padding, one under the other, with no cell margin (multi_cell drops c_margin on a padded side)."""
    x, y, c_margin = pdf.x, pdf.y, pdf.c_margin
    pdf.c_margin = 0
    try:
        for number, line in enumerate(lines):
            pdf.set_xy(x + padding.left, y + padding.top + number * line_height)
            pdf.cell(w=width - padding.left - padding.right, h=line_height, text=line, align=align)
    finally:
        pdf.c_margin = c_margin
    pdf.set_xy(x + width, y)
