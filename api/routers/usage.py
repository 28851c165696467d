"""TMF635 Usage: post one record or a batch; rated at once with the offering's tariff (services.usage_ingest).

Usage characteristics: msisdn (required), duration / messages / volume, destination (the called
number, E.164; needed for voice and SMS when the tariff prices destinations differently),
roamingCountry (ISO 3166 alpha-2, absent = at home), disposition (voice: ANSWERED, NO ANSWER,
BUSY, FAILED, CONGESTION; unanswered calls are stored at 0).

o2c extension: `id` is required on POST. It is the source system's record id and the
de-duplication key: a record whose id is known is a duplicate and never charged twice."""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import AppContext, Ctx, PagingDep, list_response, reader, writer
from api.errors import ApiError
from services import usage_ingest, usage_recycle
from services.errors import TooLarge
from services.gc_pause import fewer_gc_passes
from services.usage_ingest import MAX_BATCH, IngestReport, parse_tmf_usage

router = APIRouter(prefix=tmf.USAGE_API, tags=["TMF635 Usage"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": f"One TMF635 Usage object, or an array of at most {MAX_BATCH}. `id` (the source record id) is required.",
        "content": {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}},
    }
}


@router.post("/usage", status_code=201, dependencies=[writer("usage")], openapi_extra=_BODY_DOC)
async def post_usage(request: Request, ctx: Ctx) -> JSONResponse:
    # Parsed by hand: records are validated one by one so one bad record never sinks a batch,
    # and every invalid record is kept in rejectedUsage.
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if isinstance(body, list):
        if len(body) > MAX_BATCH:
            raise TooLarge(f"a batch holds at most {MAX_BATCH} records, got {len(body)}; split it", code="batch_too_large")
        with fewer_gc_passes():  # a batch's objects form no cycles: services.gc_pause
            report: IngestReport = await ctx.tx(_ingest(ctx), [parse_tmf_usage(r) for r in body], ctx.catalog, ctx.profiles)
            return JSONResponse(_batch_summary(report), status_code=200)

    report = await ctx.tx(_ingest(ctx), [parse_tmf_usage(body)], ctx.catalog, ctx.profiles)
    result = report.results[0]
    if result.status == "accepted":
        assert result.record is not None
        return JSONResponse(tmf.usage(result.record), status_code=201, headers={"Location": f"{tmf.USAGE_API}/usage/{result.record.id}"})
    if result.status == "duplicate" and result.record is not None:
        return JSONResponse(tmf.usage(result.record), status_code=200)
    raise ApiError(422, result.reason_code or "invalid_record", result.reason or "the usage record was rejected; it is kept in rejectedUsage", result.errors)


def _ingest(ctx: AppContext) -> Callable[..., IngestReport]:
    return partial(usage_ingest.ingest, tariffs=ctx.tariffs)


def _batch_summary(report: IngestReport) -> dict[str, Any]:
    results = []
    for r in report.results:
        entry: dict[str, Any] = {"id": r.record_id, "status": r.status}
        if r.status == "rejected":
            entry["reasonCode"], entry["reason"] = r.reason_code, r.reason
        results.append(entry)
    return {"accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected, "results": results}


@router.get("/usage", dependencies=[reader("usage")])
async def list_usage(
    ctx: Ctx,
    page: PagingDep,
    status: Annotated[str | None, Query()] = None,
    characteristic_msisdn: Annotated[str | None, Query(alias="usageCharacteristic.msisdn")] = None,
    msisdn: Annotated[str | None, Query(description="same as usageCharacteristic.msisdn")] = None,
    billing_account_id: Annotated[str | None, Query(alias="billingAccount.id")] = None,
) -> JSONResponse:
    result = await ctx.tx(
        lambda s: usage_ingest.list_usage(
            s, status=status, msisdn=characteristic_msisdn or msisdn, billing_account_id=billing_account_id, limit=page.limit, offset=page.offset
        )
    )
    return list_response(result, tmf.usage)


@router.get("/usage/{record_id}", dependencies=[reader("usage")])
async def get_usage(record_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.usage(await ctx.tx(usage_ingest.get_usage, record_id)))


@router.get("/rejectedUsage", dependencies=[reader("rejectedUsage")])
async def list_rejected_usage(
    ctx: Ctx,
    page: PagingDep,
    record_id: Annotated[str | None, Query(alias="recordId")] = None,
    reason_code: Annotated[str | None, Query(alias="reasonCode")] = None,
) -> JSONResponse:
    """o2c extension: usage records that could not be rated, with the reason and the payload as received."""
    def read(session):
        found = usage_ingest.list_rejected(session, record_id=record_id, reason_code=reason_code, limit=page.limit, offset=page.offset)
        return found, usage_recycle.statuses(session, [r.id for r in found.items])

    result, status = await ctx.tx(read)
    return list_response(result, lambda row: tmf.rejected_usage(row, status[row.id]))
