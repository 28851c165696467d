"""TMF event hubs: `POST/GET/DELETE {api}/hub` for TMF622, TMF637, TMF678, TMF676 and o2c's dunning
events (under accountManagement), plus o2c's failed-delivery extensions. See docs/events.md.

Who may: the crm and admin roles register, read and delete listeners and replay their deliveries;
support reads. (The hub is not a resource of api.auth's table: a listener is the CRM's own
integration, whichever API it listens to.)"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, Security
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, _api_key, get_context, list_response
from api.errors import ApiError
from api.schemas import EventSubscriptionInput
from persistence.tables import HubDelivery, HubListener
from services import hubs
from services.query import utcnow

# role -> what it may do at the hubs
HUB_GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "write"}),
    "crm": frozenset({"read", "write"}),
    "support": frozenset({"read"}),
}


def _hub_access(action: str) -> Any:
    def check(request: Request, key: str | None = Security(_api_key)) -> str:
        role = get_context(request).keys.role_for(key)
        if role is None:
            raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
        if action not in HUB_GRANTS.get(role, frozenset()):
            raise ApiError(403, "forbidden", f"role {role!r} may not {action} hub listeners")
        return role

    return Depends(check)


ListenerId = Annotated[str, Path(description="the listener (EventSubscription) id")]

_read = _hub_access("read")
_write = _hub_access("write")


def subscription(api: hubs.HubApi, row: HubListener, *, secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "href": f"{api.prefix}/hub/{row.id}",
        "@type": "EventSubscription",
        "callback": row.callback,
        "query": row.query,
        "createdAt": tmf.iso(row.created_at),  # o2c extension
    }
    if secret:
        # Shown once; o2c signs every delivery with it (X-O2C-Signature, see docs/events.md).
        body["secret"] = row.secret
    return body


def failed_delivery(api: hubs.HubApi, row: HubDelivery) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "href": f"{api.prefix}/hub/{row.listener_id}/failedDelivery/{row.id}",
        "@type": "FailedDelivery",  # o2c extension
        "status": row.status,
        "eventId": row.event_id,
        "eventType": row.event_type,
        "resource": row.resource_key,
        "sequence": row.sequence,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "lastStatusCode": row.last_status_code,
        "createdAt": tmf.iso(row.created_at),
        "failedAt": tmf.iso(row.failed_at),
        "replayedAt": tmf.iso(row.replayed_at),
        "event": row.body,
    }


def _router_for(api: hubs.HubApi) -> APIRouter:
    router = APIRouter(prefix=api.prefix, tags=[f"Event hub: {api.title}"])

    @router.post("/hub", status_code=201, summary=f"Register a listener for {api.title} events", name=f"{api.name}_register")
    async def register(body: EventSubscriptionInput, ctx: Ctx, role: str = _write) -> JSONResponse:
        row = await ctx.tx(lambda s: hubs.register_listener(s, api.name, body.callback, body.query, created_by=role, now=utcnow()))
        return JSONResponse(subscription(api, row, secret=True), status_code=201, headers={"Location": f"{api.prefix}/hub/{row.id}"})

    @router.get("/hub", summary="List the active listeners (o2c extension)", name=f"{api.name}_list", dependencies=[_read])
    async def list_(ctx: Ctx, page: PagingDep) -> JSONResponse:
        result = await ctx.tx(lambda s: hubs.list_listeners(s, api.name, limit=page.limit, offset=page.offset))
        return list_response(result, lambda row: subscription(api, row))

    @router.get("/hub/{listener_id}", summary="Read a listener", name=f"{api.name}_get", dependencies=[_read])
    async def get(listener_id: ListenerId, ctx: Ctx) -> JSONResponse:
        return JSONResponse(subscription(api, await ctx.tx(hubs.get_listener, api.name, listener_id)))

    @router.delete("/hub/{listener_id}", status_code=204, summary="Unregister a listener; what still waits for it is not sent",
                   name=f"{api.name}_delete", dependencies=[_write])
    async def delete(listener_id: ListenerId, ctx: Ctx) -> Response:
        await ctx.tx(lambda s: hubs.delete_listener(s, api.name, listener_id, utcnow()))
        return Response(status_code=204)

    @router.get("/hub/{listener_id}/failedDelivery", summary="Deliveries given up after the retry window (o2c extension)",
                name=f"{api.name}_failed", dependencies=[_read])
    async def failed(listener_id: ListenerId, ctx: Ctx, page: PagingDep) -> JSONResponse:
        result = await ctx.tx(lambda s: hubs.failed_deliveries(s, api.name, listener_id, limit=page.limit, offset=page.offset))
        return list_response(result, lambda row: failed_delivery(api, row))

    @router.post("/hub/{listener_id}/failedDelivery/replay", status_code=202, summary="Send every failed delivery again, in order (o2c extension)",
                 name=f"{api.name}_replay_all", dependencies=[_write])
    async def replay_all(listener_id: ListenerId, ctx: Ctx) -> JSONResponse:
        rows = await ctx.tx(lambda s: hubs.replay_all(s, api.name, listener_id, utcnow()))
        return JSONResponse({"replayed": len(rows), "deliveries": [failed_delivery(api, r) for r in rows]}, status_code=202)

    @router.post("/hub/{listener_id}/failedDelivery/{delivery_id}/replay", status_code=202,
                 summary="Send one failed delivery again (o2c extension)", name=f"{api.name}_replay", dependencies=[_write])
    async def replay(listener_id: ListenerId, delivery_id: int, ctx: Ctx) -> JSONResponse:
        row = await ctx.tx(lambda s: hubs.replay_delivery(s, api.name, listener_id, delivery_id, utcnow()))
        return JSONResponse(failed_delivery(api, row), status_code=202)

    return router


router = APIRouter()
for _api in hubs.HUB_APIS.values():
    router.include_router(_router_for(_api))
