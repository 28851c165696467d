"""EN 16931 e-invoices: the input model (``einvoice_model``) and its CII XML (``cii_xml``), in one import.

    doc = einvoice_from_computed(compute_invoice(charges), number=..., seller=..., buyer=..., ...)
    xml = build_cii_xml(doc, profile="en16931")         # Factur-X / ZUGFeRD EN 16931
    xml = build_cii_xml(doc, profile="xrechnung")       # XRechnung 3.0 (needs a Leitweg-ID etc.)
    pdf = render_facturx_pdf(InvoicePdfData(...), xml)  # adapters.documents.facturx: PDF/A-3 with the XML inside
"""
from adapters.documents.cii_xml import GUIDELINE_IDS, Profile, build_cii_xml, xrechnung_problems
from adapters.documents.einvoice_model import (
    DEFAULT_VAT_EXEMPTIONS,
    UNIT_CODE_ALIASES,
    Buyer,
    CardPayment,
    Contact,
    EInvoiceDocument,
    EInvoiceLine,
    PaymentMeans,
    PostalAddress,
    PrecedingInvoice,
    SepaCreditTransfer,
    SepaDirectDebit,
    Seller,
    VatBreakdownEntry,
    VatExemption,
    einvoice_from_computed,
)

__all__ = [
    "DEFAULT_VAT_EXEMPTIONS",
    "GUIDELINE_IDS",
    "Buyer",
    "CardPayment",
    "Contact",
    "EInvoiceDocument",
    "EInvoiceLine",
    "PaymentMeans",
    "PostalAddress",
    "PrecedingInvoice",
    "Profile",
    "SepaCreditTransfer",
    "SepaDirectDebit",
    "Seller",
    "UNIT_CODE_ALIASES",
    "VatBreakdownEntry",
    "VatExemption",
    "build_cii_xml",
    "einvoice_from_computed",
    "xrechnung_problems",
]
