"""PATCH roamingDataCap.optOut while Temporal is down: the opt-out is answered 200 and its signal to the account's
workflow (lift this cycle's roaming data barring) is owed by an outbox message written in the same transaction,
which the worker's relay delivers once Temporal is back. Nothing accepted is lost."""
from __future__ import annotations

from sqlmodel import select

from adapters.temporal.client import WorkflowGateway
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from api.app import create_app
from persistence.db import session_scope
from persistence.tables import OutboxMessage
from services.billing_accounts import ROAMING_OPT_OUT_TOPIC
from tests.api.conftest import ACCOUNT_PATH, CRM, TASK_QUEUE, api_settings, client_for, make_account, signals_received
from workflows.messages import SIGNAL_ROAMING_DATA_CONTINUE, billing_account_workflow_id


def _messages(db_url: str, account_id: str) -> list[OutboxMessage]:
    with session_scope(db_url) as session:
        return [m for m in session.exec(select(OutboxMessage).where(OutboxMessage.topic == ROAMING_OPT_OUT_TOPIC).order_by(OutboxMessage.id))
                if m.payload.get("billingAccountId") == account_id]


async def test_an_opt_out_with_temporal_down_reaches_the_workflow_through_the_outbox(db_url, temporal_env, temporal_client, unused_tcp_port):
    app = create_app(api_settings(db_url, temporal_address=f"127.0.0.1:{unused_tcp_port}"))  # nothing listens there
    async with client_for(app) as api:
        account = await make_account(api)
        href = f"{ACCOUNT_PATH}/{account['id']}"
        opted = await api.patch(href, headers=CRM, json={"roamingDataCap": {"optOut": True}})
        assert opted.status_code == 200, opted.text
        assert opted.json()["roamingDataCap"] == {"optOut": True}
        again = await api.patch(href, headers=CRM, json={"roamingDataCap": {"optOut": True}})  # no change: nothing more owed
        assert again.status_code == 200
    [message] = _messages(db_url, account["id"])
    assert message.delivered_at is None and message.payload["reason"] == "opted out of the roaming data limit"

    # Temporal is back and the account's workflow runs (a stand-in: no worker, so the signal stays in its history).
    workflow_id = billing_account_workflow_id(account["id"])
    await temporal_client.start_workflow("BillingAccountWorkflow", id=workflow_id, task_queue=TASK_QUEUE)
    handler = workflow_handlers(WorkflowGateway(temporal_env.client, TASK_QUEUE))[ROAMING_OPT_OUT_TOPIC]
    assert await OutboxRelay(db_url, {ROAMING_OPT_OUT_TOPIC: handler}).deliver_due() >= 1
    signals = [p[0] for name, p in await signals_received(temporal_client, workflow_id) if name == SIGNAL_ROAMING_DATA_CONTINUE]
    assert signals == [{"request_id": message.payload["requestId"], "reason": "opted out of the roaming data limit"}]
    [message] = _messages(db_url, account["id"])
    assert message.delivered_at is not None
