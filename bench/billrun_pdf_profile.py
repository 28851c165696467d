"""CPU per invoice document, the bill run's documents share: the printed PDF, the Factur-X hybrid, and where it goes.

Usage: .venv/bin/python bench/billrun_pdf_profile.py [--renders 30] [--profile]

Builds a typical cycle invoice (fee, prorated fee, voice and data usage, one-time fee, discount; one VAT rate;
DejaVu Sans, as adapters.documents renders every invoice) once as the e-invoice document and its printed form,
and measures process CPU time (not wall time: other processes share the machine) per document of:

  pdf_cpu_ms           render_invoice_pdf: the printed invoice alone (fonts embedded as subsets)
  xml_cpu_ms           build_cii_xml: the EN 16931 CII XML
  facturx_cpu_ms       embed_facturx(pdf, xml): the factur-x package re-reading and re-writing the finished PDF
  onepass_cpu_ms       render_facturx_pdf(data, xml): PDF/A-3 with the XML attached, written once by fpdf2
                       (what activities.invoice_issuer uses; absent from code that has no one-pass path)
  document_cpu_ms      what a bill run pays per document for PDF + XML + Factur-X: xml + onepass where there is
                       one, else pdf + xml + facturx
  fallback_pdf_cpu_ms  render_invoice_pdf for a customer name with a glyph outside the fixed font subset (Greek):
                       the per-document font subsetting every document paid before

--profile prints a cProfile summary of render_invoice_pdf first. The final line is one JSON object.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import adapters.documents.facturx as facturx_module  # noqa: E402
from adapters.documents.einvoice import (  # noqa: E402
    Buyer,
    EInvoiceDocument,
    PostalAddress,
    SepaDirectDebit,
    Seller,
    build_cii_xml,
    einvoice_from_computed,
)
from adapters.documents.invoice_pdf import InvoicePdfData, PdfLine, PdfParty, PdfVat, render_invoice_pdf  # noqa: E402
from domain.invoicing import ChargeLine, compute_invoice  # noqa: E402

PERIOD = {"period_start": date(2026, 11, 1), "period_end": date(2026, 12, 1)}


def invoice_document(buyer_name: str = "Kunde 1") -> EInvoiceDocument:
    def line(kind: str, description: str, quantity: str, unit: str, amount: str, unit_price: str | None = None) -> ChargeLine:
        return ChargeLine(kind=kind, description=description, quantity=Decimal(quantity), unit=unit, net_amount=Decimal(amount),
                          unit_price=Decimal(unit_price) if unit_price else None, vat_rate=Decimal(19), vat_category="S", **PERIOD)

    charges = [
        line("recurring", "Mobile S monthly fee", "1", "MON", "9.99", "9.99"),
        line("recurring", "Mobile S monthly fee, prorated 0.4839", "1", "MON", "4.8342", "9.99"),
        line("usage", "Mobile S Voice calls beyond allowance (18 records)", "120", "MIN", "10.80"),
        line("usage", "Mobile S Data beyond allowance (8 records)", "160", "MB", "14.40"),
        line("usage", "Mobile S SMS beyond allowance (4 records)", "4", "C62", "0.36"),
        line("one_time", "Connection fee", "1", "C62", "29.99", "29.99"),
    ]
    seller = Seller(name="o2c Telekom GmbH", address=PostalAddress(line1="Musterstraße 1", postcode="10115", city="Berlin", country_code="DE"),
                    vat_id="DE123456789", tax_number="27/123/45678", electronic_address="rechnung@o2c.example")
    buyer = Buyer(name=buyer_name, customer_id="cu-000001", electronic_address="kunde1@example.org",
                  address=PostalAddress(line1="Hauptstraße 5", postcode="10115", city="Berlin", country_code="DE"))
    return einvoice_from_computed(
        compute_invoice(charges), number="INV-2026-000001", issue_date=date(2026, 12, 1), period_start=date(2026, 11, 1),
        period_end_exclusive=date(2026, 12, 1), seller=seller, buyer=buyer, due_date=date(2026, 12, 15),
        payment_means=SepaDirectDebit(mandate_reference="O2C-MANDATE-1", creditor_id="DE98ZZZ09999999999", debtor_iban="DE89370400440532013000"),
        payment_terms="Payable by 15.12.2026. We collect it from your saved payment method.", contract_reference="ba-000001",
    )


def pdf_data(doc: EInvoiceDocument) -> InvoicePdfData:
    """The printed form of ``doc``, as activities.invoice_issuer and tests/documents/test_facturx.py build it."""
    def party(p) -> PdfParty:  # noqa: ANN001
        a = p.address
        return PdfParty(name=p.name, vat_id=p.vat_id, tax_number=getattr(p, "tax_number", None),
                        address_lines=[a.line1 or "", f"{a.postcode} {a.city}", a.country_code])

    return InvoicePdfData(
        invoice_number=doc.number, issue_date=doc.issue_date, due_date=doc.due_date,
        service_period=f"{doc.period_start:%d.%m.%Y} – {doc.period_end:%d.%m.%Y}",
        seller=party(doc.seller), buyer=party(doc.buyer), customer_number=doc.buyer.customer_id or "-",
        billing_account_id=doc.contract_reference or "-", currency=doc.currency,
        lines=[PdfLine(line_no=int(line.id), description=line.name, quantity=line.quantity, unit=line.unit_code,
                       unit_price=line.net_unit_price, net_amount=line.net_amount, vat_rate=line.vat_rate,
                       period=f"{doc.period_start:%d.%m.%Y}–{doc.period_end:%d.%m.%Y}")
               for line in doc.lines],
        vat_breakdown=[PdfVat(vat_category=v.category, vat_rate=v.rate, taxable_amount=v.taxable_amount, tax_amount=v.tax_amount)
                       for v in doc.vat_breakdown],
        net_total=doc.net_total, vat_total=doc.vat_total, gross_total=doc.gross_total, payment_note=doc.payment_terms,
    )


def cpu_ms(fn: Callable[[], object], renders: int) -> float:
    """Mean process CPU milliseconds of ``fn`` over ``renders`` calls, after one warm-up call."""
    fn()
    started = time.process_time()
    for _ in range(renders):
        fn()
    return round(1000 * (time.process_time() - started) / renders, 2)


def print_profile(data: InvoicePdfData) -> None:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        render_invoice_pdf(data)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc = invoice_document()
    data = pdf_data(doc)
    xml = build_cii_xml(doc, profile="en16931")
    pdf = render_invoice_pdf(data)
    fallback = pdf_data(invoice_document(buyer_name="Αθηνά Παπαδοπούλου"))
    if args.profile:
        print_profile(data)

    result: dict[str, object] = {"renders": args.renders}
    result["pdf_cpu_ms"] = cpu_ms(lambda: render_invoice_pdf(data), args.renders)
    result["xml_cpu_ms"] = cpu_ms(lambda: build_cii_xml(doc, profile="en16931"), args.renders)
    result["facturx_cpu_ms"] = cpu_ms(lambda: facturx_module.embed_facturx(pdf, xml), args.renders)
    one_pass = getattr(facturx_module, "render_facturx_pdf", None)
    if one_pass is not None:
        result["onepass_cpu_ms"] = cpu_ms(lambda: one_pass(data, xml), args.renders)
        result["document_cpu_ms"] = round(result["xml_cpu_ms"] + result["onepass_cpu_ms"], 2)
        result["hybrid_bytes"] = len(one_pass(data, xml))
    else:
        result["document_cpu_ms"] = round(result["pdf_cpu_ms"] + result["xml_cpu_ms"] + result["facturx_cpu_ms"], 2)
        result["hybrid_bytes"] = len(facturx_module.embed_facturx(pdf, xml))
    result["fallback_pdf_cpu_ms"] = cpu_ms(lambda: render_invoice_pdf(fallback), max(5, args.renders // 3))
    result["pdf_bytes"] = len(pdf)
    result["documents_per_s"] = round(1000 / result["document_cpu_ms"], 1)
    result["load_before"] = load_before
    result["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
