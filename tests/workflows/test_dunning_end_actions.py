"""The end of a dunning episode carried out for real: termination (OSS, product, number pool, final bill request)
and the write-off booked in the ledger. Short test policies under time skipping, the real activities on `db_url`,
the OSS simulator over HTTP."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import select

from activities import msisdn_pool
from domain.dunning_policy import DunningPolicy
from domain.dunning_timeline import DunningInput
from persistence.db import session_scope
from persistence.tables import AuditLog, BillOnDemand, DunningEpisode, HubEvent, Invoice, MsisdnPoolEntry, Payment, PaymentAllocation
from tests.support.billing import advance_to, events, open_account, pin_clock, products
from tests.workflows.test_dunning_workflow import DECLINING_CARD, add_invoice, days_after, dunning_worker, receive_bank_transfer, replays, rows
from workflows.dunning import DunningWorkflow

DAY = timedelta(days=1)


def policy(*levels: dict) -> DunningPolicy:
    return DunningPolicy.model_validate({"segment": "end-test", "description": "end actions", "customer_type": "consumer", "country": "DE",
                                         "levels": list(levels)})


async def start(ts_env, settings, account, invoice_id, due, dunning_policy: DunningPolicy):
    inp = DunningInput(billing_account_id=account.account_id, customer_id=account.customer_id, invoice_id=invoice_id, due_at=due,
                       segment="end-test", policy=dunning_policy)
    return await ts_env.client.start_workflow(DunningWorkflow.run, inp, id=inp.episode_id, task_queue=settings.task_queue)


def assign_in_pool(db_url: str, msisdns: list[str]) -> None:
    with session_scope(db_url) as session:
        for msisdn in msisdns:
            session.add(MsisdnPoolEntry(msisdn=msisdn, status="assigned", reserved_for=f"order/{msisdn}", updated_at=datetime.now(UTC)))


async def test_termination_terminates_every_line_in_the_oss_and_in_o2c_and_quarantines_the_numbers(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    assign_in_pool(db_url, account.msisdns)
    invoice_id = add_invoice(db_url, account, gross_cents=15000, due_at=due)
    ladder = policy({"name": "kuendigung", "after": "P10D", "when": {"min_overdue": "100.00"}, "actions": [{"type": "terminate", "final_bill": True}]},
                    {"name": "inkasso", "after": "P20D", "actions": [{"type": "collections", "agency": "Inkasso Partner GmbH"}]})
    async with dunning_worker(ts_env, settings):
        handle = await start(ts_env, settings, account, invoice_id, due, ladder)
        outcome = await handle.result()
        await replays(handle)

    assert (outcome.outcome, days_after(due, outcome.ended_at)) == ("collections", 20)
    lines = products(db_url, account.account_id)
    assert {(p.status, days_after(due, p.termination_date), p.status_reason) for p in lines} == {
        ("terminated", 10, "terminated for arrears (kuendigung)")}
    for product in lines:
        assert (await oss_http.get(f"/sim/services/{product.msisdn}")).json()["state"] == "terminated"
        with session_scope(db_url) as session:
            hub = session.exec(select(HubEvent).where(HubEvent.resource_key == f"product:{product.id}")).all()
            assert [e.state for e in hub] == ["terminated"]
    orders = [o for o in (await oss_http.get("/sim/orders")).json() if o["externalId"].startswith("terminate:")]
    assert sorted(o["externalId"] for o in orders) == sorted(f"terminate:{outcome.episode_id}:{p.id}" for p in lines)
    assert {o["state"] for o in orders} == {"completed"}
    # The numbers rest in quarantine: nobody gets them now; after the quarantine period they are reusable.
    with session_scope(db_url) as session:
        pool = {e.msisdn: e for e in session.exec(select(MsisdnPoolEntry).where(MsisdnPoolEntry.msisdn.in_(account.msisdns)))}
        assert {(e.status, e.reserved_for) for e in pool.values()} == {("quarantine", None)}
        assert msisdn_pool.retire(session, account.msisdns[0]) == "quarantine"  # repeating changes nothing
        assert msisdn_pool.retire(session, "4917000000000") is None  # not o2c's number
    # The final bill is requested from the billing-account workflow (which issues it; not running in this test).
    final = rows(db_url, BillOnDemand, BillOnDemand.billing_account_id == account.account_id)
    assert [(b.name, b.state, b.requested_by, days_after(due, b.created_at)) for b in final] == [("Schlussrechnung", "inProgress", "dunning", 10)]
    story = [e.kind for e in events(db_url, account.account_id) if e.kind.startswith("dunning.")]
    assert "dunning.terminated" in story and "dunning.collections" in story


def test_a_quarantined_number_is_reused_only_after_the_quarantine_period(db_url):
    with session_scope(db_url) as session:
        msisdn_pool.reserve(session, "probe/0")  # makes sure the pool has numbers
        free = session.exec(select(MsisdnPoolEntry).where(MsisdnPoolEntry.status == "free").order_by(MsisdnPoolEntry.msisdn)).first()
        number = free.msisdn
        free.status, free.reserved_for = "assigned", "order/x"
        session.add(free)
        session.flush()
        assert msisdn_pool.retire(session, number) == "quarantine"
        taken = msisdn_pool.reserve(session, "probe/1")
        assert taken != number
        entry = session.get(MsisdnPoolEntry, number)
        entry.updated_at = datetime.now(UTC) - msisdn_pool.QUARANTINE_PERIOD - DAY
        session.add(entry)
        session.flush()
        # Every lower free number is taken first; the old one is eligible again now.
        eligible = msisdn_pool._first_free(session)
        assert eligible is not None and (eligible.msisdn == number or eligible.msisdn < number)


async def test_a_write_off_books_the_open_amounts_so_nothing_is_due_and_the_episode_ends(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    first = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    second = add_invoice(db_url, account, gross_cents=2500, due_at=due + 2 * DAY)
    ladder = policy({"name": "abschreibung", "after": "P10D", "actions": [{"type": "write_off"}]})
    async with dunning_worker(ts_env, settings):
        handle = await start(ts_env, settings, account, first, due, ladder)
        await advance_to(ts_env, due + 5 * DAY)
        part = receive_bank_transfer(db_url, account, 1000, due + 5 * DAY)  # received, not yet allocated
        outcome = await handle.result()
        await replays(handle)

    assert (outcome.outcome, days_after(due, outcome.ended_at)) == ("written_off", 10)
    invoices = {i.id: i for i in rows(db_url, Invoice, Invoice.billing_account_id == account.account_id)}
    assert {(i.state, i.paid_cents == i.gross_cents) for i in invoices.values()} == {("settled", True)}
    entry = rows(db_url, Payment, Payment.id == f"writeOff:{outcome.episode_id}")[0]
    assert (entry.method, entry.status, entry.amount_cents, entry.allocated_cents, entry.recorded_by) == ("write_off", "succeeded", 5500, 5500, "dunning")
    allocations = sorted((a.payment_id, a.invoice_id, a.amount_cents) for a in rows(db_url, PaymentAllocation, PaymentAllocation.invoice_id.in_([first, second])))
    assert allocations == sorted([(part, first, 1000), (entry.id, first, 3000), (entry.id, second, 2500)])
    audit = rows(db_url, AuditLog, AuditLog.action == "dunning.write_off", AuditLog.resource_id == account.account_id)
    assert len(audit) == 1 and audit[0].actor_id == "o2c" and outcome.episode_id in audit[0].reason
    assert sorted(i["openCents"] for i in audit[0].before["openInvoices"]) == [2500, 3000]
    episode = rows(db_url, DunningEpisode, DunningEpisode.id == outcome.episode_id)[0]
    assert (episode.state, episode.end_reason) == ("written_off", "level abschreibung: written off")
    write_offs = [e.message for e in events(db_url, account.account_id) if e.kind == "dunning.write_off"]
    assert write_offs == ["Dunning level abschreibung: arrears of 55.00 EUR written off (55.00 EUR booked)"]
