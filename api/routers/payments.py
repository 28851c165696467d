"""TMF676 Payment: manual (bank transfer) payments booked by finance; all payments readable, each with what was
refunded or charged back from it (api.tmf_refund.payment_with_money_back)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlmodel import Session

from api import tmf
from api.auth import Principal
from api.deps import Ctx, PagingDep, list_response, reader, writer
from api.schemas import PaymentCreate
from api.tmf_refund import payment_with_money_back
from domain.money import to_minor
from persistence.tables import Payment
from services import payments, refunds
from services.query import Page

router = APIRouter(prefix=tmf.PAYMENT_API, tags=["TMF676 Payment"])


def _shown(session: Session, row: Payment) -> dict:
    return payment_with_money_back(row, refunds.money_back_of(session, [row.id]).get(row.id, []))


def _page_shown(session: Session, result: Page[Payment]) -> Page[dict]:
    money_back = refunds.money_back_of(session, [p.id for p in result.items])
    return Page(items=[payment_with_money_back(p, money_back.get(p.id, [])) for p in result.items], total=result.total)


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
    shown = await ctx.tx(_shown, payment)
    return JSONResponse(shown, status_code=201 if created else 200, headers={"Location": f"{tmf.PAYMENT_API}/payment/{payment.id}"})


@router.get("/payment", dependencies=[reader("payment")])
async def list_payments(
    ctx: Ctx, page: PagingDep, account_id: Annotated[str | None, Query(alias="account.id", description="billing account id")] = None
) -> JSONResponse:
    result = await ctx.tx(lambda s: _page_shown(s, payments.list_payments(s, billing_account_id=account_id, limit=page.limit, offset=page.offset)))
    return list_response(result, lambda body: body)


@router.get("/payment/{payment_id}", dependencies=[reader("payment")])
async def get_payment(payment_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(await ctx.tx(lambda s: _shown(s, payments.get_payment(s, payment_id))))
