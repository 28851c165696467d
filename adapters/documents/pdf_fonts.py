"""Embedding a TrueType font in an invoice PDF without subsetting it for every document.

fpdf2 embeds a TrueType font by subsetting it (fontTools) to the glyphs the document uses, at
``output()``. For DejaVu Sans that is about half of a whole invoice render (~25 ms of CPU): fontTools
decompiles the glyph table of ~6,000 glyphs and compiles the subset again, per font, per document.
Nearly every invoice uses a handful of glyphs out of the same small repertoire (Latin letters,
digits, German umlauts, € and the dashes and dots of the layout), so the font is subset once per
process to a fixed repertoire (``FIXED_CHARACTERS``) and that same font program is embedded in every
document whose glyphs all lie inside it. A document that uses a glyph outside it (a customer called
"Αθηνά", a "≥" in a note) takes fpdf2's own per-document subset, exactly as before: no glyph is lost,
the document only costs what every document used to cost.

How fpdf2 is made to reuse the program: ``use_fixed_subset`` puts a ``FixedSubsetFont`` where fpdf2
expects the fontTools font of a ``TTFFont``. fpdf2's output asks it for glyph ids and writes it out;
the subsetting step before that is skipped for it by ``_SubsetterSkippingFixedSubsets``, which fpdf2's
output module uses in place of fontTools' ``Subsetter`` (installed once by ``install()``; for any other
font it is fontTools' subsetter unchanged). The glyph ids of the fixed program are what fpdf2 writes
into the CIDToGIDMap; ToUnicode and widths come from fpdf2's per-document map, as before. The program is
also compressed once: ``_FontStreamOfFixedSubsets`` takes the place of fpdf2's font stream and reuses
the compressed bytes for the fixed program (any other program is compressed as fpdf2 does).

The price: the fixed program carries ~370 glyphs where a per-document subset carries the ~50-70 used,
about 27 KB more per font in the PDF (hinting kept, as fpdf2 keeps it).
"""
from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from types import SimpleNamespace
from typing import BinaryIO

import fpdf.output
from fontTools import subset as ftsubset
from fontTools import ttLib
from fpdf.fonts import TTFFont
from fpdf.syntax import PDFContentStream

__all__ = ["FIXED_CHARACTERS", "FixedSubset", "FixedSubsetFont", "fixed_subset", "install", "use_fixed_subset"]

# Windows-1252 (Latin-1, €, „“‚‘’, –—, …, •, ‰, Š/š, Ž/ž, Œ/œ, Ÿ, ƒ, ˆ˜, ™, ‹›, †‡) and Latin Extended-A
# (Polish, Czech, Turkish, Hungarian, Baltic... names) plus Romanian ș ț. Every label of the invoice layout
# lies in here; tests/documents/test_pdf_fonts.py checks that.
FIXED_CHARACTERS: frozenset[int] = frozenset(
    {ord(bytes([b]).decode("cp1252")) for b in range(0x20, 0x100) if b not in (0x7F, 0x81, 0x8D, 0x8F, 0x90, 0x9D)}
    | set(range(0x100, 0x180))
    | {0x0218, 0x0219, 0x021A, 0x021B}
)

# What fpdf2's output (fpdf/output.py, OutputProducer._add_fonts) drops from every subset; the fixed
# subset is made with the same options so that it carries the same tables as a per-document one.
_FPDF_DROPPED_TABLES = [
    "FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix",
    "CBDT", "CBLC", "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR",
]


@dataclass(frozen=True)
class FixedSubset:
    program: bytes  # the TrueType font program to embed
    glyph_ids: dict[str, int]  # glyph name (as in the full font's cmap) -> glyph id in ``program``
    compressed: bytes  # ``program`` as fpdf2 compresses a font stream (zlib, its level): ~1 ms per font saved a document


def _subset_options() -> ftsubset.Options:
    options = ftsubset.Options(notdef_outline=True, recommended_glyphs=True)
    options.drop_tables += _FPDF_DROPPED_TABLES
    return options


_lock = threading.Lock()


@cache
def _fixed_subset(font_file: bytes) -> FixedSubset:
    font = ttLib.TTFont(BytesIO(font_file), recalcTimestamp=False)
    subsetter = ftsubset.Subsetter(_subset_options())
    subsetter.populate(unicodes=sorted(FIXED_CHARACTERS))
    subsetter.subset(font)
    out = BytesIO()
    font.save(out)
    # Glyph names of the subset as fontTools holds them in memory: those of the full font, which is
    # what fpdf2's glyphs are named by.
    program = out.getvalue()
    subset = FixedSubset(program=program, glyph_ids={name: gid for gid, name in enumerate(font.getGlyphOrder())},
                         compressed=zlib.compress(program, level=PDFContentStream._COMPRESSION_LEVEL))  # noqa: SLF001
    _compressed_programs[program] = subset.compressed
    return subset


_compressed_programs: dict[bytes, bytes] = {}  # fixed subset program -> compressed, for _FontStreamOfFixedSubsets


def fixed_subset(font_file: bytes) -> FixedSubset:
    """The font in ``font_file`` subset to FIXED_CHARACTERS, made once per process (~60 ms)."""
    with _lock:  # made once even when several activity threads render their first document together
        return _fixed_subset(font_file)


class FixedSubsetFont:
    """What fpdf2's output uses of a fontTools ``TTFont`` (glyph ids, save, close), for a fixed subset."""

    def __init__(self, subset: FixedSubset) -> None:
        self.subset = subset

    def getGlyphID(self, glyph_name: str) -> int:  # noqa: N802 - fontTools' name
        return self.subset.glyph_ids[glyph_name]

    def save(self, file: BinaryIO) -> None:
        file.write(self.subset.program)

    def __contains__(self, table_tag: str) -> bool:
        return False  # asked only for "CFF " (a CFF font); the fixed subset is TrueType

    def close(self) -> None:
        pass


def use_fixed_subset(font: TTFFont, font_file: bytes) -> bool:
    """Before ``output()``: embed the fixed subset for ``font`` if it covers every glyph the document used,
    else give ``font`` its own fontTools font for fpdf2 to subset per document. True if the fixed one is used."""
    subset = fixed_subset(font_file)
    if _installed and all(name in subset.glyph_ids for name in font.subset.get_all_glyph_names()):
        font.ttfont = FixedSubsetFont(subset)
        return True
    font.ttfont = ttLib.TTFont(BytesIO(font_file), recalcTimestamp=False, lazy=True)
    return False


class _SubsetterSkippingFixedSubsets(ftsubset.Subsetter):
    def subset(self, font: object) -> None:
        if isinstance(font, FixedSubsetFont):
            return  # already subset once for the process, to a repertoire covering every requested glyph
        super().subset(font)


class _FontStreamOfFixedSubsets(fpdf.output.PDFFontStream):
    """fpdf2's font file stream; a fixed subset's program is not compressed again for every document."""

    def __init__(self, contents: bytes) -> None:
        compressed = _compressed_programs.get(bytes(contents))
        if compressed is None:
            super().__init__(contents)
            return
        super().__init__(b"")
        self._contents = compressed
        self.length = len(compressed)
        self.length1 = len(contents)


_installed = False


def install() -> None:
    """Let fpdf2's output skip subsetting (and re-compressing) a fixed subset. Harmless for every other font.

    Only if fpdf2 still subsets through ``fpdf.output.ftsubset`` (as 2.8 does): otherwise nothing is
    installed and every document is subset per document as before."""
    global _installed
    if _installed:
        return
    current = getattr(fpdf.output, "ftsubset", None)
    if current is not ftsubset or not hasattr(current, "Subsetter"):
        return
    fpdf.output.ftsubset = SimpleNamespace(Options=ftsubset.Options, Subsetter=_SubsetterSkippingFixedSubsets)
    if fpdf.output.PDFFontStream.__name__ == "PDFFontStream":
        fpdf.output.PDFFontStream = _FontStreamOfFixedSubsets
    _installed = True
