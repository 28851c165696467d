"""TMF678 CustomerBill: bills are issued by the billing workflow and never edited. Staff (finance) may
validate an onHold draft (PATCH state), issue a credit note against a bill, and ask for an off-cycle
bill (customerBillOnDemand). The account's invoice hold lives under TMF666 billingAccount."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, Security
from fastapi.responses import JSONResponse

from activities.invoice_issuer import CreditItem, CreditRequest
from api import tmf
from api.auth import Principal, allowed
from api.bill_schemas import CreditNoteCreate, CustomerBillOnDemandCreate, CustomerBillUpdate, InvoiceHoldUpdate
from api.deps import Ctx, PagingDep, get_context, list_response, reader, _api_key
from api.errors import ApiError
from domain.orders import FieldError
from services import bill_on_demand, bills, credit_notes

try:  # the key store's actors (api.deps.authenticate), so the audit entry names who did it
    from api.deps import authenticate as _authenticate
except ImportError:  # pragma: no cover - an API that knows roles only
    _authenticate = None

router = APIRouter(tags=["TMF678 Customer Bill"])

BILL = tmf.BILL_API

# Who may change bills. finance issues credit notes, validates held drafts and orders off-cycle bills;
# api.auth grants finance read on customerBill only, so it is named here as well.
BILL_WRITERS = frozenset({"finance"})


def _bill_writer(request: Request, key: str | None = Security(_api_key)) -> Principal:
    """A known key (else 401) whose role writes customerBill or is named in BILL_WRITERS (else 403)."""
    role = _authenticate(request, key).role if _authenticate is not None else get_context(request).keys.role_for(key)
    if role is None:
        raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
    if not (allowed(role, "customerBill", "write") or role in BILL_WRITERS):
        raise ApiError(403, "forbidden", f"role {role!r} may not write customerBill")
    return Principal(role=role)


BillWriter = Annotated[Principal, Depends(_bill_writer)]


def _hold_reader(request: Request, key: str | None = Security(_api_key)) -> Principal:
    """Whoever reads billing accounts or bills may see an account's invoice hold (crm, support, finance, admin)."""
    role = _authenticate(request, key).role if _authenticate is not None else get_context(request).keys.role_for(key)
    if role is None:
        raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
    if not (allowed(role, "billingAccount", "read") or allowed(role, "customerBill", "read")):
        raise ApiError(403, "forbidden", f"role {role!r} may not read billingAccount")
    return Principal(role=role)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="The same key with the same body returns the first result (200); with another body it is refused (409)."),
]


# --- customerBill ---------------------------------------------------------------------------------


@router.get(f"{BILL}/customerBill", dependencies=[reader("customerBill")])
async def list_bills(
    ctx: Ctx,
    page: PagingDep,
    billing_account_id: Annotated[str | None, Query(alias="billingAccount.id")] = None,
    state: Annotated[str | None, Query()] = None,
    category: Annotated[Literal["normal", "creditNote"] | None, Query(description="creditNote: credit notes only")] = None,
    credited_bill_id: Annotated[str | None, Query(alias="creditedBill.id", description="credit notes of this bill")] = None,
) -> JSONResponse:
    result = await ctx.tx(lambda s: bills.list_bills(s, billing_account_id=billing_account_id, state=state, limit=page.limit, offset=page.offset,
                                                     category=category, credited_bill_id=credited_bill_id))
    return list_response(result, lambda entry: tmf.customer_bill(entry[0], has_pdf=entry[1], has_xml=entry[2]))


@router.get(f"{BILL}/customerBill/{{bill_id}}", dependencies=[reader("customerBill")])
async def get_bill(bill_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.customer_bill(await ctx.tx(bills.get_bill, bill_id)))


@router.patch(f"{BILL}/customerBill/{{bill_id}}")
async def patch_bill(bill_id: str, body: CustomerBillUpdate, ctx: Ctx, principal: BillWriter) -> JSONResponse:
    """`{"state": "validated"}` approves an onHold draft: it gets its gapless number and issue date now, and
    the account's workflow e-mails and collects it. Everything else about a bill is read-only."""
    invoice = await bills.submit_approval(ctx.db_url, ctx.settings, ctx.workflows, bill_id, body.state, principal.role)
    return JSONResponse(tmf.customer_bill(invoice))


@router.get(
    f"{BILL}/customerBill/{{bill_id}}/document.pdf",
    dependencies=[reader("customerBill")],
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "the invoice or credit note PDF"}},
)
async def get_bill_document(bill_id: str, ctx: Ctx) -> Response:
    number, pdf = await ctx.tx(bills.bill_pdf, bill_id)
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{number}.pdf"'})


@router.get(
    f"{BILL}/customerBill/{{bill_id}}/document.xml",
    dependencies=[reader("customerBill")],
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "the EN 16931 e-invoice (CII XML: Factur-X EN 16931, "
                                                                        "or XRechnung 3.0 for an account with a Leitweg-ID)"}},
)
async def get_bill_xml(bill_id: str, ctx: Ctx) -> Response:
    number, xml = await ctx.tx(bills.bill_xml, bill_id)
    return Response(xml, media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{number}.xml"'})


@router.post(f"{BILL}/customerBill/{{bill_id}}/creditNote", status_code=201)
async def create_credit_note(bill_id: str, body: CreditNoteCreate, ctx: Ctx, principal: BillWriter,
                             idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """o2c extension: a credit note (customerBill of category creditNote) against the bill, in full (no
    `creditNoteItem`) or for the given lines, each fully or by a net amount. Needs an Idempotency-Key
    header or a `correlatorId`. 409 with code `credit_exceeds_remaining` when more is asked than is left."""
    key = idempotency_key or body.correlatorId
    if key is None:
        raise ApiError(422, "idempotency_key_required", "send an Idempotency-Key header (or a correlatorId) so a repeat cannot credit twice",
                       [FieldError(field="Idempotency-Key", code="required", message="an Idempotency-Key header or correlatorId is required")])
    items = tuple(CreditItem(line_no=i.lineNo, net_amount=i.taxExcludedAmount.value if i.taxExcludedAmount else None) for i in body.creditNoteItem)
    order = credit_notes.CreditNoteOrder(invoice_id=bill_id, key=key, request=CreditRequest(reason=body.reason, items=items), issued_by=principal.role)
    note, created = await credit_notes.submit_credit_note(ctx.db_url, ctx.settings, ctx.workflows, order)
    return JSONResponse(tmf.customer_bill(note), status_code=201 if created else 200, headers={"Location": tmf.bill_href(note.id)})


# --- customerBillOnDemand -------------------------------------------------------------------------


def _on_demand(entry: tuple[Any, str | None]) -> dict[str, Any]:
    return tmf.customer_bill_on_demand(*entry)


@router.post(f"{BILL}/customerBillOnDemand", status_code=201)
async def create_bill_on_demand(body: CustomerBillOnDemandCreate, ctx: Ctx, principal: BillWriter,
                                idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """An off-cycle bill, now, of everything not yet billed on the account (e.g. at termination). The
    account's workflow issues, e-mails and collects it; GET the request for its state and customerBill."""
    order = bill_on_demand.OnDemandOrder(billing_account_id=body.billingAccount.id, name=body.name, description=body.description,
                                         idempotency_key=idempotency_key, requested_by=principal.role)
    row, created = await bill_on_demand.submit_bill_on_demand(ctx.db_url, ctx.workflows, order)
    entry = await ctx.tx(bill_on_demand.get_request, row.id)
    return JSONResponse(_on_demand(entry), status_code=201 if created else 200, headers={"Location": tmf.bill_on_demand_href(row.id)})


@router.get(f"{BILL}/customerBillOnDemand", dependencies=[reader("customerBill")])
async def list_bills_on_demand(ctx: Ctx, page: PagingDep,
                               billing_account_id: Annotated[str | None, Query(alias="billingAccount.id")] = None) -> JSONResponse:
    result = await ctx.tx(lambda s: bill_on_demand.list_requests(s, billing_account_id=billing_account_id, limit=page.limit, offset=page.offset))
    return list_response(result, lambda row: tmf.customer_bill_on_demand(row))


@router.get(f"{BILL}/customerBillOnDemand/{{request_id}}", dependencies=[reader("customerBill")])
async def get_bill_on_demand(request_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(_on_demand(await ctx.tx(bill_on_demand.get_request, request_id)))


# --- the account's invoice hold (TMF666 billingAccount sub-resource) ---------------------------------


def _hold(account) -> dict[str, Any]:
    return {"billingAccount": tmf.account_ref(account.id), "invoiceHold": account.invoice_hold}


@router.get(f"{tmf.ACCOUNT_API}/billingAccount/{{account_id}}/invoiceHold", tags=["TMF666 Account"], dependencies=[Depends(_hold_reader)])
async def get_invoice_hold(account_id: str, ctx: Ctx) -> JSONResponse:
    """o2c extension: whether the account's cycle invoices wait as onHold drafts for staff approval."""
    return JSONResponse(_hold(await ctx.tx(bills.get_invoice_hold, account_id)))


@router.put(f"{tmf.ACCOUNT_API}/billingAccount/{{account_id}}/invoiceHold", tags=["TMF666 Account"])
async def put_invoice_hold(account_id: str, body: InvoiceHoldUpdate, ctx: Ctx, principal: BillWriter) -> JSONResponse:
    """`{"invoiceHold": true}`: from the next cycle close on, invoices wait as onHold drafts without a number
    until staff PATCH them to validated. Turning it off does not release drafts already held."""
    return JSONResponse(_hold(await ctx.tx(lambda s: bills.set_invoice_hold(s, account_id, body.invoiceHold, principal.role))))
