"""Where the time of an invoice PDF goes (the bill run's documents share), and what a smaller font would save.

Usage: .venv/bin/python bench/billrun_pdf_profile.py [--renders 20]
Renders a typical cycle invoice (fee in advance, fee, three usage lines, one VAT rate) with
adapters.documents.invoice_pdf.render_invoice_pdf: as shipped (DejaVu Sans, full font files, parsed by
fpdf2's add_font on every render) and, as an experiment in this process only, with the same fonts subset
beforehand (pyftsubset, Latin-1 + € – · „ “ ‚ ‘ ’ …) so that parsing and per-document subsetting handle
~220 glyphs instead of ~6,000. Prints a cProfile summary and one final JSON line.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import adapters.documents.invoice_pdf as invoice_pdf  # noqa: E402
from adapters.documents.invoice_pdf import InvoicePdfData, PdfLine, PdfParty, PdfVat, render_invoice_pdf  # noqa: E402

UNICODES = "U+0020-007E,U+00A0-00FF,U+20AC,U+2013,U+2014,U+00B7,U+201E,U+201C,U+201A,U+2018,U+2019,U+2026,U+2022"


def sample() -> InvoicePdfData:
    fee = dict(quantity=Decimal(1), unit="MON", unit_price=Decimal("9.99"), net_amount=Decimal("9.99"), vat_rate=Decimal(19))
    lines = [PdfLine(line_no=1, description="Mobile S monthly fee", period="29.11.2026–29.11.2026", **fee),
             PdfLine(line_no=2, description="Mobile S monthly fee", period="30.11.2026–30.11.2026", **fee),
             PdfLine(line_no=3, description="Mobile S Voice calls beyond allowance (18 records)", quantity=Decimal(120), unit="MIN", unit_price=None,
                     net_amount=Decimal("10.80"), vat_rate=Decimal(19), period="29.11.2026–29.11.2026"),
             PdfLine(line_no=4, description="Mobile S Data beyond allowance (8 records)", quantity=Decimal(160), unit="MB", unit_price=None,
                     net_amount=Decimal("14.40"), vat_rate=Decimal(19), period="29.11.2026–29.11.2026"),
             PdfLine(line_no=5, description="Mobile S SMS beyond allowance (4 records)", quantity=Decimal(4), unit="C62", unit_price=None,
                     net_amount=Decimal("0.36"), vat_rate=Decimal(19), period="29.11.2026–29.11.2026")]
    net = sum((ln.net_amount for ln in lines), Decimal(0))
    vat = (net * Decimal("0.19")).quantize(Decimal("0.01"))
    return InvoicePdfData(
        invoice_number="INV-2026-000001", issue_date=date(2026, 11, 30), due_date=date(2026, 12, 14), service_period="29.11.2026 – 29.11.2026",
        seller=PdfParty(name="o2c Telekom GmbH", address_lines=["Musterstraße 1, 10115 Berlin, Deutschland"], vat_id="DE123456789"),
        buyer=PdfParty(name="Kunde 1", address_lines=["Hauptstraße 5", "10115 Berlin", "DE"]), customer_number="cu-000001",
        billing_account_id="ba-000001", currency="EUR", lines=lines,
        vat_breakdown=[PdfVat(vat_category="S", vat_rate=Decimal(19), taxable_amount=net, tax_amount=vat)],
        net_total=net, vat_total=vat, gross_total=net + vat, payment_note="Payable by 14.12.2026. We collect it from your saved payment method.",
        document_title="Rechnung / Invoice", document_kind="invoice")


def timed(data: InvoicePdfData, renders: int) -> tuple[float, int]:
    render_invoice_pdf(data)  # warm imports
    started = time.perf_counter()
    for _ in range(renders):
        size = len(render_invoice_pdf(data))
    return (time.perf_counter() - started) / renders, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=20)
    args = parser.parse_args()
    data = sample()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    shipped_s, shipped_size = timed(data, args.renders)

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        render_invoice_pdf(data)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    total = sum(v[3] for k, v in stats.stats.items() if k[2] == "render_invoice_pdf")
    parts = {}
    for (filename, _line, name), value in stats.stats.items():
        key = {("fpdf.py", "add_font"): "add_font (parse TTF)", ("output.py", "_add_fonts"): "output: font subsetting/embedding",
               ("fpdf.py", "table"): "tables", ("output.py", "bufferize"): "output total"}.get((Path(filename).name, name))
        if key:
            parts[key] = round(value[3] / total, 3)
    stats.sort_stats("cumulative").print_stats(15)
    print(out.getvalue())

    with tempfile.TemporaryDirectory() as tmp:
        subset_files = {}
        for style, path in invoice_pdf._FONT_FILES.items():
            target = Path(tmp) / f"subset-{path.name}"
            subprocess.run([str(Path(sys.executable).parent / "pyftsubset"), str(path), f"--unicodes={UNICODES}", f"--output-file={target}",
                            "--layout-features=*", "--notdef-outline"], check=True)
            subset_files[style] = target
        original = invoice_pdf._FONT_FILES
        invoice_pdf._FONT_FILES = subset_files
        try:
            subset_s, subset_size = timed(data, args.renders)
        finally:
            invoice_pdf._FONT_FILES = original
    print(json.dumps({
        "renders": args.renders, "pdf_ms_shipped": round(1000 * shipped_s, 1), "pdf_per_s_shipped": round(1 / shipped_s, 1),
        "pdf_bytes_shipped": shipped_size, "share_of_render": parts,
        "pdf_ms_presubset_fonts": round(1000 * subset_s, 1), "pdf_per_s_presubset_fonts": round(1 / subset_s, 1), "pdf_bytes_presubset": subset_size,
        "load_before": load_before, "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }))


if __name__ == "__main__":
    main()
