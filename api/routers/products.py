"""TMF637 Product inventory (read-only)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader
from services import products

router = APIRouter(prefix=tmf.INVENTORY_API, tags=["TMF637 Product Inventory"])


@router.get("/product", dependencies=[reader("product")])
async def list_products(
    ctx: Ctx,
    page: PagingDep,
    status: Annotated[str | None, Query()] = None,
    related_party_id: Annotated[str | None, Query(alias="relatedParty.id", description="customer id")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", description="same as relatedParty.id")] = None,
    billing_account_id: Annotated[str | None, Query(alias="billingAccount.id")] = None,
) -> JSONResponse:
    result = await ctx.tx(
        lambda s: products.list_products(
            s, status=status, customer_id=related_party_id or customer_id, billing_account_id=billing_account_id, limit=page.limit, offset=page.offset
        )
    )
    return list_response(result, tmf.product)


@router.get("/product/{product_id}", dependencies=[reader("product")])
async def get_product(product_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.product(await ctx.tx(products.get_product, product_id)))
