"""TMF629 Customer."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader, writer
from api.schemas import CustomerCreate
from services import customers

router = APIRouter(prefix=tmf.CUSTOMER_API, tags=["TMF629 Customer"])


@router.post("/customer", status_code=201, dependencies=[writer("customer")])
async def create_customer(body: CustomerCreate, ctx: Ctx) -> JSONResponse:
    email = phone = None
    address: dict = {}
    for medium in body.contactMedium:
        c = medium.characteristic
        if medium.mediumType == "email" and c.emailAddress:
            email = c.emailAddress
        elif medium.mediumType in ("phone", "telephoneNumber") and c.phoneNumber:
            phone = c.phoneNumber
        elif medium.mediumType == "postalAddress":
            address = {k: v for k, v in c.model_dump(include={"street1", "street2", "city", "postCode", "country"}).items() if v}
    row = await ctx.tx(lambda s: customers.create_customer(s, name=body.name, email=email, phone=phone, address=address, vat_id=body.vatId))
    return JSONResponse(tmf.customer(row), status_code=201, headers={"Location": tmf.customer_href(row.id)})


@router.get("/customer", dependencies=[reader("customer")])
async def list_customers(ctx: Ctx, page: PagingDep, name: Annotated[str | None, Query(description="exact name")] = None) -> JSONResponse:
    result = await ctx.tx(lambda s: customers.list_customers(s, name=name, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.customer)


@router.get("/customer/{customer_id}", dependencies=[reader("customer")])
async def get_customer(customer_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.customer(await ctx.tx(customers.get_customer, customer_id)))
