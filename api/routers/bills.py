"""TMF678 CustomerBill: read-only for clients (bills are issued by the billing workflow)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader
from services import bills

router = APIRouter(prefix=tmf.BILL_API, tags=["TMF678 Customer Bill"])


@router.get("/customerBill", dependencies=[reader("customerBill")])
async def list_bills(
    ctx: Ctx,
    page: PagingDep,
    billing_account_id: Annotated[str | None, Query(alias="billingAccount.id")] = None,
    state: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    result = await ctx.tx(lambda s: bills.list_bills(s, billing_account_id=billing_account_id, state=state, limit=page.limit, offset=page.offset))
    return list_response(result, lambda entry: tmf.customer_bill(entry[0], has_pdf=entry[1]))


@router.get("/customerBill/{bill_id}", dependencies=[reader("customerBill")])
async def get_bill(bill_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.customer_bill(await ctx.tx(bills.get_bill, bill_id)))


@router.get(
    "/customerBill/{bill_id}/document.pdf",
    dependencies=[reader("customerBill")],
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "the invoice PDF"}},
)
async def get_bill_document(bill_id: str, ctx: Ctx) -> Response:
    number, pdf = await ctx.tx(bills.bill_pdf, bill_id)
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{number}.pdf"'})
