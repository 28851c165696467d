"""TMF676 Payment: manual (bank transfer) payments booked by finance; all payments readable."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import tmf
from api.auth import Principal
from api.deps import Ctx, PagingDep, list_response, reader, writer
from api.schemas import PaymentCreate
from domain.money import to_minor
from services import payments

router = APIRouter(prefix=tmf.PAYMENT_API, tags=["TMF676 Payment"])


@router.post("/payment", status_code=201)
async def record_payment(body: PaymentCreate, ctx: Ctx, principal: Principal = writer("payment")) -> JSONResponse:
    request = payments.ManualPayment(
        correlator_id=body.correlatorId,
        billing_account_id=body.account.id,
        amount_cents=to_minor(body.totalAmount.value),
        currency=body.totalAmount.unit,
        description=body.description,
        invoice_id=body.paymentItem[0].item.id if body.paymentItem else None,
        recorded_by=principal.role,
    )
    payment, created = await payments.submit_manual_payment(ctx.db_url, ctx.workflows, request)
    return JSONResponse(tmf.payment(payment), status_code=201 if created else 200, headers={"Location": f"{tmf.PAYMENT_API}/payment/{payment.id}"})


@router.get("/payment", dependencies=[reader("payment")])
async def list_payments(
    ctx: Ctx, page: PagingDep, account_id: Annotated[str | None, Query(alias="account.id", description="billing account id")] = None
) -> JSONResponse:
    result = await ctx.tx(lambda s: payments.list_payments(s, billing_account_id=account_id, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.payment)


@router.get("/payment/{payment_id}", dependencies=[reader("payment")])
async def get_payment(payment_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.payment(await ctx.tx(payments.get_payment, payment_id)))
