"""TMF Open API v4 representations of o2c's rows. Pure functions: rows in, JSON-ready dicts out.

Conventions: camelCase keys, `id`/`href`/`@type` on every resource, UTC ISO-8601 times ending in
"Z", money as {"unit": "EUR", "value": "12.34"} with the value a string (never a float). `href`s
are server-relative paths, so they stay right behind any proxy or host name. o2c extensions start
with "@o2c" or are plain camelCase fields TMF does not define (documented per resource)."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.catalog import Catalog, ProductOffering
from domain.money import CENT, from_micros, from_minor
from persistence.tables import (
    BillingAccount,
    BillOnDemand,
    BusinessEvent,
    CancelProductOrder,
    Customer,
    Invoice,
    OrderStep,
    Payment,
    Product,
    ProductOrder,
    ProductOrderItem,
    RejectedUsage,
    UsageRecord,
)

CUSTOMER_API = "/tmf-api/customerManagement/v4"
ACCOUNT_API = "/tmf-api/accountManagement/v4"
CATALOG_API = "/tmf-api/productCatalogManagement/v4"
ORDERING_API = "/tmf-api/productOrderingManagement/v4"
INVENTORY_API = "/tmf-api/productInventory/v4"
SERVICE_ORDERING_API = "/tmf-api/serviceOrdering/v4"
USAGE_API = "/tmf-api/usageManagement/v4"
BILL_API = "/tmf-api/customerBillManagement/v4"
PAYMENT_API = "/tmf-api/paymentManagement/v4"


# --- primitives ---------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def iso_date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def money(amount: Decimal, unit: str = "EUR") -> dict[str, str]:
    """Two decimals, rounded half-up: the rounding invoices use."""
    return {"unit": unit, "value": str(amount.quantize(CENT, rounding=ROUND_HALF_UP))}


def money_cents(cents: int, unit: str = "EUR") -> dict[str, str]:
    return money(from_minor(cents), unit)


def ref(resource_type: str, href: str, resource_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": resource_id, "href": href, "@referredType": resource_type, **extra}


def customer_href(customer_id: str) -> str:
    return f"{CUSTOMER_API}/customer/{customer_id}"


def account_href(account_id: str) -> str:
    return f"{ACCOUNT_API}/billingAccount/{account_id}"


def offering_href(offering_id: str) -> str:
    return f"{CATALOG_API}/productOffering/{offering_id}"


def order_href(order_id: str) -> str:
    return f"{ORDERING_API}/productOrder/{order_id}"


def product_href(product_id: str) -> str:
    return f"{INVENTORY_API}/product/{product_id}"


def bill_href(invoice_id: str) -> str:
    return f"{BILL_API}/customerBill/{invoice_id}"


def customer_party(customer_id: str) -> dict[str, Any]:
    return {"id": customer_id, "href": customer_href(customer_id), "role": "customer", "@referredType": "Customer"}


def account_ref(account_id: str) -> dict[str, Any]:
    return ref("BillingAccount", account_href(account_id), account_id)


# --- TMF629 customer ----------------------------------------------------------------------------


def customer(row: Customer) -> dict[str, Any]:
    contact: list[dict[str, Any]] = []
    if row.email:
        contact.append({"mediumType": "email", "preferred": True, "characteristic": {"emailAddress": row.email}})
    if row.phone:
        contact.append({"mediumType": "phone", "characteristic": {"phoneNumber": row.phone}})
    if row.address:
        contact.append({"mediumType": "postalAddress", "characteristic": dict(row.address)})
    return {
        "id": row.id,
        "href": customer_href(row.id),
        "@type": "Customer",
        "name": row.name,
        "status": row.status,
        "contactMedium": contact,
        "vatId": row.vat_id,  # o2c extension: needed on B2B invoices (§14 UStG)
        "createdAt": iso(row.created_at),  # o2c extension
    }


# --- TMF666 billing account ---------------------------------------------------------------------


def billing_account(row: BillingAccount) -> dict[str, Any]:
    return {
        "id": row.id,
        "href": account_href(row.id),
        "@type": "BillingAccount",
        "name": row.name,
        "state": row.state,
        "accountType": "billing",
        "relatedParty": [customer_party(row.customer_id)],
        "defaultPaymentMethod": {"id": row.payment_method, "@referredType": "PaymentMethod"} if row.payment_method else None,
        "contact": [{"contactType": "billing", "contactMedium": [{"mediumType": "email", "characteristic": {"emailAddress": row.email}}]}]
        if row.email
        else [],
        # o2c extensions: how this account is billed.
        "billCycleDay": row.bill_cycle_day,
        "timeZone": row.timezone,
        "billingProfile": row.billing_profile,
        "currency": row.currency,
        "spendingLimit": None if row.spending_limit_cents is None else {
            "amount": money_cents(row.spending_limit_cents), "hardCap": row.spending_hard_cap},
        "invoiceHold": row.invoice_hold,
        # E-invoicing: a Leitweg-ID (BT-10) makes the bills' XML an XRechnung; the itemised bill (EVN) on request.
        "leitwegId": row.leitweg_id,
        "itemisedBill": row.itemised_bill,
        "itemisedBillMaskLast3": row.itemised_mask_last3,
        "billingCycleSpecification": {
            "@type": "BillingCycleSpecification",
            "billingDateShift": 0,
            "dateShift": row.bill_cycle_day,
            "frequency": "monthly" if row.cycle_anchor is None else "fixed",
            "timeZone": row.timezone,
            "cycleAnchor": iso(row.cycle_anchor),
        },
        "createdAt": iso(row.created_at),
    }


# --- TMF620 product offering --------------------------------------------------------------------


def product_offering(offering: ProductOffering, catalog: Catalog) -> dict[str, Any]:
    vat = {"taxCategory": "VAT", "taxRate": str(offering.vat_rate)}
    prices: list[dict[str, Any]] = [
        {
            "name": "Monthly fee",
            "priceType": "recurring",
            "recurringChargePeriodType": "month",
            "recurringChargePeriodLength": 1,
            "price": {"dutyFreeAmount": money(offering.monthly_fee)},
            "tax": [vat],
        },
        {"name": "Activation fee", "priceType": "oneTime", "price": {"dutyFreeAmount": money(offering.activation_fee)}, "tax": [vat]},
    ]
    # Usage rates have sub-cent precision (e.g. 0.005 per MB); they are shown exactly, not rounded.
    for name, rate, units in (
        ("Voice", offering.rates.voice_per_minute, "minute"),
        ("SMS", offering.rates.sms_per_message, "message"),
        ("Data", offering.rates.data_per_mb, "MB"),
    ):
        prices.append(
            {
                "name": f"{name} beyond allowance",
                "priceType": "usage",
                "unitOfMeasure": {"amount": 1, "units": units},
                "price": {"dutyFreeAmount": {"unit": catalog.currency, "value": str(rate)}},
                "tax": [vat],
            }
        )
    for name, amount, units in (
        ("Included voice", offering.allowances.voice_minutes, "minute"),
        ("Included SMS", offering.allowances.sms, "message"),
        ("Included data", offering.allowances.data_mb, "MB"),
    ):
        prices.append(
            {
                "name": name,
                "priceType": "allowance",  # o2c: units included per billing cycle, free of charge
                "recurringChargePeriodType": "month",
                "unitOfMeasure": {"amount": amount, "units": units},
                "price": {"dutyFreeAmount": money(Decimal(0))},
            }
        )
    return {
        "id": offering.id,
        "href": offering_href(offering.id),
        "@type": "ProductOffering",
        "name": offering.name,
        "description": offering.description,
        "version": offering.version,
        "lifecycleStatus": offering.lifecycle_status,
        "isBundle": False,
        "isSellable": offering.orderable,
        "catalogVersion": catalog.version,  # o2c extension
        "productOfferingPrice": prices,
    }


# --- TMF622 product order -----------------------------------------------------------------------


def product_order(row: ProductOrder, items: list[ProductOrderItem], steps: list[OrderStep], catalog: Catalog) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "href": order_href(row.id),
        "@type": "ProductOrder",
        "state": row.state,
        "orderDate": iso(row.order_date),
        "completionDate": iso(row.completion_date),
        "cancellationDate": iso(row.cancellation_date),
        "cancellationReason": row.cancellation_reason,
        "externalId": row.external_id,
        "relatedParty": [customer_party(row.customer_id)],
        "billingAccount": account_ref(row.billing_account_id),
        "productOrderItem": [_order_item(item, catalog) for item in sorted(items, key=lambda i: i.item_id)],
        "stateReason": row.state_reason,  # o2c extension: why the order is where it is
        "@o2cSteps": [{"step": s.step, "status": s.status, "detail": s.detail, "at": iso(s.at)} for s in steps],
    }
    if row.state_reason and row.state in ("failed", "partial", "rejected"):
        body["note"] = [{"text": row.state_reason, "author": "o2c"}]
    return body


def _order_item(item: ProductOrderItem, catalog: Catalog) -> dict[str, Any]:
    offering = catalog.offering(item.offering_id)
    body: dict[str, Any] = {
        "id": item.item_id,
        "action": item.action,
        "state": item.state,
        "productOffering": {
            "id": item.offering_id,
            "href": offering_href(item.offering_id),
            "name": offering.name if offering else None,
        },
    }
    if item.product_id:
        body["product"] = {"id": item.product_id, "href": product_href(item.product_id)}
    if item.msisdn:
        body["@o2cMsisdn"] = item.msisdn
    return body


def cancel_product_order(row: CancelProductOrder) -> dict[str, Any]:
    return {
        "id": row.id,
        "href": f"{ORDERING_API}/cancelProductOrder/{row.id}",
        "@type": "CancelProductOrder",
        "state": row.state,
        "cancellationReason": row.reason,
        "requestedCancellationDate": iso(row.requested_at),
        "effectiveCancellationDate": iso(row.effective_at),
        "productOrder": ref("ProductOrder", order_href(row.order_id), row.order_id),
    }


# --- TMF637 product -----------------------------------------------------------------------------


def product(row: Product) -> dict[str, Any]:
    return {
        "id": row.id,
        "href": product_href(row.id),
        "@type": "Product",
        "name": row.name,
        "status": row.status,
        "statusReason": row.status_reason,  # o2c extension
        "isBundle": False,
        "productOffering": {"id": row.offering_id, "href": offering_href(row.offering_id), "name": row.name, "version": row.offering_version},
        "startDate": iso(row.start_date),
        "terminationDate": iso(row.termination_date),
        "relatedParty": [customer_party(row.customer_id)],
        "billingAccount": account_ref(row.billing_account_id),
        "productCharacteristic": [{"name": "msisdn", "valueType": "string", "value": row.msisdn}] if row.msisdn else [],
        "productOrderItem": [
            {"orderItemId": row.order_item_id, "productOrderId": row.order_id, "productOrderHref": order_href(row.order_id), "orderItemAction": "add"}
        ],
        "catalogVersion": row.catalog_version,  # o2c extension
    }


# --- TMF635 usage -------------------------------------------------------------------------------

QUANTITY_NAME = {"voice": "duration", "sms": "messages", "data": "volume"}
QUANTITY_UNIT = {"voice": "second", "sms": "message", "data": "byte"}


def usage(row: UsageRecord) -> dict[str, Any]:
    amount = from_micros(row.amount_micros)
    return {
        "id": row.id,
        "href": f"{USAGE_API}/usage/{row.id}",
        "@type": "Usage",
        "usageDate": iso(row.event_time),
        "usageType": row.usage_type,
        "status": row.status,
        "usageCharacteristic": _usage_characteristics(row),
        "ratedProductUsage": [
            {
                "@type": "RatedProductUsage",
                "isBilled": row.invoice_id is not None,
                "ratingAmountType": "total",
                "ratingDate": iso(row.received_at),
                "usageRatingTag": "usage" if row.chargeable_units else "included",
                "isTaxExempt": False,
                "taxExcludedRatingAmount": money(amount),
                "productRef": {"id": row.product_id, "href": product_href(row.product_id)},
                # o2c extensions: the exact amount (rates go below a cent) and the unit split.
                "@o2cExactAmount": str(amount),
                "@o2cUnits": row.units,
                "@o2cAllowanceUnits": row.allowance_units,
                "@o2cChargeableUnits": row.chargeable_units,
                # o2c extensions: what priced it, so every amount can be explained and re-rated.
                "@o2cTariff": {"id": row.tariff_id, "version": row.tariff_version} if row.tariff_id else None,
                "@o2cDestinationName": row.destination_name,
                "@o2cZone": row.zone,
                "@o2cBand": row.band,
                "@o2cParts": row.parts or [],
            }
        ],
        "billingAccount": account_ref(row.billing_account_id),  # o2c extension
        "billingPeriodStart": iso(row.period_start),  # o2c extension
        "catalogVersion": row.catalog_version,  # o2c extension
        # o2c extension: when the retention job erased the called number, roaming country and exact time.
        "@o2cTrafficDataErasedAt": iso(row.traffic_erased_at) if row.traffic_erased_at else None,
        "customerBill": ref("CustomerBill", bill_href(row.invoice_id), row.invoice_id) if row.invoice_id else None,
    }


def _usage_characteristics(row: UsageRecord) -> list[dict[str, Any]]:
    found = [
        {"name": "msisdn", "valueType": "string", "value": row.msisdn},
        {"name": QUANTITY_NAME.get(row.usage_type, "quantity"), "valueType": "integer", "value": row.quantity},
    ]
    # Only what the record has, under the names POST accepts.
    for name, value in (("destination", row.destination), ("roamingCountry", row.roaming_country), ("disposition", row.disposition)):
        if value is not None:
            found.append({"name": name, "valueType": "string", "value": value})
    return found


def rejected_usage(row: RejectedUsage, status: str = "rejected") -> dict[str, Any]:
    """`status` is derived from the recycle attempts (services.usage_recycle): rejected or recycled."""
    return {
        "id": str(row.id),
        "href": f"{USAGE_API}/rejectedUsage/{row.id}",
        "@type": "RejectedUsage",
        "recordId": row.record_id,
        "status": status,
        "reasonCode": row.reason_code,
        "reason": row.reason,
        "payload": row.payload,
        "receivedAt": iso(row.received_at),
        # o2c extension: when the retention job erased the source line from the payload.
        "@o2cLineErasedAt": iso(row.line_erased_at) if row.line_erased_at else None,
    }


# --- TMF678 customer bill -----------------------------------------------------------------------

def customer_bill(row: Invoice, has_pdf: bool | None = None, has_xml: bool | None = None) -> dict[str, Any]:
    """`has_pdf` and `has_xml` are given by list queries, which do not load the document bytes.

    A credit note is a customerBill of category `creditNote` with negative amounts that names the bill it
    corrects (`creditedBill`). An onHold draft has no billNo and no billDate until it is approved."""
    if has_pdf is None:
        has_pdf = row.pdf is not None
    if has_xml is None:
        has_xml = row.xml is not None
    remaining = max(row.gross_cents - row.paid_cents, 0)
    credit_note = row.kind == "credit_note"
    return {
        "id": row.id,
        "href": bill_href(row.id),
        "@type": "CustomerBill",
        "billNo": row.number,
        "category": "creditNote" if credit_note else "normal",
        "runType": "onCycle" if row.kind == "cycle" else "offCycle",
        "billDate": iso(row.issued_at) if row.number is not None else None,
        "billingPeriod": {"startDateTime": iso(row.period_start), "endDateTime": iso(row.period_end)},
        # o2c extension: the period as account-local dates (end exclusive), as printed on the invoice.
        "localBillingPeriod": {"startDate": iso_date(row.local_period_start), "endDate": iso_date(row.local_period_end)},
        "paymentDueDate": iso(row.due_at) if not credit_note else None,
        "state": row.state,
        "amountDue": money_cents(row.gross_cents, row.currency),
        "taxExcludedAmount": money_cents(row.net_cents, row.currency),
        "taxIncludedAmount": money_cents(row.gross_cents, row.currency),
        "remainingAmount": money_cents(remaining, row.currency),
        "taxItem": [_tax_item(v, row.currency) for v in row.vat_breakdown],
        "billingAccount": account_ref(row.billing_account_id),
        "relatedParty": [customer_party(row.customer_id)],
        "billDocument": bill_documents(row, has_pdf, has_xml),
        "@lines": [_bill_line(line, row.currency) for line in row.lines],
        # o2c extensions: what a credit note corrects and why; the document's place in the tamper-evident chain.
        "creditedBill": ref("CustomerBill", bill_href(row.referenced_invoice_id), row.referenced_invoice_id, billNo=row.referenced_invoice_number)
        if row.referenced_invoice_id else None,
        "creditReason": row.reason if credit_note else None,
        "@o2cIntegrity": {"chainSeq": row.chain_seq, "previousHash": row.previous_hash, "contentHash": row.content_hash} if row.content_hash else None,
    }


def bill_documents(row: Invoice, has_pdf: bool, has_xml: bool = False) -> list[dict[str, Any]]:
    """TMF678 billDocument links of a bill: each rendition is served under the bill's href. The PDF
    (a Factur-X / ZUGFeRD PDF/A-3 with the XML inside) and, next to it, the EN 16931 CII XML alone
    (Factur-X EN 16931, or XRechnung 3.0 for an account with a Leitweg-ID)."""
    documents: list[dict[str, Any]] = []
    if row.number is None:
        return documents
    attachment_type = "creditNote" if row.kind == "credit_note" else "invoice"
    if has_pdf:
        documents.append({
            "@type": "Attachment",
            "attachmentType": attachment_type,
            "name": f"{row.number}.pdf",
            "url": f"{bill_href(row.id)}/document.pdf",
            "mimeType": "application/pdf",
        })
    if has_xml:
        documents.append({
            "@type": "Attachment",
            "attachmentType": attachment_type,
            "name": f"{row.number}.xml",
            "url": f"{bill_href(row.id)}/document.xml",
            "mimeType": "application/xml",
        })
    return documents


def bill_on_demand_href(request_id: str) -> str:
    return f"{BILL_API}/customerBillOnDemand/{request_id}"


def customer_bill_on_demand(row: BillOnDemand, customer_id: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "href": bill_on_demand_href(row.id),
        "@type": "CustomerBillOnDemand",
        "name": row.name,
        "description": row.description,
        "state": row.state,
        "stateReason": row.state_reason,  # o2c extension: why it was rejected or ended with an error
        "lastUpdate": iso(row.updated_at),
        "billingAccount": account_ref(row.billing_account_id),
        "relatedParty": customer_party(customer_id) if customer_id else None,
        "customerBill": ref("CustomerBill", bill_href(row.invoice_id), row.invoice_id) if row.invoice_id else None,
    }


def _tax_item(entry: dict[str, Any], currency: str) -> dict[str, Any]:
    # Stored as domain.invoicing.VatBreakdown in JSON mode: decimals are strings.
    return {
        "taxCategory": "VAT",
        "vatCategory": entry.get("vat_category"),  # o2c extension: EN 16931 category code (S, Z, E, AE, ...)
        "taxRate": str(entry.get("vat_rate")),
        "taxAmount": money(Decimal(str(entry.get("tax_amount", "0"))), currency),
        "taxableAmount": money(Decimal(str(entry.get("taxable_amount", "0"))), currency),  # o2c extension
    }


def _bill_line(line: dict[str, Any], currency: str) -> dict[str, Any]:
    """An invoice line (domain.invoicing.InvoiceLine) shaped like a TMF678 AppliedCustomerBillingRate."""
    unit_price = line.get("unit_price")
    return {
        "@type": "AppliedCustomerBillingRate",
        "lineNo": line.get("line_no"),
        "type": line.get("kind"),
        "name": line.get("description"),
        "quantity": str(line.get("quantity")) if line.get("quantity") is not None else None,
        "unit": line.get("unit"),
        # Unit prices can go below a cent; they are shown exactly as stored.
        "unitPrice": {"unit": currency, "value": str(unit_price)} if unit_price is not None else None,
        "taxExcludedAmount": money(Decimal(str(line.get("net_amount", "0"))), currency),
        "taxRate": str(line.get("vat_rate")) if line.get("vat_rate") is not None else None,
        "taxCategory": line.get("vat_category"),
        "periodCoverage": {"startDate": line.get("period_start"), "endDate": line.get("period_end")},
        "product": {"id": line["product_id"], "href": product_href(line["product_id"])} if line.get("product_id") else None,
    }


# --- TMF676 payment -----------------------------------------------------------------------------

PAYMENT_METHOD_TYPE = {"bank_transfer": "bankTransfer", "card": "card", "sepa_debit": "sepaDirectDebit"}


def payment(row: Payment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "href": f"{PAYMENT_API}/payment/{row.id}",
        "@type": "Payment",
        "correlatorId": row.correlator_id,
        "status": row.status,
        "statusDate": iso(row.created_at),
        "paymentDate": iso(row.created_at),
        "totalAmount": money_cents(row.amount_cents, row.currency),
        "account": account_ref(row.billing_account_id),
        "paymentMethod": {"@type": PAYMENT_METHOD_TYPE.get(row.method, row.method)},
        "description": row.description,
        "paymentItem": [{"item": ref("CustomerBill", bill_href(row.invoice_id), row.invoice_id)}] if row.invoice_id else [],
        "recordedBy": row.recorded_by,  # o2c extension: the API role that recorded a manual payment
    }
    if row.decline_code:
        body["declineCode"] = row.decline_code  # o2c extension
    return body


# --- o2c business events ------------------------------------------------------------------------


def business_event(row: BusinessEvent) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "@type": "BusinessEvent",
        "kind": row.kind,
        "message": row.message,
        "at": iso(row.at),
        "data": row.data,
        "customerId": row.customer_id,
        "billingAccountId": row.billing_account_id,
    }
