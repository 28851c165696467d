"""o2c extension to TMF635: one rejected usage record with its recycle attempts, and recycling
(TMF635 status `recycled`): by id, or every record still rejected for a reason after it was fixed.

The list of rejected records is GET .../rejectedUsage in api.routers.usage."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field, field_validator, model_validator

from api import tmf
from api.auth import Principal
from api.deps import Ctx, reader, writer
from api.errors import CodedValueError
from api.schemas import NonEmpty, TmfModel
from persistence.tables import RejectedUsageRecycle
from services import usage_recycle
from services.errors import NotFound
from services.query import utcnow
from services.usage_ingest import MAX_BATCH
from services.usage_recycle import RecycleReport, RecycleResult, RejectedUsageView

router = APIRouter(prefix=tmf.USAGE_API, tags=["TMF635 Usage"])

# rejected_usage.id is an INTEGER: on PostgreSQL a larger number is not "not found" but a query error.
_MAX_ID = 2**31 - 1

# API spellings of the results (TMF enumerations are camelCase).
_RESULT_NAMES = {"accepted": "accepted", "duplicate": "duplicate", "not_charged": "notCharged", "rejected": "rejected",
                 "already_recycled": "alreadyRecycled", "not_found": "notFound"}

_COUNT_NAMES = {"accepted": "accepted", "duplicate": "duplicates", "not_charged": "notCharged", "rejected": "rejected",
                "already_recycled": "alreadyRecycled", "not_found": "notFound"}


def _rejected_id(value: Any) -> int | None:
    """A rejected record id as clients see it ("12") or as a number; None if it cannot be one."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= _MAX_ID else None


def _id_field(value: Any) -> int:
    number = _rejected_id(value)
    if number is None:
        raise CodedValueError("invalid_id", f"{value!r} is not a rejectedUsage id")
    return number


class RecycleRequest(TmfModel):
    """Either `ids`, or `reasonCode` (and optionally `since`): every record still rejected for that reason."""

    ids: list[Annotated[int, BeforeValidator(_id_field)]] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)
    reasonCode: NonEmpty | None = None
    since: datetime | None = None

    @field_validator("since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise CodedValueError("naive_datetime", "since needs a UTC offset, e.g. 2026-02-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_selection(self) -> RecycleRequest:
        if (self.ids is None) == (self.reasonCode is None):
            raise CodedValueError("invalid_selection", "give either ids, or reasonCode (and optionally since)")
        if self.ids is not None and self.since is not None:
            raise CodedValueError("invalid_selection", "since only goes with reasonCode")
        return self


@router.get("/rejectedUsage/{rejected_id}", dependencies=[reader("rejectedUsage")])
async def get_rejected_usage(rejected_id: str, ctx: Ctx) -> JSONResponse:
    number = _rejected_id(rejected_id)
    if number is None:
        raise NotFound("rejectedUsage", rejected_id)
    return JSONResponse(_view(await ctx.tx(usage_recycle.get_rejected, number)))


@router.post("/rejectedUsage/recycle")
async def recycle_rejected_usage(body: RecycleRequest, ctx: Ctx, principal: Principal = writer("rejectedUsage")) -> JSONResponse:
    now = utcnow()  # one instant for the whole request, also if the transaction is retried
    if body.ids is not None:
        ids = body.ids
        report = await ctx.tx(lambda s: usage_recycle.recycle(s, ids, ctx.catalog, ctx.profiles, principal.role, now))
    else:
        reason_code, since = body.reasonCode, body.since
        assert reason_code is not None
        report = await ctx.tx(lambda s: usage_recycle.recycle_by_filter(
            s, ctx.catalog, ctx.profiles, principal.role, reason_code=reason_code, since=since, now=now))
    return JSONResponse(_report(report, by_filter=body.ids is None))


def _href(rejected_id: int) -> str:
    return f"{tmf.USAGE_API}/rejectedUsage/{rejected_id}"


def _usage_ref(record_id: str | None) -> dict[str, str] | None:
    return None if record_id is None else {"id": record_id, "href": f"{tmf.USAGE_API}/usage/{record_id}"}


def _view(view: RejectedUsageView) -> dict[str, Any]:
    # reasonCode and reason stay the original ones (as in the list); current* say why it is still rejected.
    current = view.current_reason
    return {
        **tmf.rejected_usage(view.row),
        "status": view.status,
        "currentReasonCode": current[0] if current else None,
        "currentReason": current[1] if current else None,
        "recycleAttempt": [_attempt(a) for a in view.attempts],
    }


def _attempt(attempt: RejectedUsageRecycle) -> dict[str, Any]:
    return {
        "attemptedAt": tmf.iso(attempt.attempted_at),
        "outcome": _RESULT_NAMES.get(attempt.outcome, attempt.outcome),
        "reasonCode": attempt.new_reason_code,
        "reason": attempt.new_reason,
        "usage": _usage_ref(attempt.usage_record_id),
        "recycledBy": attempt.recycled_by,
    }


def _report(report: RecycleReport, *, by_filter: bool) -> dict[str, Any]:
    body: dict[str, Any] = {name: report.count(status) for status, name in _COUNT_NAMES.items()}  # type: ignore[arg-type]
    if by_filter:
        body["more"] = report.more  # more records matched than one request recycles: send it again
    body["results"] = [_result(r) for r in report.results]
    return body


def _result(result: RecycleResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": str(result.rejected_id), "href": _href(result.rejected_id), "result": _RESULT_NAMES[result.status],
                             "status": result.rejected_status, "usage": _usage_ref(result.record_id if result.status != "rejected" else None)}
    if result.status == "rejected":
        entry["recordId"], entry["reasonCode"], entry["reason"] = result.record_id, result.reason_code, result.reason
    return entry
