"""Records the histories that tests/workflows/test_debit_polling_replay.py replays: a SEPA debit in `processing`
polled by each workflow that polls one (BillingAccountWorkflow for its own charges, DunningWorkflow for its
retries), settled by the poll, and still in flight after the 14 days with a failed look-up on the way.

Not collected by a normal run (the file name is not test_*.py). Re-record only on purpose, with the code whose
commands the saved histories must pin:
    .venv/bin/pytest tests/workflows/record_debit_histories.py -k sqlite -p no:cacheprovider
The histories were recorded on the code before the polling loops were folded into workflows/debit_polling.py."""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory

import worker
from adapters.payments.port import PaymentNotFound
from adapters.payments.sandbox import SandboxGateway
from persistence.tables import DunningAction
from tests.support.billing import advance_to, eventually, events, first_invoice, open_account, pin_clock, start_billing
from tests.workflows.test_dunning_sepa_polling import SEPA_SETTLES, worker_with
from tests.workflows.test_dunning_workflow import add_invoice, rows, start_episode
from workflows.messages import billing_account_workflow_id

# O2C_HISTORIES_DIR records elsewhere (e.g. to compare today's commands with the saved ones without overwriting them).
HISTORIES = Path(os.environ.get("O2C_HISTORIES_DIR") or Path(__file__).parent / "histories")
DAY = timedelta(days=1)


class FirstLookUpFails(SandboxGateway):
    """The sandbox, except that the first look-up of a payment says the gateway does not know it (a failed check)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.look_ups = 0

    def _fail_first(self) -> None:
        self.look_ups += 1
        if self.look_ups == 1:
            raise PaymentNotFound("no such payment (recorded failure)")

    async def retrieve(self, gateway_payment_id: str):
        self._fail_first()
        return await super().retrieve(gateway_payment_id)

    async def find_by_idempotency(self, idempotency_key: str, *, gateway_customer_id: str | None = None):
        self._fail_first()
        return await super().find_by_idempotency(idempotency_key, gateway_customer_id=gateway_customer_id)


async def save_runs(client: Client, workflow_id: str, name: str) -> None:
    """Saves every run of `workflow_id` (a continue-as-new chain), oldest first, as `<name>-run<n>.json`."""
    runs: list[WorkflowHistory] = []
    run_id = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.insert(0, history)
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            break
    HISTORIES.mkdir(parents=True, exist_ok=True)
    for n, history in enumerate(runs, start=1):
        (HISTORIES / f"{name}-run{n}.json").write_text(history.to_json())


@pytest.mark.parametrize(("name", "gateway", "days", "expected"), [
    ("billing_account-debit-settled", lambda: SandboxGateway(sepa_settle_delay_s=0), 1, {"payment.succeeded"}),
    ("billing_account-debit-overdue", lambda: FirstLookUpFails(sepa_settle_delay_s=10**9), 15, {"payment.check_failed", "payment.processing_overdue"}),
])
async def test_record_billing_account(name, gateway, days, expected, running_worker, make_settings, db_url, oss_http, ts_env, monkeypatch):
    """The account's first invoice is charged by SEPA debit (processing), then polled for `days` days."""
    monkeypatch.setattr(worker, "build_gateway", lambda *args, **kwargs: gateway_)
    gateway_ = gateway()
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=SEPA_SETTLES)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await advance_to(ts_env, invoice.issued_at + timedelta(days=days, hours=2))
        await eventually(lambda: expected <= {e.kind for e in events(db_url, account.account_id)})
        await save_runs(client, billing_account_workflow_id(account.account_id), name)
    assert gateway_.charges_created == 1


@pytest.mark.parametrize(("name", "gateway", "days", "checks"), [
    ("dunning-debit-settled", lambda: SandboxGateway(sepa_settle_delay_s=0), 3.5, []),  # found settled on day 4: the episode ends
    ("dunning-debit-overdue", lambda: FirstLookUpFails(sepa_settle_delay_s=10**9), 19, ["failed", "failed"]),  # the failed look, the 14-day limit
])
async def test_record_dunning(name, gateway, days, checks, make_settings, db_url, oss_http, ts_env, mail_sink):
    """A dunning episode whose first payment retry (day 3) is a SEPA debit (processing), polled up to day `days`."""
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=SEPA_SETTLES)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    async with worker_with(ts_env, settings, gateway()):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + days * DAY)
        if checks:
            await eventually(lambda: payment_checks(db_url, handle.id) == checks)
            await handle.terminate(reason="history recorded")
        else:
            assert (await handle.result()).outcome == "settled"
        await save_runs(ts_env.client, handle.id, name)


def payment_checks(db_url: str, episode_id: str) -> list[str]:
    return [a.status for a in rows(db_url, DunningAction, DunningAction.episode_id == episode_id) if a.kind == "payment_check"]
