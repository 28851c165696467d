"""Collection outcomes beyond succeeded/declined on the billing-account workflow: a SEPA debit in `processing`
(settled later by the payment_received signal, or found by the daily polling fallback), an `unknown` outcome
reconciled by idempotency key without a second charge, and `requires_action` (3-D Secure).

The worker's gateway is a SandboxGateway this test holds (worker.build_gateway is replaced), so "no second
charge" is asserted on the gateway's own record of charges (`charges_created`)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

import worker
from adapters.payments.port import PaymentNotFound
from adapters.payments.sandbox import SandboxGateway
from adapters.temporal.client import WorkflowGateway
from domain.payments import ChargeRequest, PaymentOutcome
from persistence.db import session_scope
from persistence.tables import DunningEpisode, HubEvent, Payment
from services.payments import advance_payment
from tests.support.billing import advance_to, eventually, events, first_invoice, invoices, mails_to, open_account, payments, pin_clock, start_billing
from workflows.messages import PaymentReceived

SEPA_SETTLES = "sepa:DE89370400440532013000"
THREE_DS_CARD = "4000002760003184"  # pm_card_authenticationRequired: off-session charges need the customer
WORKING_CARD = "4242424242424242"


class LossyGateway(SandboxGateway):
    """The sandbox, except that the answer to the first charge is lost (the charge did happen: status unknown),
    and the first look-up by idempotency key does not see it yet (Stripe's search lags)."""

    def __init__(self, *, lookups_missing: int) -> None:
        super().__init__()
        self.charge_calls: list[str] = []
        self.lookups: list[str] = []
        self._lookups_missing = lookups_missing

    async def charge(self, req: ChargeRequest) -> PaymentOutcome:
        outcome = await super().charge(req)
        self.charge_calls.append(req.idempotency_key)
        if len(self.charge_calls) == 1:
            return outcome.model_copy(update={"status": "unknown"})
        return outcome

    async def find_by_idempotency(self, idempotency_key: str, *, gateway_customer_id: str | None = None):
        self.lookups.append(idempotency_key)
        if len(self.lookups) <= self._lookups_missing:
            return None
        return await super().find_by_idempotency(idempotency_key, gateway_customer_id=gateway_customer_id)


@pytest.fixture
def use_gateway(monkeypatch):
    def install(gateway):
        monkeypatch.setattr(worker, "build_gateway", lambda *args, **kwargs: gateway)
        return gateway

    return install


def _episodes(db_url: str, account_id: str) -> list[DunningEpisode]:
    with session_scope(db_url) as session:
        return list(session.exec(select(DunningEpisode).where(DunningEpisode.billing_account_id == account_id)))


def _payment_events(db_url: str, payment_id: str) -> list[tuple[str, str]]:
    with session_scope(db_url) as session:
        rows = session.exec(select(HubEvent).where(HubEvent.resource_key == f"payment:{payment_id}").order_by(HubEvent.sequence)).all()
        return [(r.event_type, r.state) for r in rows]


async def test_a_sepa_debit_in_processing_is_kept_and_settled_later_by_the_signal(running_worker, make_settings, db_url, oss_http, ts_env, use_gateway):
    gateway = use_gateway(SandboxGateway(sepa_settle_delay_s=10**9))  # never settles by itself: only the "webhook" settles it
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-l"], activated_at=start, bill_cycle_day=15, payment_method=SEPA_SETTLES)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        debit = (await eventually(lambda: [p for p in payments(db_url, account.account_id) if p.status == "processing"]))[0]

        # Five days of polling: still processing, the invoice is neither charged again nor settled.
        await advance_to(ts_env, invoice.issued_at + timedelta(days=5, hours=2))
        assert gateway.charges_created == 1
        assert invoices(db_url, account.account_id)[0].state == "sent"

        # The webhook's path: the payment moves forward, then the workflow is signalled.
        with session_scope(db_url) as session:
            assert advance_payment(session, session.get(Payment, debit.id), "succeeded", at=await ts_env.get_current_time())
        await WorkflowGateway(client, settings.task_queue).payment_received(
            account.account_id, PaymentReceived(payment_id=debit.id, amount_cents=debit.amount_cents, source="webhook"))
        await eventually(lambda: invoices(db_url, account.account_id)[0].state == "settled")

        # Past the due date and the first retry days: nothing overdue, no episode, no second charge.
        await advance_to(ts_env, invoice.due_at + timedelta(days=4))
    assert gateway.charges_created == 1
    assert _episodes(db_url, account.account_id) == []
    assert [(p.attempt, p.status) for p in payments(db_url, account.account_id)] == [(1, "succeeded")]
    assert _payment_events(db_url, debit.id) == [("PaymentCreateEvent", "processing"), ("PaymentStateChangeEvent", "succeeded")]


async def test_a_sepa_debit_in_processing_is_found_settled_by_the_daily_poll(running_worker, make_settings, db_url, oss_http, ts_env, use_gateway):
    gateway = use_gateway(SandboxGateway(sepa_settle_delay_s=0))  # settled at the gateway at once; no webhook ever comes
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=SEPA_SETTLES)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        debit = (await eventually(lambda: [p for p in payments(db_url, account.account_id) if p.invoice_id == invoice.id]))[0]
        assert debit.status == "processing"
        # Before the first daily look the invoice stays open.
        await advance_to(ts_env, invoice.issued_at + timedelta(hours=20))
        assert invoices(db_url, account.account_id)[0].state == "sent"
        await advance_to(ts_env, invoice.issued_at + timedelta(days=1, hours=2))
        await eventually(lambda: invoices(db_url, account.account_id)[0].state == "settled")
    assert gateway.charges_created == 1
    assert [(p.attempt, p.status) for p in payments(db_url, account.account_id)] == [(1, "succeeded")]
    settled = [e for e in events(db_url, account.account_id) if e.kind == "payment.succeeded"]
    assert len(settled) == 1 and settled[0].at >= invoice.issued_at + timedelta(days=1)
    assert _episodes(db_url, account.account_id) == []


@pytest.mark.parametrize("lookups_missing", [0, 1], ids=["found-by-lookup", "found-on-retry"])
async def test_an_unknown_outcome_is_reconciled_without_a_second_charge(running_worker, make_settings, db_url, oss_http, ts_env, use_gateway, lookups_missing):
    gateway = use_gateway(LossyGateway(lookups_missing=lookups_missing))
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=WORKING_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await eventually(lambda: invoices(db_url, account.account_id)[0].state == "settled", timeout_s=30)
    key = f"o2c-charge-{invoice.id}-1"
    assert gateway.charges_created == 1
    # Not found at first: the activity failed and Temporal retried it, sending the very same request (replayed, not charged).
    assert gateway.charge_calls == [key] * (1 + lookups_missing)
    assert set(gateway.lookups) == {key}
    assert [(p.id, p.attempt, p.status) for p in payments(db_url, account.account_id)] == [(key, 1, "succeeded")]


async def test_requires_action_asks_the_customer_once_and_dunning_does_not_retry_off_session(
    running_worker, make_settings, db_url, oss_http, ts_env, mail_sink, use_gateway
):
    gateway = use_gateway(SandboxGateway())
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=THREE_DS_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await eventually(lambda: [p for p in payments(db_url, account.account_id) if p.status == "requires_action"])
        # Past the episode's three scheduled retries (P3D, P7D, P14D after the due date).
        await advance_to(ts_env, invoice.due_at + timedelta(days=15))
        await eventually(lambda: _episodes(db_url, account.account_id))
    asks = [m for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Please confirm your payment")]
    assert len(asks) == 1
    assert [(p.attempt, p.status) for p in payments(db_url, account.account_id)] == [(1, "requires_action")]
    assert gateway.charges_created == 1


class LooksFailFromDay:
    """A sandbox whose look-ups fail (the gateway does not answer with the payment) from the `first_failing`-th
    look on, until `healed` is set: the last looks of a 14-day-old debit fail while it is still in flight."""

    def __init__(self, first_failing: int) -> None:
        self.gateway = SandboxGateway(sepa_settle_delay_s=10**9)  # stays processing
        self.looks = 0
        self.healed = False
        original = self.gateway.retrieve

        async def retrieve(gateway_payment_id: str):
            self.looks += 1
            if self.looks >= first_failing and not self.healed:
                raise PaymentNotFound(f"look {self.looks} fails")
            return await original(gateway_payment_id)

        self.gateway.retrieve = retrieve


async def test_a_debit_is_given_up_only_on_the_gateways_answer_never_on_a_failed_look(running_worker, make_settings, db_url, oss_http, ts_env,
                                                                                      use_gateway):
    """At the 14-day limit a failed look keeps the debit (it may still settle; dunning's retry would charge twice);
    the first look the gateway answers with `processing` afterwards gives it up."""
    flaky = LooksFailFromDay(first_failing=13)
    use_gateway(flaky.gateway)
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=SEPA_SETTLES)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await eventually(lambda: [p for p in payments(db_url, account.account_id) if p.status == "processing"])
        await advance_to(ts_env, invoice.issued_at + timedelta(days=16, hours=2))
        kinds = [e.kind for e in events(db_url, account.account_id)]
        assert "payment.processing_overdue" not in kinds
        assert kinds.count("payment.check_failed") >= 3  # the looks of days 14, 15 and 16 failed, the debit is kept

        flaky.healed = True
        await advance_to(ts_env, invoice.issued_at + timedelta(days=17, hours=2))
        await eventually(lambda: "payment.processing_overdue" in [e.kind for e in events(db_url, account.account_id)])
    assert flaky.gateway.charges_created == 1
