"""GET {customerManagement}/customer/{id}/audit: the customer's audit entries, newest first (o2c
extension; staff roles: support, finance, admin)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader
from services import audit, customers

router = APIRouter(prefix=tmf.CUSTOMER_API, tags=["TMF629 Customer"])


@router.get("/customer/{customer_id}/audit", dependencies=[reader("audit")])
async def customer_audit(customer_id: str, ctx: Ctx, page: PagingDep) -> JSONResponse:
    """Who did what to the customer's resources (customer, accounts, orders, bills, payments), when and why."""

    def read(session):
        customers.get_customer(session, customer_id)  # 404 for an unknown customer
        return audit.customer_entries(session, customer_id, limit=page.limit, offset=page.offset)

    return list_response(await ctx.tx(read), audit.as_json)
