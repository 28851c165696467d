"""API key administration (role admin): create a key (shown once), list, rotate (a new key; the old one
keeps working for a grace period) and revoke. Each change is audited in its own transaction."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field

from api import tmf
from api.auth import KeyStore, Principal
from api.deps import Ctx, PagingDep, audit_draft, list_response, reader, request_id, writer
from api.schemas import TmfModel
from domain.billing_cycle import require_utc
from persistence.tables import ApiKey
from services import api_keys

router = APIRouter(prefix="/admin/v1", tags=["Administration: API keys"])

Reason = Annotated[str | None, Field(default=None, max_length=1000)]


class ApiKeyCreate(TmfModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: str
    expiresAt: Annotated[datetime | None, AfterValidator(lambda v: None if v is None else require_utc(v))] = None
    reason: Reason = None


class ApiKeyRotate(TmfModel):
    gracePeriodSeconds: Annotated[int | None, Field(default=None, ge=0, le=90 * 24 * 3600)] = None
    reason: Reason = None


class ReasonIn(TmfModel):
    reason: Reason = None


def key_json(row: ApiKey, *, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "href": f"/admin/v1/apiKey/{row.id}",
        "name": row.name,
        "role": row.role,
        "prefix": row.prefix,
        "source": row.source,
        "createdAt": tmf.iso(row.created_at),
        "createdBy": row.created_by,
        "expiresAt": tmf.iso(row.expires_at),
        "revokedAt": tmf.iso(row.revoked_at),
        "replacedBy": row.replaced_by,
    }
    if key is not None:
        body["key"] = key  # shown once; o2c keeps only its SHA-256
    return body


def _forget(ctx) -> None:
    if isinstance(ctx.keys, KeyStore):
        ctx.keys.forget()


def _mark_recorded(request: Request) -> None:
    draft = audit_draft(request)
    if draft is not None:
        draft.recorded = True


@router.post("/apiKey", status_code=201)
async def create_key(body: ApiKeyCreate, request: Request, ctx: Ctx, principal: Principal = writer("apiKey")) -> JSONResponse:
    assert principal.actor is not None
    row, key = await ctx.tx(lambda s: api_keys.create_key(s, principal.actor, name=body.name, role=body.role, expires_at=body.expiresAt,
                                                          reason=body.reason, request_id=request_id(request)))
    _mark_recorded(request)
    return JSONResponse(key_json(row, key=key), status_code=201, headers={"Location": f"/admin/v1/apiKey/{row.id}"})


@router.get("/apiKey", dependencies=[reader("apiKey")])
async def list_keys(ctx: Ctx, page: PagingDep,
                    include_inactive: Annotated[bool, Query(alias="includeInactive", description="also revoked keys")] = False) -> JSONResponse:
    result = await ctx.tx(lambda s: api_keys.list_keys(s, include_inactive=include_inactive, limit=page.limit, offset=page.offset))
    return list_response(result, key_json)


@router.get("/apiKey/{key_id}", dependencies=[reader("apiKey")])
async def get_key(key_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(key_json(await ctx.tx(api_keys.get_key, key_id)))


@router.post("/apiKey/{key_id}/rotate", status_code=201)
async def rotate_key(key_id: str, request: Request, ctx: Ctx, body: ApiKeyRotate | None = None,
                     principal: Principal = writer("apiKey")) -> JSONResponse:
    """A new key with the same name and role. The old key keeps working for `gracePeriodSeconds`
    (default O2C_API_KEY_ROTATION_GRACE_S, 24 h), so clients can switch without an outage."""
    assert principal.actor is not None
    body = body or ApiKeyRotate()
    grace_s = body.gracePeriodSeconds if body.gracePeriodSeconds is not None else request.app.state.access.api_key_rotation_grace_s
    new, key, old = await ctx.tx(lambda s: api_keys.rotate_key(s, principal.actor, key_id, grace=timedelta(seconds=grace_s),
                                                               reason=body.reason, request_id=request_id(request)))
    _forget(ctx)
    _mark_recorded(request)
    return JSONResponse({**key_json(new, key=key), "replaces": key_json(old)}, status_code=201,
                        headers={"Location": f"/admin/v1/apiKey/{new.id}"})


@router.post("/apiKey/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, ctx: Ctx, body: ReasonIn | None = None,
                     principal: Principal = writer("apiKey")) -> JSONResponse:
    """The key stops working at once (in other API processes within O2C_API_KEY_CACHE_S seconds)."""
    assert principal.actor is not None
    reason = body.reason if body else None
    row = await ctx.tx(lambda s: api_keys.revoke_key(s, principal.actor, key_id, reason=reason, request_id=request_id(request)))
    _forget(ctx)
    _mark_recorded(request)
    return JSONResponse(key_json(row))
