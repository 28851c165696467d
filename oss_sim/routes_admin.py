"""Simulator-only endpoints for tests and demos: failure rules, inspection, reset, health."""

from fastapi import APIRouter, Response, status

from oss_sim.errors import SimError
from oss_sim.models import RuleCreate
from oss_sim.deps import StateDep

router = APIRouter(tags=["simulator"])


@router.post("/sim/rules", status_code=status.HTTP_201_CREATED)
async def add_rule(rule: RuleCreate, state: StateDep) -> dict[str, object]:
    return state.rules.add(rule).to_json()


@router.get("/sim/rules")
async def list_rules(state: StateDep) -> list[dict[str, object]]:
    return [rule.to_json() for rule in state.rules.rules]


@router.delete("/sim/rules", status_code=status.HTTP_204_NO_CONTENT)
async def clear_rules(state: StateDep) -> Response:
    state.rules.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sim/services/{msisdn}")
async def get_service(msisdn: str, state: StateDep) -> dict[str, object]:
    service = state.inventory.get(msisdn)
    if service is None:
        raise SimError(404, "notFound", f"no service with msisdn {msisdn!r}")
    return service.to_json()


@router.get("/sim/orders")
async def list_orders(state: StateDep) -> list[dict[str, object]]:
    return [order.to_tmf() for order in state.orders.values()]


@router.post("/sim/reset", status_code=status.HTTP_204_NO_CONTENT)
async def reset(state: StateDep) -> Response:
    state.reset()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
