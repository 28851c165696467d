"""TMF641 listener: the OSS reports service order state changes here (role oss)."""
from __future__ import annotations

from fastapi import APIRouter, Response

from api import tmf
from api.deps import Ctx, writer
from api.schemas import ServiceOrderStateChangeEvent
from services import oss_callbacks

router = APIRouter(prefix=tmf.SERVICE_ORDERING_API, tags=["TMF641 Service Ordering listener"])


@router.post("/listener/serviceOrderStateChangeEvent", status_code=204, dependencies=[writer("ossCallback")])
async def service_order_state_change(body: ServiceOrderStateChangeEvent, ctx: Ctx) -> Response:
    """Routes activation events ("<order id>:<item id>") to their order workflow; other service
    orders are acknowledged and ignored. Repeats are harmless: the workflow keeps the first final state."""
    order = body.event.serviceOrder
    await oss_callbacks.service_order_changed(ctx.db_url, ctx.workflows, service_order_id=order.id, external_id=order.externalId, state=order.state)
    return Response(status_code=204)
