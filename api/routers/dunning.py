"""Staff steering of a billing account's dunning episode (o2c extension of TMF666):

    GET  {account}/dunning               the episode, its live status (level, next step and when) and its action log
    POST {account}/dunning/pause         support: a dispute, or a promise to pay until a date (auto-resume then)
    POST {account}/dunning/resume        support
    POST {account}/dunning/waiveFee      finance: waive the episode's late fees not yet invoiced (or one level's)
    POST {account}/dunning/retryPayment  finance: charge the overdue invoices now

Every request needs a reason and is audited with who asked (role and API key fingerprint) before the
episode's workflow is told; the workflow completes the audit record with what came of it. An optional
`Idempotency-Key` header makes a retried request the same request. The grants below are dunning's part
of the authorisation policy (api/auth.py has the resource grants)."""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Security
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, Field
from temporalio.service import RPCError

from api import tmf
from api.deps import Ctx, _api_key, get_context
from api.errors import ApiError
from api.schemas import NonEmpty, TmfModel
from domain.billing_cycle import require_utc
from domain.dunning_timeline import (
    QUERY_DUNNING_STATUS,
    SIGNAL_PAUSE,
    SIGNAL_RESUME,
    SIGNAL_RETRY_PAYMENT_NOW,
    SIGNAL_WAIVE_FEE,
    DunningStatus,
    PauseCommand,
    ResumeCommand,
    RetryPaymentCommand,
    StaffCommand,
    WaiveFeeCommand,
)
from persistence.tables import DunningAction, DunningEpisode
from services import dunning
from services.errors import NotFound, Unavailable
from services.query import run_tx
from services.workflows import is_not_found

try:  # the key store's actors (api.deps.authenticate), where this API has them
    from api.deps import authenticate as _authenticate
except ImportError:  # pragma: no cover - an API without actor identities: role and key fingerprint
    _authenticate = None

router = APIRouter(prefix=tmf.ACCOUNT_API, tags=["o2c Dunning"])

# Who may do what to a dunning episode: support holds it (disputes, promises), finance handles money.
DUNNING_GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"admin", "support", "finance"}),
    "pause": frozenset({"admin", "support"}),
    "resume": frozenset({"admin", "support"}),
    "waive_fee": frozenset({"admin", "finance"}),
    "retry_payment": frozenset({"admin", "finance"}),
}

Reason = Annotated[str, Field(min_length=1, max_length=1000)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                              description="the same key repeats the same request instead of making a new one")]


class Actor:
    """Who asked, as recorded in the audit: the key's actor identity where the API knows one (an API key's
    id, a console staff member), else the role and a short fingerprint of the key (never the key)."""

    def __init__(self, role: str, identity: str) -> None:
        self.role = role
        self.identity = identity


def _caller(request: Request, key: str | None) -> Actor | None:
    if _authenticate is not None:
        try:
            found = _authenticate(request, key)
        except ApiError:
            return None
        return Actor(found.role, found.identity + (f" ({found.name})" if getattr(found, "name", None) else ""))
    role = get_context(request).keys.role_for(key)
    return None if role is None or key is None else Actor(role, f"{role}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}")


def staff(action: str):
    """Dependency: a known key (else 401) whose role may take `action` on dunning (else 403)."""

    def check(request: Request, key: str | None = Security(_api_key)) -> Actor:
        caller = _caller(request, key)
        if caller is None:
            raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
        if caller.role not in DUNNING_GRANTS[action]:
            raise ApiError(403, "forbidden", f"role {caller.role!r} may not {action.replace('_', ' ')} in dunning")
        return caller

    return Depends(check)


def _aware(value: datetime) -> datetime:
    return require_utc(value)


class PauseIn(TmfModel):
    reason: Reason
    pauseType: Literal["dispute", "promiseToPay"] = "dispute"
    until: Annotated[datetime | None, AfterValidator(lambda v: None if v is None else _aware(v))] = None


class ReasonIn(TmfModel):
    reason: Reason


class WaiveFeeIn(TmfModel):
    reason: Reason
    level: NonEmpty | None = None


def _href(account_id: str) -> str:
    return f"{tmf.ACCOUNT_API}/billingAccount/{account_id}/dunning"


def _action(row: DunningAction) -> dict[str, Any]:
    return {"id": row.key.removeprefix("staff:"), "kind": row.kind, "level": row.level, "actor": row.actor, "reason": row.reason,
            "status": row.status, "at": row.at.isoformat(), "appliedAt": row.applied_at.isoformat() if row.applied_at else None, "data": row.data}


def _episode(row: DunningEpisode) -> dict[str, Any]:
    return {"id": row.id, "billingAccountId": row.billing_account_id, "invoiceId": row.invoice_id, "segment": row.segment, "state": row.state,
            "level": row.level, "startedAt": row.started_at.isoformat(), "endedAt": row.ended_at.isoformat() if row.ended_at else None,
            "endReason": row.end_reason}


def _current(session, account_id: str) -> DunningEpisode:
    episodes = dunning.episodes_of(session, account_id)
    active = [e for e in episodes if e.state == dunning.ACTIVE]
    if active:
        return active[0]
    raise NotFound("active dunning episode of billingAccount", account_id)


@router.get("/billingAccount/{account_id}/dunning")
async def get_dunning(account_id: str, ctx: Ctx, _actor: Actor = staff("read")) -> JSONResponse:
    """The account's latest episode with its live status (null while the workflow cannot be asked) and its action log."""
    def load(session):
        episodes = dunning.episodes_of(session, account_id)
        if not episodes:
            raise NotFound("dunning episode of billingAccount", account_id)
        return episodes[0], dunning.actions_of(session, episodes[0].id)

    episode, actions = await ctx.tx(load)
    status = None
    try:
        status = await ctx.workflows.call(lambda gateway: gateway.client.get_workflow_handle(episode.id).query(
            QUERY_DUNNING_STATUS, result_type=DunningStatus, rpc_timeout=timedelta(seconds=3)))
    except (Unavailable, RPCError):
        status = None
    return JSONResponse({"episode": _episode(episode), "status": status.model_dump(mode="json") if status else None,
                         "actions": [_action(a) for a in actions]})


async def _request(ctx, account_id: str, kind: str, signal: str, command: StaffCommand, data: dict[str, Any]) -> JSONResponse:
    """Audit first, then tell the workflow; a request the workflow never got is marked failed (503)."""
    def audit(session):
        episode = _current(session, account_id)
        row, created = dunning.request_staff_action(session, command_id=command.command_id, episode=episode, kind=kind, actor=command.actor,
                                                    reason=command.reason, data=data)
        return episode, row, created

    episode, row, created = await ctx.tx(audit)
    try:
        await ctx.workflows.call(lambda gateway: gateway.client.get_workflow_handle(episode.id).signal(signal, command))
    except (Unavailable, RPCError) as exc:
        message = exc.message if isinstance(exc, Unavailable) else str(exc)
        await run_tx(ctx.db_url, dunning.mark_request_failed, command.command_id, message)
        if isinstance(exc, RPCError) and is_not_found(exc):
            raise NotFound("running dunning workflow", episode.id) from exc
        raise Unavailable(f"the dunning episode could not be told: {message}", code="temporal_unavailable") from exc
    body = {**_action(row), "episodeId": episode.id, "href": _href(account_id)}
    return JSONResponse(body, status_code=202 if created else 200)


def _command_id(idempotency_key: str | None) -> str:
    return idempotency_key or str(uuid.uuid4())


@router.post("/billingAccount/{account_id}/dunning/pause", status_code=202)
async def pause(account_id: str, body: PauseIn, ctx: Ctx, idempotency_key: IdempotencyKey = None, actor: Actor = staff("pause")) -> JSONResponse:
    kind = "promise_to_pay" if body.pauseType == "promiseToPay" else "dispute"
    if kind == "promise_to_pay" and body.until is None:
        raise ApiError(422, "invalid_request", "a promise to pay needs the date it runs until ('until')")
    command = PauseCommand(command_id=_command_id(idempotency_key), actor=actor.identity, reason=body.reason, kind=kind, until=body.until)
    return await _request(ctx, account_id, "pause", SIGNAL_PAUSE, command,
                          {"pauseType": kind, "until": body.until.isoformat() if body.until else None})


@router.post("/billingAccount/{account_id}/dunning/resume", status_code=202)
async def resume(account_id: str, body: ReasonIn, ctx: Ctx, idempotency_key: IdempotencyKey = None, actor: Actor = staff("resume")) -> JSONResponse:
    command = ResumeCommand(command_id=_command_id(idempotency_key), actor=actor.identity, reason=body.reason)
    return await _request(ctx, account_id, "resume", SIGNAL_RESUME, command, {})


@router.post("/billingAccount/{account_id}/dunning/waiveFee", status_code=202)
async def waive_fee(account_id: str, body: WaiveFeeIn, ctx: Ctx, idempotency_key: IdempotencyKey = None,
                    actor: Actor = staff("waive_fee")) -> JSONResponse:
    command = WaiveFeeCommand(command_id=_command_id(idempotency_key), actor=actor.identity, reason=body.reason, level=body.level)
    return await _request(ctx, account_id, "waive_fee", SIGNAL_WAIVE_FEE, command, {"level": body.level})


@router.post("/billingAccount/{account_id}/dunning/retryPayment", status_code=202)
async def retry_payment(account_id: str, body: ReasonIn, ctx: Ctx, idempotency_key: IdempotencyKey = None,
                        actor: Actor = staff("retry_payment")) -> JSONResponse:
    command = RetryPaymentCommand(command_id=_command_id(idempotency_key), actor=actor.identity, reason=body.reason)
    return await _request(ctx, account_id, "retry_payment", SIGNAL_RETRY_PAYMENT_NOW, command, {})
