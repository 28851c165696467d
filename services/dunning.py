"""Dunning records: episodes, the action / audit log, and the staff requests behind the dunning API.

The DunningWorkflow writes through its activities (activities/dunning.py); the API writes staff requests
here and then signals the episode's workflow. Every write is keyed by a business key, so repeating it
changes nothing."""
from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from domain.dunning_timeline import (
    DUNNING_WORKFLOW,
    SIGNAL_BALANCE_SETTLED,
    BalanceSettled,
    DunningInput,
    DunningOutcome,
)
from persistence.tables import BillingAccount, DunningAction, DunningEpisode
from services.errors import Conflict, NotFound, Unavailable
from services.query import utcnow
from services.workflows import LazyWorkflows, is_not_found

log = logging.getLogger(__name__)

ACTIVE = "active"
SYSTEM = "system"
REQUESTED, APPLIED, REJECTED, FAILED = "requested", "applied", "rejected", "failed"


# --- episodes -------------------------------------------------------------------------------------------


def open_episode(session: Session, inp: DunningInput, *, at: datetime) -> tuple[DunningEpisode, bool]:
    row = session.get(DunningEpisode, inp.episode_id)
    if row is not None:
        return row, False
    row = DunningEpisode(id=inp.episode_id, billing_account_id=inp.billing_account_id, customer_id=inp.customer_id, invoice_id=inp.invoice_id,
                         segment=inp.segment, state=ACTIVE, started_at=at)
    session.add(row)
    session.flush()
    return row, True


def set_episode_level(session: Session, episode_id: str, level: str) -> bool:
    """Records the level reached; True when it changed."""
    row = session.get(DunningEpisode, episode_id)
    if row is not None and row.level != level:
        row.level = level
        session.add(row)
        return True
    return False


def close_episode(session: Session, episode_id: str, *, state: str, reason: str, level: str | None, at: datetime) -> tuple[DunningEpisode, bool]:
    """Ends the episode once; a repeat returns the row as it was closed."""
    row = session.get(DunningEpisode, episode_id)
    if row is None:
        raise NotFound("dunningEpisode", episode_id)
    if row.state != ACTIVE:
        return row, False
    row.state, row.end_reason, row.ended_at = state, reason, at
    if level:
        row.level = level
    session.add(row)
    return row, True


def active_episode(session: Session, billing_account_id: str) -> DunningEpisode | None:
    return session.exec(select(DunningEpisode).where(DunningEpisode.billing_account_id == billing_account_id, DunningEpisode.state == ACTIVE)
                        .order_by(col(DunningEpisode.started_at).desc())).first()


def episodes_of(session: Session, billing_account_id: str) -> list[DunningEpisode]:
    if session.get(BillingAccount, billing_account_id) is None:
        raise NotFound("billingAccount", billing_account_id)
    return list(session.exec(select(DunningEpisode).where(DunningEpisode.billing_account_id == billing_account_id)
                             .order_by(col(DunningEpisode.started_at).desc())))


# --- the action / audit log ----------------------------------------------------------------------------------


def record_action(session: Session, *, key: str, episode_id: str, billing_account_id: str, kind: str, at: datetime, level: str | None = None,
                  actor: str = SYSTEM, reason: str | None = None, status: str = "done", data: dict | None = None) -> tuple[DunningAction, bool]:
    """Writes the action once per key; a repeat returns the stored row."""
    row = session.exec(select(DunningAction).where(DunningAction.key == key)).first()
    if row is not None:
        return row, False
    row = DunningAction(key=key, episode_id=episode_id, billing_account_id=billing_account_id, kind=kind, level=level, actor=actor,
                        reason=reason, status=status, data=data or {}, at=at, applied_at=at if status != REQUESTED else None)
    session.add(row)
    session.flush()
    return row, True


def staff_key(command_id: str) -> str:
    return f"staff:{command_id}"


def request_staff_action(session: Session, *, command_id: str, episode: DunningEpisode, kind: str, actor: str, reason: str,
                         data: dict) -> tuple[DunningAction, bool]:
    """The audit record of a staff request, written before the workflow is told. The same command id
    with the same request returns the stored record; with another request it is a Conflict."""
    key = staff_key(command_id)
    existing = session.exec(select(DunningAction).where(DunningAction.key == key)).first()
    if existing is not None:
        asked = {k: v for k, v in (existing.data or {}).items() if k not in ("result", "error")}
        if (existing.episode_id, existing.kind, existing.actor, existing.reason, asked) != (episode.id, kind, actor, reason, data):
            raise Conflict(f"Idempotency-Key {command_id!r} was used for another request", code="idempotency_key_reused")
        return existing, False
    return record_action(session, key=key, episode_id=episode.id, billing_account_id=episode.billing_account_id, kind=kind, actor=actor,
                         reason=reason, status=REQUESTED, data=data, at=utcnow())


def settle_staff_action(session: Session, *, command_id: str, episode_id: str, billing_account_id: str, kind: str, actor: str, reason: str,
                        status: str, result: dict, at: datetime) -> DunningAction:
    """The workflow applied (or refused) a staff request: the audit record says so. A request that did not
    come through the API (e.g. a signal sent by hand) gets its audit record here."""
    row, _ = record_action(session, key=staff_key(command_id), episode_id=episode_id, billing_account_id=billing_account_id, kind=kind,
                           actor=actor, reason=reason, status=status, data={}, at=at)
    if row.status in (REQUESTED, FAILED) or row.applied_at is None:
        row.status, row.applied_at = status, at
        row.data = {**(row.data or {}), "result": result}
        session.add(row)
    return row


def mark_request_failed(session: Session, command_id: str, message: str) -> None:
    row = session.exec(select(DunningAction).where(DunningAction.key == staff_key(command_id))).first()
    if row is not None and row.status == REQUESTED:
        row.status = FAILED
        row.data = {**(row.data or {}), "error": message}
        session.add(row)


def actions_of(session: Session, episode_id: str) -> list[DunningAction]:
    return list(session.exec(select(DunningAction).where(DunningAction.episode_id == episode_id).order_by(col(DunningAction.at), col(DunningAction.id))))


# --- Temporal -----------------------------------------------------------------------------------------------


async def start_dunning_episode(client: Client, task_queue: str, inp: DunningInput) -> WorkflowHandle:
    """Starts the episode's workflow; a repeat (same account and first overdue invoice) finds the same one.
    For callers outside a workflow; the billing-account workflow starts it as a child instead."""
    try:
        return await client.start_workflow(DUNNING_WORKFLOW, inp, id=inp.episode_id, task_queue=task_queue,
                                           id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, result_type=DunningOutcome)
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(inp.episode_id, result_type=DunningOutcome)


async def notify_balance_settled(db_url: str, workflows: LazyWorkflows, billing_account_id: str, *, source: str, payment_id: str | None = None) -> bool:
    """For every payment path: tells the account's running dunning episode that its balance may be paid
    (the episode re-reads the balance before it ends). False when there is no episode or it is gone.
    Never raises for Temporal being down: the episode also finds the payment at its next step."""
    from services.query import run_tx

    episode = await run_tx(db_url, active_episode, billing_account_id)
    if episode is None:
        return False
    try:
        await workflows.call(lambda gateway: gateway.client.get_workflow_handle(episode.id).signal(
            SIGNAL_BALANCE_SETTLED, BalanceSettled(source=source, payment_id=payment_id)))
    except Unavailable as exc:
        log.warning("dunning episode %s not told of the payment (%s); it finds it at its next step", episode.id, exc.message)
        return False
    except RPCError as exc:
        if not is_not_found(exc):
            log.warning("signalling dunning episode %s failed: %s", episode.id, exc)
        return False
    return True
