"""TMF622 ProductOrder and CancelProductOrder."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader, writer
from api.schemas import CancelProductOrderCreate, ProductOrderCreate
from domain.orders import OrderItemRequest
from services import orders
from services.query import Page

router = APIRouter(prefix=tmf.ORDERING_API, tags=["TMF622 Product Ordering"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Optional. The same key with the same body returns the first order (200); with another body it is refused (409).",
    ),
]


@router.post("/productOrder", status_code=201, dependencies=[writer("productOrder")])
async def create_order(body: ProductOrderCreate, request: Request, ctx: Ctx, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    customer = next(((i, p) for i, p in enumerate(body.relatedParty) if p.role.lower() == "customer"), None)
    new = orders.NewOrder(
        customer_id=customer[1].id if customer else None,
        customer_field=f"relatedParty[{customer[0]}].id" if customer else "relatedParty",
        billing_account_id=body.billingAccount.id,
        items=[
            OrderItemRequest(item_id=i.id, action=i.action, offering_id=i.productOffering.id if i.productOffering else None) for i in body.productOrderItem
        ],
        external_id=body.externalId,
        request=await request.json(),  # the body as sent: what the Idempotency-Key is compared against
        idempotency_key=idempotency_key,
    )
    view, created = await orders.submit_order(
        ctx.db_url,
        ctx.catalog,
        ctx.workflows,
        new,
        oss_callback_wait_s=ctx.settings.oss_callback_wait_s,
        oss_total_timeout_s=ctx.settings.oss_total_timeout_s,
    )
    return JSONResponse(
        tmf.product_order(view.order, view.items, view.steps, ctx.catalog),
        status_code=201 if created else 200,
        headers={"Location": tmf.order_href(view.order.id)},
    )


@router.get("/productOrder", dependencies=[reader("productOrder")])
async def list_orders(
    ctx: Ctx,
    page: PagingDep,
    state: Annotated[str | None, Query()] = None,
    related_party_id: Annotated[str | None, Query(alias="relatedParty.id", description="customer id")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", description="same as relatedParty.id")] = None,
) -> JSONResponse:
    result: Page = await ctx.tx(
        lambda s: orders.list_orders(s, state=state, customer_id=related_party_id or customer_id, limit=page.limit, offset=page.offset)
    )
    return list_response(result, lambda v: tmf.product_order(v.order, v.items, v.steps, ctx.catalog))


@router.get("/productOrder/{order_id}", dependencies=[reader("productOrder")])
async def get_order(order_id: str, ctx: Ctx) -> JSONResponse:
    view = await ctx.tx(orders.load_order_view, order_id)
    return JSONResponse(tmf.product_order(view.order, view.items, view.steps, ctx.catalog))


@router.post("/cancelProductOrder", status_code=201, dependencies=[writer("productOrder")])
async def cancel_order(body: CancelProductOrderCreate, ctx: Ctx) -> JSONResponse:
    cancel, created = await orders.cancel_order(ctx.db_url, ctx.workflows, body.productOrder.id, body.cancellationReason)
    return JSONResponse(
        tmf.cancel_product_order(cancel),
        status_code=201 if created else 200,
        headers={"Location": f"{tmf.ORDERING_API}/cancelProductOrder/{cancel.id}"},
    )


@router.get("/cancelProductOrder", dependencies=[reader("productOrder")])
async def list_cancels(
    ctx: Ctx, page: PagingDep, order_id: Annotated[str | None, Query(alias="productOrder.id")] = None
) -> JSONResponse:
    result = await ctx.tx(lambda s: orders.list_cancels(s, order_id=order_id, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.cancel_product_order)


@router.get("/cancelProductOrder/{cancel_id}", dependencies=[reader("productOrder")])
async def get_cancel(cancel_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.cancel_product_order(await ctx.tx(orders.get_cancel, cancel_id)))
