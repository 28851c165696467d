"""Hybrid e-invoice: the human-readable invoice PDF with its CII XML attached as ``factur-x.xml``.

The embedding is done by the ``factur-x`` package (Akretion, BSD licence): it attaches the XML as
an associated file (``/AF``, AFRelationship ``Data``), writes the XMP metadata that declares
PDF/A-3 (part 3, conformance B) with the Factur-X extension schema and conformance level, and
checks the XML against the Factur-X XSD. This module adds the sRGB output intent PDF/A asks for
when a page uses device colours (fpdf2 draws in DeviceRGB/DeviceGray), using the sRGB ICC profile
that fpdf2 ships.

Not done here, and needed for a PDF/A-3 that passes veraPDF: the invoice PDF must embed its fonts.
``render_invoice_pdf`` uses the non-embedded core font Helvetica.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Literal

import facturx
from lxml import etree
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject, TextStringObject

__all__ = ["FacturXLevel", "embed_facturx", "extract_facturx_xml"]

FacturXLevel = Literal["basic", "en16931", "extended"]
_SRGB = "sRGB IEC61966-2.1"


@cache
def _srgb_profile() -> bytes:
    return resources.files("fpdf").joinpath("data/color_profiles/sRGB2014.icc").read_bytes()


def _with_output_intent(pdf: bytes) -> bytes:
    """``pdf`` with an sRGB PDF/A output intent, unless it already has one."""
    writer = PdfWriter(clone_from=PdfReader(BytesIO(pdf)))
    if "/OutputIntents" in writer.root_object:
        return pdf
    icc = DecodedStreamObject()
    icc.set_data(_srgb_profile())
    profile = icc.flate_encode()
    profile[NameObject("/N")] = NumberObject(3)
    intent = DictionaryObject({
        NameObject("/Type"): NameObject("/OutputIntent"),
        NameObject("/S"): NameObject("/GTS_PDFA1"),
        NameObject("/OutputConditionIdentifier"): TextStringObject(_SRGB),
        NameObject("/Info"): TextStringObject(_SRGB),
        NameObject("/RegistryName"): TextStringObject("http://www.color.org"),
        NameObject("/DestOutputProfile"): writer._add_object(profile),
    })
    writer.root_object[NameObject("/OutputIntents")] = ArrayObject([writer._add_object(intent)])
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def embed_facturx(
    pdf: bytes,
    xml: bytes,
    *,
    level: FacturXLevel = "en16931",
    lang: str = "de-DE",
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The Factur-X / ZUGFeRD PDF (PDF/A-3 declared) of ``pdf`` with ``xml`` attached as factur-x.xml.

    ``xml`` is checked against the Factur-X XSD of ``level`` first (about a millisecond); an
    invalid XML raises instead of producing a document a receiver would reject. An XRechnung CII
    (BT-24 ``...#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0``) embeds with level ``en16931``.
    ``metadata`` (title, author, subject, keywords) defaults to what factur-x derives from the XML.
    """
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("pdf is not a PDF document")
    try:
        root = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"xml is not well-formed: {exc}") from exc
    detected = facturx.get_level(root, "factur-x")
    if detected != level:
        raise ValueError(f"the XML declares Factur-X level {detected!r} (BT-24), not {level!r}")
    try:
        facturx.xml_check_xsd(root, flavor="factur-x", level=level)
    except Exception as exc:  # factur-x raises a bare Exception for an XSD failure
        raise ValueError(str(exc)) from exc
    return facturx.generate_from_binary(
        _with_output_intent(pdf),
        xml,
        flavor="factur-x",
        level=level,
        check_xsd=False,  # just checked
        pdf_metadata=dict(metadata) if metadata is not None else None,
        lang=lang,
    )


def extract_facturx_xml(pdf: bytes) -> bytes | None:
    """The XML attached to a Factur-X / ZUGFeRD PDF, or None if it carries none."""
    _name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    return xml or None
