"""TMF641 Service Ordering endpoints (the subset o2c uses)."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import JSONResponse

from oss_sim.deps import TMF641_BASE_PATH, BaseHrefDep, ProcessorDep, StateDep
from oss_sim.errors import SimError
from oss_sim.models import CancelServiceOrderCreate, ServiceOrderCreate
from oss_sim.processing import OrderRejected

router = APIRouter(prefix=TMF641_BASE_PATH, tags=["TMF641"])


@router.post("/serviceOrder", status_code=status.HTTP_201_CREATED, response_model=None)
async def create_service_order(
    body: ServiceOrderCreate,
    processor: ProcessorDep,
    href: BaseHrefDep,
    response: Response,
    x_sim_behaviour: Annotated[str | None, Header(description="fail | reject | no-callback | unavailable | slow:<s>")] = None,
) -> dict[str, object] | JSONResponse:
    try:
        order, created = processor.submit(body, x_sim_behaviour, href)
    except OrderRejected as rejected:
        return JSONResponse(
            status_code=status.HTTP_400_BAD_REQUEST,
            content={
                "code": rejected.code,
                "reason": rejected.reason,
                "status": "400",
                "message": f"service order {rejected.order.id} is rejected",
                "serviceOrderId": rejected.order.id,
            },
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return order.to_tmf()


@router.get("/serviceOrder")
async def list_service_orders(
    state: StateDep,
    external_id: Annotated[str | None, Query(alias="externalId")] = None,
    order_state: Annotated[str | None, Query(alias="state")] = None,
) -> list[dict[str, object]]:
    return [
        order.to_tmf()
        for order in state.orders.values()
        if (external_id is None or order.external_id == external_id)
        and (order_state is None or order.state == order_state)
    ]


@router.get("/serviceOrder/{order_id}")
async def get_service_order(order_id: str, state: StateDep) -> dict[str, object]:
    order = state.orders.get(order_id)
    if order is None:
        raise SimError(404, "notFound", f"no service order {order_id!r}")
    return order.to_tmf()


@router.post("/cancelServiceOrder", status_code=status.HTTP_201_CREATED)
async def cancel_service_order(
    body: CancelServiceOrderCreate, processor: ProcessorDep, href: BaseHrefDep
) -> dict[str, object]:
    return processor.cancel(body.serviceOrder.id, body.cancellationReason, href)


@router.get("/cancelServiceOrder/{cancellation_id}")
async def get_cancellation(cancellation_id: str, state: StateDep) -> dict[str, object]:
    cancellation = state.cancellations.get(cancellation_id)
    if cancellation is None:
        raise SimError(404, "notFound", f"no cancelServiceOrder {cancellation_id!r}")
    return cancellation
