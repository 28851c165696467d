"""The staff dunning API: who may pause / resume (support) and waive / retry (finance), reasons required,
every request audited with who and why before the episode's workflow is told, and completed with what
the workflow made of it. A real DunningWorkflow runs on the dev server with its real activities."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select
from temporalio.worker import Worker

from config.settings import Settings
from domain.dunning_timeline import DunningInput
from persistence.db import session_scope
from persistence.tables import BusinessEvent, DunningAction, DunningEpisode, Invoice
from tests.api.conftest import ACCOUNT_PATH, CRM, FINANCE, OSS, SUPPORT, signals_received
from tests.support.billing import eventually
from tests.support.dunning import dunning_activities
from tests.support.records import create_billing_account, create_customer
from worker import activities_of
from workflows.dunning import DunningWorkflow


def actor(app, key: str, role: str) -> str:
    """How the audit names the caller: the key's actor where the API has actor identities, else the role
    and a fingerprint of the key."""
    context = app.state.o2c
    if hasattr(context, "actor_for"):
        found = context.actor_for(key)
        return found.identity + (f" ({found.name})" if found.name else "")
    return f"{role}:{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@dataclass
class Episode:
    account_id: str
    workflow_id: str

    @property
    def href(self) -> str:
        return f"{ACCOUNT_PATH}/{self.account_id}/dunning"


@pytest.fixture
async def episode(db_url, temporal_env) -> AsyncIterator[Episode]:
    """An account with an overdue invoice and its dunning episode running on a real worker."""
    settings = Settings(database_url=db_url, task_queue=f"dunning-api-{uuid.uuid4()}", smtp_port=1, oss_base_url="http://127.0.0.1:1")
    customer_id = create_customer(db_url)
    account_id = create_billing_account(db_url, customer_id, payment_method="4000000000000002")
    due = datetime.now(timezone.utc) - timedelta(days=1)
    invoice_id = str(uuid.uuid4())
    with session_scope(db_url) as session:
        session.add(Invoice(id=invoice_id, number=f"INV-T-{uuid.uuid4().hex[:10]}", billing_account_id=account_id, customer_id=customer_id, state="sent",
                            period_start=due - timedelta(days=44), period_end=due - timedelta(days=14), local_period_start=(due - timedelta(days=44)).date(),
                            local_period_end=(due - timedelta(days=14)).date(), issued_at=due - timedelta(days=14), due_at=due, net_cents=10000,
                            vat_cents=1900, gross_cents=11900, lines=[], vat_breakdown=[]))
    activities = dunning_activities(settings)
    inp = DunningInput(billing_account_id=account_id, customer_id=customer_id, invoice_id=invoice_id, due_at=due)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(temporal_env.client, task_queue=settings.task_queue, workflows=[DunningWorkflow], activities=activities_of(activities),
                          activity_executor=executor, graceful_shutdown_timeout=timedelta(seconds=5)):
            handle = await temporal_env.client.start_workflow(DunningWorkflow.run, inp, id=inp.episode_id, task_queue=settings.task_queue)
            await eventually(lambda: _episode_row(db_url, inp.episode_id))
            try:
                yield Episode(account_id=account_id, workflow_id=inp.episode_id)
            finally:
                await handle.terminate(reason="test finished")


def _episode_row(db_url: str, episode_id: str) -> DunningEpisode | None:
    with session_scope(db_url) as session:
        return session.get(DunningEpisode, episode_id)


def audit(db_url: str, episode_id: str) -> list[DunningAction]:
    with session_scope(db_url) as session:
        return list(session.exec(select(DunningAction).where(DunningAction.episode_id == episode_id, DunningAction.key.startswith("staff:"))
                                 .order_by(DunningAction.id)))


def audit_status(db_url: str, command_id: str) -> str | None:
    with session_scope(db_url) as session:
        row = session.exec(select(DunningAction).where(DunningAction.key == f"staff:{command_id}")).first()
        return row.status if row else None


async def test_only_support_pauses_and_resumes_and_only_finance_waives_and_retries(client, db_url, temporal_client, episode):
    forbidden = [
        ("pause", CRM, {"reason": "x"}), ("pause", FINANCE, {"reason": "x"}), ("resume", FINANCE, {"reason": "x"}), ("resume", OSS, {"reason": "x"}),
        ("waiveFee", SUPPORT, {"reason": "x"}), ("waiveFee", CRM, {"reason": "x"}), ("retryPayment", SUPPORT, {"reason": "x"}),
        ("retryPayment", OSS, {"reason": "x"}),
    ]
    for action, headers, body in forbidden:
        response = await client.post(f"{episode.href}/{action}", headers=headers, json=body)
        assert response.status_code == 403, (action, headers, response.text)
        assert response.json()["code"] == "forbidden"
    # The role is checked before the body: a forbidden caller learns nothing about the request's shape.
    assert (await client.post(f"{episode.href}/pause", headers=CRM, json={})).status_code == 403
    assert (await client.post(f"{episode.href}/pause", json={"reason": "x"})).status_code == 401
    assert (await client.post(f"{episode.href}/pause", headers={"X-API-Key": "nope"}, json={"reason": "x"})).status_code == 401
    assert (await client.get(episode.href, headers=CRM)).status_code == 403
    assert (await client.get(episode.href, headers=OSS)).status_code == 403
    # Nothing was audited, nothing reached the workflow.
    assert audit(db_url, episode.workflow_id) == []
    assert await signals_received(temporal_client, episode.workflow_id) == []


async def test_a_pause_is_audited_then_applied_by_the_workflow_and_shown_to_support(app, client, db_url, episode):
    SUPPORT_ACTOR = actor(app, "dev-support-key", "support")
    until = (datetime.now(timezone.utc) + timedelta(days=10)).replace(microsecond=0)
    response = await client.post(f"{episode.href}/pause", headers={**SUPPORT, "Idempotency-Key": "pause-1"},
                                 json={"reason": "customer promised to pay on the 10th", "pauseType": "promiseToPay", "until": until.isoformat()})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["id"], body["kind"], body["actor"], body["reason"], body["status"], body["episodeId"]) == (
        "pause-1", "pause", SUPPORT_ACTOR, "customer promised to pay on the 10th", "requested", episode.workflow_id)
    assert body["data"] == {"pauseType": "promise_to_pay", "until": until.isoformat()}

    await eventually(lambda: audit_status(db_url, "pause-1") == "applied")
    view = (await client.get(episode.href, headers=SUPPORT)).json()
    assert view["episode"]["state"] == "active" and view["episode"]["id"] == episode.workflow_id
    status = view["status"]
    assert (status["state"], status["pause_kind"], status["pause_reason"]) == ("paused", "promise_to_pay", "customer promised to pay on the 10th")
    assert datetime.fromisoformat(status["paused_until"]) == until
    pause = next(a for a in view["actions"] if a["id"] == "pause-1")
    assert (pause["actor"], pause["status"]) == (SUPPORT_ACTOR, "applied")
    with session_scope(db_url) as session:
        told = session.exec(select(BusinessEvent).where(BusinessEvent.billing_account_id == episode.account_id,
                                                        BusinessEvent.kind == "dunning.staff.pause")).all()
    assert [e.message for e in told] == [
        f"Dunning paused (promise_to_pay) until {until:%Y-%m-%d %H:%M} UTC (by {SUPPORT_ACTOR}: customer promised to pay on the 10th)"]

    # The same key again is the same request; with another body it is refused.
    again = await client.post(f"{episode.href}/pause", headers={**SUPPORT, "Idempotency-Key": "pause-1"},
                              json={"reason": "customer promised to pay on the 10th", "pauseType": "promiseToPay", "until": until.isoformat()})
    assert again.status_code == 200 and again.json()["status"] == "applied"
    other = await client.post(f"{episode.href}/pause", headers={**SUPPORT, "Idempotency-Key": "pause-1"}, json={"reason": "something else"})
    assert other.status_code == 409

    resumed = await client.post(f"{episode.href}/resume", headers={**SUPPORT, "Idempotency-Key": "resume-1"}, json={"reason": "payment did not come"})
    assert resumed.status_code == 202
    await eventually(lambda: audit_status(db_url, "resume-1") == "applied")
    assert (await client.get(episode.href, headers=FINANCE)).json()["status"]["state"] == "active"


async def test_finance_waives_and_retries_and_the_workflow_says_what_came_of_it(app, client, db_url, episode):
    FINANCE_ACTOR = actor(app, "dev-finance-key", "finance")
    # No late fee was charged yet: the workflow refuses the waiver, and the audit record says so.
    waived = await client.post(f"{episode.href}/waiveFee", headers={**FINANCE, "Idempotency-Key": "waive-1"}, json={"reason": "goodwill"})
    assert waived.status_code == 202 and waived.json()["actor"] == FINANCE_ACTOR
    await eventually(lambda: audit_status(db_url, "waive-1") == "rejected")

    retried = await client.post(f"{episode.href}/retryPayment", headers={**FINANCE, "Idempotency-Key": "retry-1"},
                                json={"reason": "customer says the card works again"})
    assert retried.status_code == 202
    await eventually(lambda: audit_status(db_url, "retry-1") == "applied")
    rows = {a.key: a for a in audit(db_url, episode.workflow_id)}
    assert rows["staff:retry-1"].data["result"] == {"statuses": ["declined"]}
    assert (rows["staff:retry-1"].actor, rows["staff:retry-1"].reason) == (FINANCE_ACTOR, "customer says the card works again")
    assert rows["staff:waive-1"].data["result"] == {}


async def test_requests_need_a_reason_and_an_episode(client, db_url, episode):
    assert (await client.post(f"{episode.href}/pause", headers=SUPPORT, json={})).status_code == 422
    assert (await client.post(f"{episode.href}/pause", headers=SUPPORT, json={"reason": ""})).status_code == 422
    no_date = await client.post(f"{episode.href}/pause", headers=SUPPORT, json={"reason": "promised", "pauseType": "promiseToPay"})
    assert no_date.status_code == 422
    naive = await client.post(f"{episode.href}/pause", headers=SUPPORT, json={"reason": "promised", "pauseType": "promiseToPay",
                                                                              "until": "2030-01-01T00:00:00"})
    assert naive.status_code == 422
    assert audit(db_url, episode.workflow_id) == []

    customer_id = create_customer(db_url)
    quiet = create_billing_account(db_url, customer_id)
    assert (await client.post(f"{ACCOUNT_PATH}/{quiet}/dunning/pause", headers=SUPPORT, json={"reason": "x"})).status_code == 404
    assert (await client.get(f"{ACCOUNT_PATH}/{quiet}/dunning", headers=SUPPORT)).status_code == 404
    assert (await client.get(f"{ACCOUNT_PATH}/no-such-account/dunning", headers=SUPPORT)).status_code == 404
