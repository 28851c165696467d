"""Hybrid e-invoice: the human-readable invoice PDF with its CII XML attached as ``factur-x.xml``.

Two ways to the same kind of document:

- ``render_facturx_pdf(data, xml)``: the invoice is drawn and written once by fpdf2 as PDF/A-3b, with the
  XML attached as an associated file (``/AF``, AFRelationship ``Data``), the sRGB output intent and XMP
  metadata that declares PDF/A-3 (part 3, conformance B) with the Factur-X extension schema and
  conformance level (built by the ``factur-x`` package's own XMP builder). About a millisecond on top of
  the plain PDF, and byte-identical for the same input. What the bill run uses.
- ``embed_facturx(pdf, xml)``: any finished PDF, re-read and re-written by the ``factur-x`` package
  (Akretion, BSD licence) with pypdf, after this module adds the sRGB output intent PDF/A asks for when a
  page uses device colours (fpdf2 draws in DeviceRGB/DeviceGray). Over ten milliseconds per document,
  because the whole PDF is parsed and written again.

Both check the XML against the Factur-X XSD of its level first (about a millisecond): an invalid XML
raises instead of producing a document a receiver would reject. The invoice PDF embeds its fonts
(DejaVu Sans), as PDF/A requires.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Literal
from xml.sax.saxutils import escape as xml_escape

import facturx
from fpdf import FPDF_VERSION
from fpdf.enums import OutputIntentSubType, PageMode
from fpdf.output import PDFICCProfile
from lxml import etree
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject, TextStringObject

from adapters.documents.invoice_pdf import InvoicePdfData, lay_out_invoice, write_pdf

__all__ = ["FacturXLevel", "embed_facturx", "extract_facturx_xml", "render_facturx_pdf"]

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
    _check_xml(xml, level)
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


def _check_xml(xml: bytes, level: FacturXLevel) -> None:
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


_FACTURX_URN = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"


_XMP_FIELDS = ("title", "author", "subject", "created")


@cache
def _xmp_template(level: FacturXLevel) -> str:
    """The XMP packet body the factur-x package writes, with placeholders for the document's own fields (built
    once: lxml.objectify costs more than the rest of the embedding)."""
    root = facturx.generate_xmp_object({
        "pdfa3_flavor": "B", "title": "@@title@@", "author": "@@author@@", "subject": "@@subject@@",
        "producer": f"PyFPDF/fpdf{FPDF_VERSION}", "creator_tool": "o2c", "timestamp": "@@created@@", "version": "1.0",
        "documenttype": "INVOICE", "xml_filename": facturx.facturx.FACTURX_FILENAME,
        "xmp_level": facturx.facturx.FACTURX_LEVEL2xmp[level], "urn": _FACTURX_URN,
    })
    for description in root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"):
        description.set("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about", "")  # XMP wants it, even empty
    return etree.tostring(root, encoding="unicode")


def _xmp(*, level: FacturXLevel, **fields: str) -> str:
    """The XMP of a document: title, author, subject and creation date (ISO 8601) filled into the template."""
    xmp = _xmp_template(level)
    for name in _XMP_FIELDS:
        xmp = xmp.replace(f"@@{name}@@", xml_escape(fields[name]))
    return xmp


def render_facturx_pdf(data: InvoicePdfData, xml: bytes, *, level: FacturXLevel = "en16931") -> bytes:
    """The invoice PDF of ``data`` as a Factur-X / ZUGFeRD PDF/A-3b with ``xml`` attached as factur-x.xml,
    written in one pass. The same input always gives byte-identical output."""
    _check_xml(xml, level)
    pdf = lay_out_invoice(data, compliance="PDFA_3B")
    pdf.add_output_intent(
        OutputIntentSubType.PDFA, output_condition_identifier=_SRGB, registry_name="http://www.color.org",
        dest_output_profile=PDFICCProfile(contents=_srgb_profile(), n=3, alternate="DeviceRGB"), info=_SRGB,
    )
    pdf.embed_file(
        bytes=xml, basename=facturx.facturx.FACTURX_FILENAME, mime_type="text/xml", associated_file_relationship="Data",
        desc="Factur-X XML file", modification_date=pdf.creation_date, compress=True, checksum=True,
    )
    pdf.page_mode = PageMode.USE_ATTACHMENTS  # as the factur-x package does: a viewer shows the XML beside the page
    pdf.set_xmp_metadata(_xmp(title=pdf.title, author=pdf.author, subject=pdf.subject,
                              created=pdf.creation_date.isoformat(timespec="seconds"), level=level))
    return write_pdf(pdf)
