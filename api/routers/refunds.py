"""TMF676 Refund: refunds given by finance (through the gateway for card and SEPA payments, booked by hand
for bank transfers and credit), chargebacks recorded by finance (a bank's SEPA return) and those Stripe
reports (services.disputes). Writing needs the payment write grant (finance, admin); reading the read grant."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api import tmf
from api.auth import Principal
from api.deps import Ctx, Gateway, PagingDep, audit_draft, list_response, reader, request_id, writer
from api.errors import ApiError
from api.refund_schemas import RefundCreate
from api.tmf_refund import refund as refund_body, refund_href
from domain.money import to_minor
from domain.orders import FieldError
from services import refunds

router = APIRouter(prefix=tmf.PAYMENT_API, tags=["TMF676 Payment"])

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="The same key with the same body returns the first result (200); with another body it is refused (409)."),
]


@router.post("/refund", status_code=201, responses={
    409: {"description": "refund_exceeds_payment, payment_not_refundable, idempotency_key_reused, chargeback_reported_by_gateway"},
    422: {"description": "idempotency_key_required, unknown_payment, payment_account_mismatch, currency_mismatch"}})
async def create_refund(body: RefundCreate, request: Request, ctx: Ctx, gateway: Gateway, principal: Principal = writer("payment"),
                        idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A refund of (part of) a succeeded payment, or (@type Chargeback) a chargeback a bank reported. Never more
    than the payment minus earlier refunds and chargebacks. Needs an Idempotency-Key header or a correlatorId."""
    key = idempotency_key or body.correlatorId
    if key is None:
        raise ApiError(422, "idempotency_key_required", "send an Idempotency-Key header (or a correlatorId) so a repeat cannot refund twice",
                       [FieldError(field="Idempotency-Key", code="required", message="an Idempotency-Key header or correlatorId is required")])
    chargeback = body.type_ == "Chargeback"
    fee = body.chargebackFee.value if body.chargebackFee is not None else Decimal(ctx.settings.chargeback_fee)
    order = refunds.RefundOrder(
        key=key, payment_id=body.payment.id, billing_account_id=body.account.id, amount_cents=to_minor(body.totalAmount.value),
        currency=body.totalAmount.unit, reason=body.reason, recorded_by=principal.role,
        kind=refunds.CHARGEBACK if chargeback else refunds.REFUND, fee_cents=to_minor(fee) if chargeback else 0,
        actor=principal.actor, request_id=request_id(request),
    )
    row, created = await refunds.submit_refund(ctx.db_url, gateway, ctx.workflows, order)
    draft = audit_draft(request)
    if created and draft is not None and principal.actor is not None:
        draft.recorded = True  # recorded in the refund's own transaction, with its after
    return JSONResponse(refund_body(row), status_code=201 if created else 200, headers={"Location": refund_href(row.id)})


@router.get("/refund", dependencies=[reader("payment")])
async def list_refunds(
    ctx: Ctx, page: PagingDep,
    account_id: Annotated[str | None, Query(alias="account.id", description="billing account id")] = None,
    payment_id: Annotated[str | None, Query(alias="payment.id", description="payment id")] = None,
) -> JSONResponse:
    result = await ctx.tx(lambda s: refunds.list_refunds(s, billing_account_id=account_id, payment_id=payment_id,
                                                         limit=page.limit, offset=page.offset))
    return list_response(result, refund_body)


@router.get("/refund/{refund_id}", dependencies=[reader("payment")])
async def get_refund(refund_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(refund_body(await ctx.tx(refunds.get_refund, refund_id)))
