"""TMF620 ProductOffering, read-only, straight from the catalog file loaded at start."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader
from services.errors import NotFound
from services.query import Page

router = APIRouter(prefix=tmf.CATALOG_API, tags=["TMF620 Product Catalog"])


@router.get("/productOffering", dependencies=[reader("productOffering")])
async def list_offerings(
    ctx: Ctx, page: PagingDep, lifecycle_status: Annotated[str | None, Query(alias="lifecycleStatus")] = None
) -> JSONResponse:
    offerings = [o for o in ctx.catalog.offerings if lifecycle_status is None or o.lifecycle_status == lifecycle_status]
    window = Page(items=offerings[page.offset : page.offset + page.limit], total=len(offerings))
    return list_response(window, lambda o: tmf.product_offering(o, ctx.catalog))


@router.get("/productOffering/{offering_id}", dependencies=[reader("productOffering")])
async def get_offering(offering_id: str, ctx: Ctx) -> JSONResponse:
    offering = ctx.catalog.offering(offering_id)
    if offering is None:
        raise NotFound("productOffering", offering_id)
    return JSONResponse(tmf.product_offering(offering, ctx.catalog))
