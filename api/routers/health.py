"""GET /health: public, for load balancers and operators. 200 when every dependency is up, else 503."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Ctx
from services.health import database_status

router = APIRouter(tags=["Health"])


def _dependency(up: bool, detail: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "up" if up else "down"}
    if detail:
        body["detail"] = detail
    return body


@router.get("/health")
async def health(ctx: Ctx) -> JSONResponse:
    db_up, db_detail = await run_in_threadpool(database_status, ctx.db_url)
    temporal_up, temporal_detail = await ctx.workflows.health()
    healthy = db_up and temporal_up
    return JSONResponse(
        {
            "status": "ok" if healthy else "degraded",
            "dependencies": {"database": _dependency(db_up, db_detail), "temporal": _dependency(temporal_up, temporal_detail)},
        },
        status_code=200 if healthy else 503,
    )
