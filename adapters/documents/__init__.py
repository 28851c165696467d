"""Customer-facing documents rendered from finished business data (no calculation here)."""
from adapters.documents.invoice_pdf import (
    InvoicePdfData,
    PdfLine,
    PdfParty,
    PdfVat,
    render_invoice_pdf,
)

__all__ = ["InvoicePdfData", "PdfLine", "PdfParty", "PdfVat", "render_invoice_pdf"]
