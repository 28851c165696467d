"""Factur-X / ZUGFeRD hybrid invoice: o2c's invoice PDF with the CII XML inside, declared PDF/A-3.

Every check runs on both ways of making one: written in one pass by fpdf2 (``render_facturx_pdf``, what
the bill run uses) and the finished PDF re-written by the factur-x package (``embed_facturx``)."""
from __future__ import annotations

import re
from io import BytesIO

import facturx
import pytest
from lxml import etree
from pypdf import PdfReader

from adapters.documents import InvoicePdfData, PdfLine, PdfParty, PdfVat, render_invoice_pdf
from adapters.documents.einvoice import EInvoiceDocument, build_cii_xml
from adapters.documents.facturx import embed_facturx, extract_facturx_xml, render_facturx_pdf
from tests.documents.test_einvoice_xml import SCENARIOS
from tests.documents.validators import all_errors


def invoice_pdf(doc: EInvoiceDocument) -> bytes:
    """The printed invoice for ``doc``, built the way activities.invoice_issuer builds it."""
    return render_invoice_pdf(invoice_data(doc))


def invoice_data(doc: EInvoiceDocument) -> InvoicePdfData:
    def party(p) -> PdfParty:  # noqa: ANN001
        a = p.address
        return PdfParty(name=p.name, vat_id=p.vat_id, address_lines=[a.line1 or "", f"{a.postcode} {a.city}", a.country_code])

    return InvoicePdfData(
        invoice_number=doc.number, issue_date=doc.issue_date, due_date=doc.due_date or doc.issue_date,
        service_period=f"{doc.period_start:%d.%m.%Y} – {doc.period_end:%d.%m.%Y}",
        seller=party(doc.seller), buyer=party(doc.buyer), customer_number=doc.buyer.customer_id or "-",
        billing_account_id=doc.contract_reference or "-", currency=doc.currency,
        lines=[PdfLine(line_no=int(line.id), description=line.name, quantity=line.quantity, unit=line.unit_code,
                       unit_price=line.net_unit_price, net_amount=line.net_amount, vat_rate=line.vat_rate)
               for line in doc.lines],
        vat_breakdown=[PdfVat(vat_category=v.category, vat_rate=v.rate, taxable_amount=v.taxable_amount, tax_amount=v.tax_amount)
                       for v in doc.vat_breakdown],
        net_total=doc.net_total, vat_total=doc.vat_total, gross_total=doc.gross_total, payment_note=doc.payment_terms,
    )


@pytest.fixture(scope="module", params=["one_pass", "factur_x_library"])
def standard(request: pytest.FixtureRequest) -> tuple[bytes, bytes, bytes]:
    doc = SCENARIOS["standard-19"]().document()
    pdf = invoice_pdf(doc)
    xml = build_cii_xml(doc, profile="en16931")
    hybrid = render_facturx_pdf(invoice_data(doc), xml) if request.param == "one_pass" else embed_facturx(pdf, xml)
    return pdf, xml, hybrid


def xmp(pdf: bytes) -> etree._Element:
    metadata = PdfReader(BytesIO(pdf)).trailer["/Root"]["/Metadata"].get_object().get_data()
    return etree.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", metadata).strip())


def xmp_value(root: etree._Element, namespace: str, name: str) -> str:
    (value,) = root.xpath(f"//*[local-name()='{name}' and namespace-uri()='{namespace}']/text()")
    return value


def test_xml_comes_back_out_unchanged(standard: tuple[bytes, bytes, bytes]) -> None:
    pdf, xml, hybrid = standard
    filename, extracted = facturx.get_xml_from_pdf(hybrid, check_xsd=True)
    assert filename == "factur-x.xml"
    assert extracted == xml
    assert extract_facturx_xml(hybrid) == xml
    assert extract_facturx_xml(pdf) is None
    assert all_errors(extracted, "en16931") == {"xsd": [], "cen": [], "facturx": []}


def test_declares_pdfa3_and_the_factur_x_profile(standard: tuple[bytes, bytes, bytes]) -> None:
    _pdf, _xml, hybrid = standard
    root = xmp(hybrid)
    assert xmp_value(root, "http://www.aiim.org/pdfa/ns/id/", "part") == "3"
    assert xmp_value(root, "http://www.aiim.org/pdfa/ns/id/", "conformance") == "B"
    fx = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
    assert xmp_value(root, fx, "DocumentFileName") == "factur-x.xml"
    assert xmp_value(root, fx, "DocumentType") == "INVOICE"
    assert xmp_value(root, fx, "ConformanceLevel") == "EN 16931"

    catalog = PdfReader(BytesIO(hybrid)).trailer["/Root"]
    (spec,) = [ref.get_object() for ref in catalog["/AF"].get_object()]
    assert (spec["/F"], spec["/AFRelationship"]) == ("factur-x.xml", "/Data")
    (intent,) = [ref.get_object() for ref in catalog["/OutputIntents"]]
    assert (intent["/S"], intent["/OutputConditionIdentifier"]) == ("/GTS_PDFA1", "sRGB IEC61966-2.1")
    profile = intent["/DestOutputProfile"].get_object()
    assert profile["/N"] == 3 and profile.get_data()[36:40] == b"acsp"  # an ICC profile


def test_the_printed_invoice_is_unchanged(standard: tuple[bytes, bytes, bytes]) -> None:
    pdf, _xml, hybrid = standard
    before, after = PdfReader(BytesIO(pdf)), PdfReader(BytesIO(hybrid))
    assert len(after.pages) == len(before.pages)
    assert [p.extract_text() for p in after.pages] == [p.extract_text() for p in before.pages]
    assert "INV-2026-000123" in after.pages[0].extract_text()


def test_xrechnung_xml_embeds_as_en16931_level() -> None:
    doc = SCENARIOS["xrechnung"]().document()
    xml = build_cii_xml(doc, profile="xrechnung")
    assert extract_facturx_xml(embed_facturx(invoice_pdf(doc), xml)) == xml
    assert extract_facturx_xml(render_facturx_pdf(invoice_data(doc), xml)) == xml


def test_one_pass_document_is_byte_identical_for_the_same_input_and_dated_by_the_invoice() -> None:
    doc = SCENARIOS["standard-19"]().document()
    xml = build_cii_xml(doc, profile="en16931")
    hybrid = render_facturx_pdf(invoice_data(doc), xml)
    assert render_facturx_pdf(invoice_data(doc), xml) == hybrid
    created = f"{doc.issue_date:%Y-%m-%d}T00:00:00+00:00"
    root = xmp(hybrid)
    assert xmp_value(root, "http://ns.adobe.com/xap/1.0/", "CreateDate") == created
    (title,) = root.xpath("//*[local-name()='title']//*[local-name()='li']/text()")
    assert title.endswith(doc.number)
    assert hybrid.startswith(b"%PDF-1.7")  # PDF/A-3 is based on PDF 1.7
    # PDF/A: the file attachment says what it is and when it was made, and there is no /Info to contradict the XMP.
    catalog = PdfReader(BytesIO(hybrid)).trailer["/Root"]
    (spec,) = [ref.get_object() for ref in catalog["/AF"]]
    embedded = spec["/EF"]["/F"].get_object()
    assert embedded["/Subtype"] == "/text/xml" and embedded["/Params"]["/Size"] == len(xml)
    assert "/Info" not in PdfReader(BytesIO(hybrid)).trailer


def test_one_pass_refuses_what_a_receiver_would_reject() -> None:
    doc = SCENARIOS["standard-19"]().document()
    xml = build_cii_xml(doc, profile="en16931")
    with pytest.raises(ValueError, match="level 'en16931'"):
        render_facturx_pdf(invoice_data(doc), xml, level="extended")
    with pytest.raises(ValueError, match="well-formed"):
        render_facturx_pdf(invoice_data(doc), b"<rsm:CrossIndustryInvoice")


def test_refuses_what_a_receiver_would_reject(standard: tuple[bytes, bytes, bytes]) -> None:
    pdf, xml, _hybrid = standard
    root = etree.fromstring(xml)
    type_code = root.find(".//{*}ExchangedDocument/{*}TypeCode")
    type_code.getparent().remove(type_code)
    with pytest.raises(ValueError, match="XML Schema"):
        embed_facturx(pdf, etree.tostring(root))
    with pytest.raises(ValueError, match="level 'en16931'"):
        embed_facturx(pdf, xml, level="extended")
    with pytest.raises(ValueError, match="not a PDF"):
        embed_facturx(b"<html/>", xml)
    with pytest.raises(ValueError, match="well-formed"):
        embed_facturx(pdf, b"<rsm:CrossIndustryInvoice")


def test_one_pass_metadata_escapes_what_xml_would_choke_on() -> None:
    doc = SCENARIOS["standard-19"]().document()
    xml = build_cii_xml(doc, profile="en16931")
    data = invoice_data(doc)
    data = data.model_copy(update={"seller": data.seller.model_copy(update={"name": "Müller & Söhne <Telekom> GmbH"})})
    root = xmp(render_facturx_pdf(data, xml))
    (creator,) = root.xpath("//*[local-name()='creator']//*[local-name()='li']/text()")
    assert creator == "Müller & Söhne <Telekom> GmbH"
