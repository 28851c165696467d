"""The hand-over from BillingAccountWorkflow to DunningWorkflow (the ladder itself: test_dunning_workflow.py).

The account's workflow starts one episode (a child, id `dunning-<account>-<first overdue invoice>`) once the
oldest open invoice is past due, tells it about every payment it applies (`balance_settled`), and hears when
it ended (`dunning_ended`). Real durations of the default consumer-de policy under time skipping, real
activities, the OSS simulator over HTTP, the SMTP sink and the sandbox gateway (as in the other workflow tests)."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlmodel import select
from temporalio.client import WorkflowExecutionStatus

from adapters.temporal.client import WorkflowGateway
from domain.dunning_timeline import dunning_workflow_id
from persistence.db import session_scope
from persistence.tables import DunningEpisode, HubEvent
from tests.support.billing import DECLINING_CARD, advance_to, barring, eventually, events, first_invoice, invoices, open_account, pay_by_bank_transfer, payments, pin_clock, products, start_billing
from workflows.messages import QUERY_CURRENT_CYCLE, QUERY_DUNNING_STATE, CycleView, DunningView, SpendingThresholdCrossed


def episodes(db_url: str, account_id: str) -> list[DunningEpisode]:
    with session_scope(db_url) as session:
        return list(session.exec(select(DunningEpisode).where(DunningEpisode.billing_account_id == account_id).order_by(DunningEpisode.started_at)))


def hub_events(db_url: str, event_type: str) -> list[HubEvent]:
    with session_scope(db_url) as session:
        # In emission order: each resource's events are numbered (without ORDER BY, PostgreSQL may return any order).
        return list(session.exec(select(HubEvent).where(HubEvent.event_type == event_type).order_by(HubEvent.resource_key, HubEvent.sequence)))


def owed_cents(db_url: str, account_id: str) -> int:
    """Everything open in the ledger, the late-fee invoices included (the account workflow's balance view learns of a
    fee invoice, issued by the episode, at its next ledger pass)."""
    return sum(i.gross_cents - i.paid_cents for i in invoices(db_url, account_id) if i.state in ("new", "validated", "sent", "partiallyPaid"))


async def _barred_everywhere(oss_http, account, wanted: str) -> bool:
    return all([await barring(oss_http, m) == wanted for m in account.msisdns])


async def test_an_overdue_invoice_starts_exactly_one_episode_and_a_payment_ends_it_and_unbars(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-l"] * 3, activated_at=start, bill_cycle_day=15, payment_method=DECLINING_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        handle = client.get_workflow_handle(account.workflow_id)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        due = invoice.due_at
        assert invoice.gross_cents > 100_00  # enough for a §61 TKG barring

        # Issued and declined, but not yet due: no episode.
        await advance_to(ts_env, due - timedelta(hours=1))
        assert episodes(db_url, account.account_id) == []
        assert (await handle.query(QUERY_DUNNING_STATE, result_type=DunningView)).episode_id is None

        # Past due: exactly one episode, named after the account and the invoice, under the profile's segment.
        await advance_to(ts_env, due + timedelta(hours=1))
        expected_id = dunning_workflow_id(account.account_id, invoice.id)
        found = await eventually(lambda: episodes(db_url, account.account_id))
        assert [(e.id, e.invoice_id, e.segment, e.state) for e in found] == [(expected_id, invoice.id, "consumer-de", "active")]
        view = await eventually(lambda: _episode_view(handle, expected_id))
        assert view.invoice_id == invoice.id

        # Six weeks on, across a cycle close whose invoice is overdue too: still the one episode, which has barred every line.
        await advance_to(ts_env, due + timedelta(days=43))
        await eventually(lambda: _barred_everywhere(oss_http, account, "full"))
        # Two cycle invoices, and the late fees of the two dunning letters each on a fee-only invoice of its own.
        assert sorted(i.kind for i in invoices(db_url, account.account_id)) == ["cycle", "cycle", "late_fee", "late_fee"]
        assert [e.id for e in episodes(db_url, account.account_id)] == [expected_id]
        assert {p.status for p in products(db_url, account.account_id)} == {"suspended"}

        # A bank transfer of everything open: the account's workflow applies it and tells the episode, which ends and unbars.
        await pay_by_bank_transfer(client, settings.task_queue, db_url, account, owed_cents(db_url, account.account_id),
                                   at=await ts_env.get_current_time())
        ended = await eventually(lambda: [e for e in episodes(db_url, account.account_id) if e.state == "settled"])
        await eventually(lambda: _barred_everywhere(oss_http, account, "none"))
        await eventually(lambda: {p.status for p in products(db_url, account.account_id)} == {"active"})
        await eventually(lambda: _episode_view(handle, None))
        episode = await client.get_workflow_handle(expected_id).describe()

    assert [e.id for e in ended] == [expected_id]
    assert episode.status == WorkflowExecutionStatus.COMPLETED
    assert [i.state for i in invoices(db_url, account.account_id)] == ["settled"] * 4
    kinds = [e.kind for e in events(db_url, account.account_id)]
    assert kinds.count("dunning.started") == 1 and "dunning.barred" in kinds and "dunning.unbarred" in kinds
    # The profile's own steps no longer run: no reminder of the old ladder, no barring by the account workflow.
    assert not {"dunning.reminder", "dunning.suspension_notice", "service.suspended"} & set(kinds)
    # Hub events: the levels reached, the lines' status changes, the payments.
    levels = [e.state for e in hub_events(db_url, "DunningLevelChangeEvent") if e.resource_key == f"billingAccount:{account.account_id}"]
    assert levels[:2] == ["zahlungserinnerung", "mahnung"] and "vollsperre" in levels
    for product in products(db_url, account.account_id):
        states = [e.state for e in hub_events(db_url, "ProductStateChangeEvent") if e.resource_key == f"product:{product.id}"]
        assert states == ["suspended", "active"]
    created = {e.resource_key for e in hub_events(db_url, "PaymentCreateEvent")}
    assert {f"payment:{p.id}" for p in payments(db_url, account.account_id) if p.invoice_id == invoice.id and p.method == "card"} <= created


async def _episode_view(handle, episode_id: str | None) -> DunningView | None:
    view = await handle.query(QUERY_DUNNING_STATE, result_type=DunningView)
    return view if view.episode_id == episode_id else None


async def test_a_hard_spending_cap_in_force_bars_outgoing_use_again_when_the_episode_lifts_its_barring(
    running_worker, make_settings, db_url, oss_http, ts_env
):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-l"] * 3, activated_at=start, bill_cycle_day=15, payment_method=DECLINING_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        handle = client.get_workflow_handle(account.workflow_id)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await advance_to(ts_env, invoice.due_at + timedelta(days=43))
        await eventually(lambda: _barred_everywhere(oss_http, account, "full"))

        # The cap is reached while dunning bars everything: the cap leaves dunning's full barring alone.
        cycle = await handle.query(QUERY_CURRENT_CYCLE, result_type=CycleView)
        await WorkflowGateway(client, settings.task_queue).spending_threshold(account.account_id, SpendingThresholdCrossed(
            period_start=cycle.start, threshold_percent=100, usage_cost=Decimal("50.00"), limit=Decimal("50.00"), hard_cap=True))
        await eventually(lambda: [e for e in events(db_url, account.account_id) if e.kind == "spending.threshold"])
        assert await _barred_everywhere(oss_http, account, "full")

        # Paid: the episode lifts every bar; the cap is still in force this cycle, so outgoing use is barred again.
        await pay_by_bank_transfer(client, settings.task_queue, db_url, account, owed_cents(db_url, account.account_id),
                                   at=await ts_env.get_current_time())
        await eventually(lambda: [e for e in episodes(db_url, account.account_id) if e.state == "settled"])
        await eventually(lambda: _barred_everywhere(oss_http, account, "outgoing"))

        # Not skipped further here: the time-skipping test server stops skipping time once an abandoned child of an
        # earlier (continued-as-new) run has completed. The cycle-end lifting is covered in test_spending_limits.py.


# --- the segment of each billing profile -------------------------------------------------------------


def test_each_profile_names_a_dunning_segment_and_the_demo_segment_is_the_consumer_ladder_in_seconds():
    import pytest

    from config.dunning_loader import load_dunning_config
    from config.profiles import load_billing_profiles
    from domain.dunning_policy import DunningPolicy
    from worker import check_dunning_segments

    profiles, config = load_billing_profiles(), load_dunning_config()
    assert {name: p.dunning_segment for name, p in profiles.items()} == {"standard": "consumer-de", "demo": "demo"}
    check_dunning_segments(profiles, config)
    demo, consumer = config.policy("demo"), config.policy("consumer-de")
    assert demo.demo and not consumer.demo
    assert [level.name for level in demo.levels] == [level.name for level in consumer.levels]
    assert all(level.after <= timedelta(minutes=1) for level in demo.levels)
    # Without the demo mark the §61 TKG load check refuses it (EUR 100, two weeks' notice).
    with pytest.raises(ValueError, match="61 TKG"):
        DunningPolicy.model_validate({**demo.model_dump(), "demo": False})
    # A real customer's profile may not use the demo ladder.
    with pytest.raises(ValueError, match="demo dunning segment"):
        check_dunning_segments({"standard": profiles["standard"].model_copy(update={"dunning_segment": "demo"})}, config)
