"""The PDF renderer parses its fonts once per process and gives each document its own copy: documents
rendered at the same time on many threads (the worker's activity threads) must each come out whole and
byte-identical to the same document rendered alone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from adapters.documents import render_invoice_pdf
from tests.documents.test_invoice_pdf import make_invoice, pdf_text


def test_documents_rendered_concurrently_are_identical_to_those_rendered_alone() -> None:
    invoices = [make_invoice(invoice_number=f"INV-2026-{n:06d}") for n in range(1, 13)]
    alone = [render_invoice_pdf(data) for data in invoices]
    assert len(set(alone)) == len(alone)  # each its own document
    barrier = threading.Barrier(6)

    def render(data):
        barrier.wait()
        return render_invoice_pdf(data)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            together = list(pool.map(render, invoices))
            assert together == alone
    assert "INV-2026-000004" in pdf_text(alone[3])


def test_rendering_leaves_the_process_wide_font_templates_untouched() -> None:
    """What threads share must not be written by a render (a shared font descriptor numbered by two documents
    at once broke their cross-reference tables under load)."""
    from adapters.documents.invoice_pdf import _FONT_FILES, _font_template

    render_invoice_pdf(make_invoice())
    before = {style: (dict(vars(_font_template(style).desc)), _font_template(style).ttfont) for style in _FONT_FILES}
    render_invoice_pdf(make_invoice(invoice_number="INV-2026-000999"))
    after = {style: (dict(vars(_font_template(style).desc)), _font_template(style).ttfont) for style in _FONT_FILES}
    assert after == before
