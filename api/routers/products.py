"""TMF637 Product inventory: reads, and staff suspend / restore of a product (PATCH status).

PATCH {"status": "suspended" | "active", "statusReason": "..."} starts the product's ServiceStateWorkflow
(id `service-state-<product>`), which changes the OSS barring and the product status together and records
who and why (docs/service-state.md). The answer is 200 with the product once the change is made, or 202
with the product as it still is when the OSS is slow or away (the workflow keeps retrying)."""
from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError

from api import tmf
from api.deps import CurrentActor, Ctx, PagingDep, audit_draft, list_response, reader, request_id, writer
from api.errors import ApiError, CodedValueError
from api.schemas import TmfModel
from services import products
from services import service_state
from services.errors import Conflict

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


# How long a PATCH waits for the OSS before answering 202 (the change goes on in the workflow).
SERVICE_STATE_WAIT_S = 10.0


class ProductStatusPatch(TmfModel):
    status: str
    statusReason: Annotated[str, Field(min_length=1, max_length=1000)]

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in ("suspended", "active"):
            raise CodedValueError("invalid_status", f"status must be 'suspended' (suspend the service) or 'active' (restore it), not {value!r}")
        return value

    @field_validator("statusReason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise CodedValueError("required", "statusReason must say why")
        return value.strip()


@router.patch("/product/{product_id}", dependencies=[writer("product")])
async def patch_product(product_id: str, body: ProductStatusPatch, ctx: Ctx, actor: CurrentActor, request: Request) -> JSONResponse:
    """Suspends or restores a product's service (support, admin). Every other field of a product is set by its order."""
    from activities.service_state import ServiceStateRequest
    from workflows.service_state import SERVICE_STATE_WORKFLOW, service_state_workflow_id

    draft = audit_draft(request)
    if draft is not None:  # the request's own entry; the change's entry (before/after) is written when it is made
        draft.reason = draft.reason or body.statusReason
    product, plan = await ctx.tx(service_state.check_request, product_id, body.status)
    if plan == service_state.ALREADY:
        return JSONResponse(tmf.product(product))
    req = ServiceStateRequest(product_id=product_id, target=body.status, reason=body.statusReason, request_id=request_id(request) or str(uuid.uuid4()),
                              actor_kind=actor.kind, actor_id=actor.id, actor_role=actor.role, actor_name=actor.name)

    async def start(gateway):
        try:
            return await gateway.client.start_workflow(SERVICE_STATE_WORKFLOW, req, id=service_state_workflow_id(product_id),
                                                       task_queue=gateway.task_queue)
        except WorkflowAlreadyStartedError:
            raise Conflict(f"a suspend or restore of product {product_id} is still in progress; try again when it is done",
                           code="service_state_change_in_progress") from None

    handle = await ctx.workflows.call(start)
    try:
        await asyncio.wait_for(handle.result(), SERVICE_STATE_WAIT_S)
    except asyncio.TimeoutError:
        return JSONResponse(tmf.product(await ctx.tx(products.get_product, product_id)), status_code=202)
    except WorkflowFailureError as failure:
        raise ApiError(502, "oss_refused", f"the OSS refused the change of product {product_id}: {failure.cause or failure}") from None
    return JSONResponse(tmf.product(await ctx.tx(products.get_product, product_id)))
