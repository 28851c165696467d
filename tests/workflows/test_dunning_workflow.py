"""DunningWorkflow under Temporal time skipping, with the REAL durations of the default consumer-de policy
(config/dunning/consumer-de.yaml): real activities on the `db_url` database, the OSS simulator over HTTP,
the SMTP mail sink (aiosmtpd) and the sandbox payment gateway. The workflow and its activities run in
this module's own worker (worker.py does not register them yet).

Every test pins the server clock to 1 December, 12:00 Berlin, and makes an invoice due at that instant;
activities stamp notices, payments, fees and actions with the workflow's clock, so "on the right day"
is checked on those stamps."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import httpx
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from activities.dunning import DunningActivities
from adapters.notify.email import SmtpNotifier
from adapters.oss.http_client import HttpOssClient
from adapters.payments.sandbox import SandboxGateway
from config.dunning_loader import load_dunning_config
from domain.dunning_timeline import (
    QUERY_DUNNING_STATUS,
    SIGNAL_BALANCE_SETTLED,
    SIGNAL_PAUSE,
    SIGNAL_RESUME,
    SIGNAL_RETRY_PAYMENT_NOW,
    SIGNAL_WAIVE_FEE,
    BalanceSettled,
    DunningInput,
    DunningOutcome,
    DunningStatus,
    PauseCommand,
    ResumeCommand,
    RetryPaymentCommand,
    WaiveFeeCommand,
)
from persistence.db import session_scope
from persistence.tables import BillingAccount, BillOnDemand, DunningAction, DunningEpisode, Invoice, Notification, Payment, PendingOneTimeCharge
from tests.support.billing import BERLIN, DECLINING_CARD, Account, advance_to, barring, eventually, events, mails_to, open_account, pin_clock, products
from worker import activities_of
from workflows.dunning import DunningWorkflow

DAY = timedelta(days=1)
WORKING_CARD = "4242424242424242"
LADDER_SUBJECTS = {
    "zahlungserinnerung": "Zahlungserinnerung",
    "mahnung": "Mahnung",
    "sperrankuendigung": "Ankündigung der Sperre",
    "sperre": "Ihr Anschluss ist gesperrt",
    "kuendigung": "Kündigung Ihres Vertrags",
    "inkasso": "Übergabe an ein Inkassounternehmen",
}


# --- set-up ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def dunning_worker(ts_env, settings, *, oss_transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[None]:
    oss = HttpOssClient(settings.oss_base_url, transport=oss_transport)
    activities = DunningActivities(settings, load_dunning_config(), SandboxGateway(), oss,
                                   SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.mail_from))
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[DunningWorkflow], activities=activities_of(activities),
                          activity_executor=executor, graceful_shutdown_timeout=timedelta(seconds=5)):
            yield


def add_invoice(db_url: str, account: Account, *, gross_cents: int, due_at: datetime, issued_days_before: int = 14) -> str:
    """An issued, unpaid invoice as the billing-account workflow would leave it."""
    invoice_id = str(uuid.uuid4())
    issued = due_at - issued_days_before * DAY
    local = issued.astimezone(BERLIN).date()
    with session_scope(db_url) as session:
        session.add(Invoice(
            id=invoice_id, number=f"INV-T-{uuid.uuid4().hex[:10]}", kind="cycle", billing_account_id=account.account_id, customer_id=account.customer_id,
            state="sent", period_start=issued - 30 * DAY, period_end=issued, local_period_start=local - timedelta(days=30), local_period_end=local,
            issued_at=issued, due_at=due_at, net_cents=gross_cents * 100 // 119, vat_cents=gross_cents - gross_cents * 100 // 119, gross_cents=gross_cents,
            lines=[], vat_breakdown=[]))
    return invoice_id


async def start_episode(client, settings, account: Account, invoice_id: str, due_at: datetime):
    inp = DunningInput(billing_account_id=account.account_id, customer_id=account.customer_id, invoice_id=invoice_id, due_at=due_at, segment="consumer-de")
    return await client.start_workflow(DunningWorkflow.run, inp, id=inp.episode_id, task_queue=settings.task_queue)


def receive_bank_transfer(db_url: str, account: Account, amount_cents: int, at: datetime) -> str:
    payment_id = f"bt-{uuid.uuid4()}"
    with session_scope(db_url) as session:
        session.add(Payment(id=payment_id, correlator_id=payment_id, billing_account_id=account.account_id, amount_cents=amount_cents,
                            method="bank_transfer", status="succeeded", recorded_by="test", created_at=at))
    return payment_id


def owed_cents(db_url: str, account: Account) -> int:
    """Everything the account owes (open invoices, the late-fee invoices included), as a customer paying in full pays it."""
    with session_scope(db_url) as session:
        open_ = session.exec(select(Invoice).where(Invoice.billing_account_id == account.account_id,
                                                   Invoice.state.in_(("new", "validated", "sent", "partiallyPaid")))).all()
        return sum(i.gross_cents - i.paid_cents for i in open_)


async def replays(handle) -> None:
    """The finished history replays on today's workflow code: the workflow is deterministic."""
    await Replayer(workflows=[DunningWorkflow], data_converter=pydantic_data_converter).replay_workflow(await handle.fetch_history())


async def status(handle) -> DunningStatus:
    return await handle.query(QUERY_DUNNING_STATUS, result_type=DunningStatus)


def rows(db_url: str, table, *where):
    with session_scope(db_url) as session:
        return list(session.exec(select(table).where(*where)))


def notices(db_url: str, account: Account) -> list[Notification]:
    """The dunning notices sent (not the mails of fee invoices and credit notes, keyed `invoice:<id>`)."""
    sent = rows(db_url, Notification, Notification.billing_account_id == account.account_id)
    return sorted((n for n in sent if n.id.startswith("dunning:")), key=lambda n: n.sent_at)


def dunning_mails(mail_sink, account: Account) -> list[str]:
    found = []
    for message in mails_to(mail_sink, account.email):
        # strip(): a long subject comes back from the sink folded with a leading blank (adapters/notify/email.py)
        name = next((n for n, prefix in LADDER_SUBJECTS.items() if message["Subject"].strip().startswith(prefix)), None)
        if name is not None:
            found.append(name)
    return found


def days_after(due: datetime, instant: datetime) -> int:
    """Whole days after the due date, to within minutes: activities run moments after their step, and a
    staff signal lands a moment after the clock stopped skipping."""
    days = round((instant - due) / DAY)
    assert abs(instant - due - days * DAY) < timedelta(minutes=5), f"{instant} is not on a whole day after {due}"
    return days


def near(actual: datetime | None, expected: datetime) -> bool:
    return actual is not None and abs(actual - expected) < timedelta(minutes=5)


async def oss_barring(oss_http, account: Account) -> set[str]:
    return {await barring(oss_http, m) for m in account.msisdns}


def actions(db_url: str, episode_id: str) -> list[DunningAction]:
    return sorted(rows(db_url, DunningAction, DunningAction.episode_id == episode_id), key=lambda a: (a.at, a.id))


# --- 1. the whole default ladder -----------------------------------------------------------------------------


async def test_the_default_consumer_ladder_runs_on_its_days(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=11900, due_at=due)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        first = await eventually(lambda: status(handle))
        assert (first.level, first.next_step, first.next_step_at, first.barred) == ("none", "payment retry 1", due + 3 * DAY, "none")

        # Day 20: reminder, three declined retries, the first dunning letter with its fee; nothing barred.
        await advance_to(ts_env, due + 20 * DAY)
        view = await eventually(lambda: status(handle))
        assert (view.level, view.next_step, view.next_step_at) == ("mahnung", "sperrankuendigung", due + 21 * DAY)
        assert await oss_barring(oss_http, account) == {"none"}

        # Day 34: the written barring notice went out on day 21; still not barred.
        await advance_to(ts_env, due + 34 * DAY)
        await eventually(lambda: len(notices(db_url, account)) == 3)
        assert await oss_barring(oss_http, account) == {"none"}

        # Day 35: outgoing barring through the OSS, exactly two weeks after the notice.
        await advance_to(ts_env, due + 35 * DAY + timedelta(hours=1))
        await eventually(lambda: all(p.status == "suspended" for p in products(db_url, account.account_id)))
        assert await oss_barring(oss_http, account) == {"outgoing"}

        outcome: DunningOutcome = await handle.result()
        await replays(handle)

    assert (outcome.outcome, outcome.level) == ("collections", "inkasso")
    assert days_after(due, outcome.ended_at) == 90

    # Notices: one e-mail per letter, on its day, in this order.
    sent = notices(db_url, account)
    assert [(n.id.rsplit(":", 2)[-2], days_after(due, n.sent_at)) for n in sent] == [
        ("zahlungserinnerung", 5), ("mahnung", 14), ("sperrankuendigung", 21), ("sperre-abgehend", 35), ("kuendigung", 70), ("inkasso", 90),
    ]
    assert dunning_mails(mail_sink, account) == ["zahlungserinnerung", "mahnung", "sperrankuendigung", "sperre", "kuendigung", "inkasso"]
    notice_mail = next(m for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Ankündigung der Sperre"))
    text = notice_mail.get_body(("plain",)).get_content()
    barring_day = (due + 35 * DAY).astimezone(BERLIN)
    assert f"ab dem {barring_day:%d.%m.%Y} 12:00 zu sperren" in text
    assert "119.00 EUR" in text and "§ 61" in text and "2.50 EUR" in text and "insgesamt: 5.00 EUR" in text

    # Payment retries on days 3, 7 and 14, each a new attempt (idempotency key) of the open amount.
    retries = sorted(rows(db_url, Payment, Payment.billing_account_id == account.account_id), key=lambda p: p.attempt)
    assert [(p.attempt, p.status, p.amount_cents, days_after(due, p.created_at)) for p in retries] == [
        (1, "declined", 11900, 3), (2, "declined", 11900, 7), (3, "declined", 11900, 14)]
    assert [p.correlator_id for p in retries] == [f"o2c-charge-{invoice_id}-{n}" for n in (1, 2, 3)]

    # Late fees on days 14 and 21, each billed at once on its own fee-only invoice (category O), due two weeks later and e-mailed.
    episode_id = outcome.episode_id
    fees = sorted(rows(db_url, PendingOneTimeCharge, PendingOneTimeCharge.source == episode_id), key=lambda f: f.created_at)
    assert [(f.key, f.amount_cents, f.status, f.vat_category, days_after(due, f.created_at)) for f in fees] == [
        (f"dunning-fee:{episode_id}:mahnung", 250, "billed", "O", 14), (f"dunning-fee:{episode_id}:sperrankuendigung", 250, "billed", "O", 21)]
    fee_invoices = [rows(db_url, Invoice, Invoice.id == f.invoice_id)[0] for f in fees]
    assert [(i.kind, i.gross_cents, i.vat_cents, [v["vat_category"] for v in i.vat_breakdown], days_after(due, i.issued_at), days_after(due, i.due_at))
            for i in fee_invoices] == [("late_fee", 250, 0, ["O"], 14, 28), ("late_fee", 250, 0, ["O"], 21, 35)]
    assert all(i.number.startswith("INV-") and i.pdf and i.xml for i in fee_invoices)
    fee_mails = [m for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Your invoice")]
    assert [m["Subject"] for m in fee_mails] == [f"Your invoice {i.number} (Mahngebühr / late fee)" for i in fee_invoices]
    assert all(i.state == "sent" for i in rows(db_url, Invoice, Invoice.kind == "late_fee", Invoice.billing_account_id == account.account_id))

    # Barring: outgoing on day 35, full on day 42, through the OSS; the lines stay barred (then terminated, collections).
    bars = [a for a in actions(db_url, episode_id) if a.kind == "bar"]
    assert [(a.data["barring"], sorted(a.data["msisdns"]), days_after(due, a.at)) for a in bars] == [
        ("outgoing", sorted(account.msisdns), 35), ("full", sorted(account.msisdns), 42)]
    assert await oss_barring(oss_http, account) == {"full"}
    for msisdn in account.msisdns:
        history = (await oss_http.get(f"/sim/services/{msisdn}")).json()["history"]
        assert [h["barring"] for h in history if h["change"].startswith("barring:")] == ["outgoing", "full"]

    # Termination on day 70 with a final bill request for the billing-account workflow; collections on day 90.
    final_bill = rows(db_url, BillOnDemand, BillOnDemand.billing_account_id == account.account_id)
    assert [(b.state, b.requested_by, b.idempotency_key) for b in final_bill] == [("inProgress", "dunning", f"dunning-final-bill:{episode_id}")]
    assert days_after(due, final_bill[0].created_at) == 70
    kinds = [(a.kind, a.level) for a in actions(db_url, episode_id) if a.kind in ("terminate", "collections")]
    assert kinds == [("terminate", "kuendigung"), ("collections", "inkasso")]
    # The termination is real: every line terminated in the OSS (TMF641 delete) and in o2c, on day 70.
    for product in products(db_url, account.account_id):
        assert (product.status, days_after(due, product.termination_date)) == ("terminated", 70)
        service = (await oss_http.get(f"/sim/services/{product.msisdn}")).json()
        assert service["state"] == "terminated"
    orders = (await oss_http.get("/sim/orders")).json()
    deletes = sorted(o["externalId"] for o in orders if o["externalId"].startswith("terminate:"))
    assert deletes == sorted(f"terminate:{episode_id}:{p.id}" for p in products(db_url, account.account_id))
    # The collection agency's dossier is stored with the hand-over.
    dossier = next(a for a in actions(db_url, episode_id) if a.kind == "collections").data["dossier"]
    assert dossier["debtor"]["email"] == account.email and dossier["debtor"]["name"] == "Erika Mustermann"
    assert [i["invoiceId"] for i in dossier["invoices"]][0] == invoice_id and dossier["openCents"] == 11900 + 250 + 250
    assert [f["amountCents"] for f in dossier["lateFees"]] == [250, 250] and len(dossier["notices"]) == 6
    episode = rows(db_url, DunningEpisode, DunningEpisode.id == episode_id)[0]
    assert (episode.state, episode.level, episode.end_reason) == ("collections", "inkasso", "level inkasso: handed over to Inkasso Partner GmbH")

    # The customer's story, in order.
    story = [e.kind for e in events(db_url, account.account_id) if e.kind.startswith("dunning.") and e.kind != "dunning.level"]
    assert story == [
        "dunning.started", "dunning.payment_retry.declined", "dunning.notice", "dunning.payment_retry.declined", "dunning.payment_retry.declined",
        "dunning.late_fee", "dunning.notice", "dunning.late_fee", "dunning.barring_notice", "dunning.barred", "dunning.notice", "dunning.barred",
        "dunning.terminated", "dunning.signal_failed", "dunning.notice", "dunning.notice", "dunning.collections", "dunning.ended",
    ]


# --- 2. a payment ends the episode -----------------------------------------------------------------------------


async def test_a_payment_in_the_middle_ends_the_episode_and_lifts_the_bars(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=15000, due_at=due)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 36 * DAY)
        await eventually(lambda: all(p.status == "suspended" for p in products(db_url, account.account_id)))
        assert await oss_barring(oss_http, account) == {"outgoing"}

        # A bank transfer on day 36, reported by the payments path.
        receive_bank_transfer(db_url, account, owed_cents(db_url, account), due + 36 * DAY)
        await handle.signal(SIGNAL_BALANCE_SETTLED, BalanceSettled(source="bank_transfer"))
        outcome: DunningOutcome = await handle.result()
        await advance_to(ts_env, due + 100 * DAY)  # nothing more happens

    assert outcome.outcome == "settled" and "bank_transfer" in outcome.reason and outcome.level == "sperre-abgehend"
    assert await oss_barring(oss_http, account) == {"none"}
    assert {p.status for p in products(db_url, account.account_id)} == {"active"}
    lifted = [a for a in actions(db_url, outcome.episode_id) if a.kind == "unbar"]
    assert [(sorted(a.data["msisdns"]), a.reason) for a in lifted] == [(sorted(account.msisdns), f"dunning ended: {outcome.reason}")]
    episode = rows(db_url, DunningEpisode, DunningEpisode.id == outcome.episode_id)[0]
    assert (episode.state, episode.end_reason) == ("settled", outcome.reason)
    assert dunning_mails(mail_sink, account) == ["zahlungserinnerung", "mahnung", "sperrankuendigung", "sperre"]
    assert not rows(db_url, BillOnDemand, BillOnDemand.billing_account_id == account.account_id)


async def test_a_payment_found_at_a_step_ends_the_episode_without_a_signal(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 6 * DAY)
        await eventually(lambda: dunning_mails(mail_sink, account) == ["zahlungserinnerung"])
        receive_bank_transfer(db_url, account, 4000, due + 6 * DAY)  # nobody signals
        outcome: DunningOutcome = await handle.result()
    assert outcome.outcome == "settled" and days_after(due, outcome.ended_at) == 7
    assert outcome.reason == "the balance was found paid before payment retry 2"
    assert len(rows(db_url, Payment, Payment.billing_account_id == account.account_id, Payment.method == "card")) == 1


# --- 3. staff: pause, auto-resume, dispute, waive, retry now ----------------------------------------------------------


async def test_pause_resume_waive_and_retry_now(make_settings, db_url, oss_http, ts_env, mail_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=12000, due_at=due)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 10 * DAY)
        # Promise to pay until day 20: everything left moves by the ten days paused.
        await handle.signal(SIGNAL_PAUSE, PauseCommand(command_id="p1", actor="support:aaa", reason="customer promised to pay", kind="promise_to_pay",
                                                       until=due + 20 * DAY))
        view = await eventually(lambda: _paused(handle))
        assert (view.next_step, view.paused_until) == ("payment retry 3", due + 20 * DAY) and near(view.next_step_at, due + 24 * DAY)

        await advance_to(ts_env, due + 23 * DAY)
        assert dunning_mails(mail_sink, account) == ["zahlungserinnerung"]  # the day-14 letter has not gone out
        await advance_to(ts_env, due + 25 * DAY)
        await eventually(lambda: dunning_mails(mail_sink, account) == ["zahlungserinnerung", "mahnung"])

        # A dispute without an end date holds everything until staff resume (on day 60).
        await handle.signal(SIGNAL_PAUSE, PauseCommand(command_id="p2", actor="support:aaa", reason="invoice disputed", kind="dispute"))
        held = await eventually(lambda: _paused(handle))
        assert held.next_step_at is None and held.pause_kind == "dispute"
        await advance_to(ts_env, due + 60 * DAY)
        assert dunning_mails(mail_sink, account) == ["zahlungserinnerung", "mahnung"]
        await handle.signal(SIGNAL_RESUME, ResumeCommand(command_id="r1", actor="support:aaa", reason="dispute rejected"))
        resumed = await eventually(lambda: _active(handle))
        assert resumed.next_step == "sperrankuendigung" and near(resumed.next_step_at, due + (21 + 10 + 35) * DAY)

        # Finance waives the first letter's fee, then the customer fixes the card and finance retries now.
        await handle.signal(SIGNAL_WAIVE_FEE, WaiveFeeCommand(command_id="w1", actor="finance:bbb", reason="goodwill", level="mahnung"))
        await handle.signal(SIGNAL_WAIVE_FEE, WaiveFeeCommand(command_id="w1", actor="finance:bbb", reason="goodwill", level="mahnung"))  # repeated
        await eventually(lambda: _staff_status(db_url, "w1") == "applied")
        with session_scope(db_url) as session:
            session.get(BillingAccount, account.account_id).payment_method = WORKING_CARD
        await handle.signal(SIGNAL_RETRY_PAYMENT_NOW, RetryPaymentCommand(command_id="t1", actor="finance:bbb", reason="new card on file"))
        outcome: DunningOutcome = await handle.result()
        await replays(handle)

    assert outcome.outcome == "settled" and outcome.reason == "the payment retry (staff:t1) succeeded"
    assert days_after(due, outcome.ended_at) == 60
    # The fee was on its fee-only invoice already: waiving it issued a credit note over it (once), which settled that invoice.
    fee = rows(db_url, PendingOneTimeCharge, PendingOneTimeCharge.source == outcome.episode_id)
    assert [(f.status, days_after(due, f.created_at)) for f in fee] == [("billed", 24)]
    fee_invoice = rows(db_url, Invoice, Invoice.id == fee[0].invoice_id)[0]
    notes = rows(db_url, Invoice, Invoice.referenced_invoice_id == fee_invoice.id)
    assert [(n.kind, n.gross_cents, n.number[:3], n.reason) for n in notes] == [("credit_note", -250, "CN-", "Mahngebühr erlassen: goodwill")]
    assert (fee_invoice.kind, fee_invoice.state, fee_invoice.paid_cents) == ("late_fee", "settled", 250)
    assert [m["Subject"] for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Your credit note")] == [
        f"Your credit note {notes[0].number}"]
    retries = sorted(rows(db_url, Payment, Payment.billing_account_id == account.account_id), key=lambda p: p.attempt)
    assert [(p.attempt, p.status, days_after(due, p.created_at)) for p in retries if p.method == "card"] == [
        (1, "declined", 3), (2, "declined", 7), (3, "declined", 24), (4, "succeeded", 60)]
    audit = {a.key: a for a in actions(db_url, outcome.episode_id) if a.key.startswith("staff:")}
    assert {k: (a.kind, a.actor, a.reason, a.status) for k, a in audit.items()} == {
        "staff:p1": ("pause", "support:aaa", "customer promised to pay", "applied"),
        "staff:p2": ("pause", "support:aaa", "invoice disputed", "applied"),
        "staff:r1": ("resume", "support:aaa", "dispute rejected", "applied"),
        "staff:w1": ("waive_fee", "finance:bbb", "goodwill", "applied"),
        "staff:t1": ("retry_payment", "finance:bbb", "new card on file", "applied"),
    }
    auto = [e for e in events(db_url, account.account_id) if e.kind == "dunning.resumed"]
    assert len(auto) == 1 and days_after(due, auto[0].at) == 20
    assert [e.kind for e in events(db_url, account.account_id) if e.kind.startswith("dunning.staff.")] == [
        "dunning.staff.pause", "dunning.staff.pause", "dunning.staff.resume", "dunning.staff.waive_fee", "dunning.staff.retry_payment"]


async def _paused(handle) -> DunningStatus | None:
    view = await status(handle)
    return view if view.state == "paused" else None


async def _active(handle) -> DunningStatus | None:
    view = await status(handle)
    return view if view.state == "active" else None


def _staff_status(db_url: str, command_id: str) -> str | None:
    found = rows(db_url, DunningAction, DunningAction.key == f"staff:{command_id}")
    return found[0].status if found else None


# --- 4. the OSS: slow, failing, timing out ----------------------------------------------------------------------


class HeldBarring(httpx.AsyncBaseTransport):
    """Holds the first dunning barring order on its way to the OSS until the test releases it: the
    barring call is in flight, for as long as the test needs."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/serviceOrder") and not self.holding.is_set():
            body = json.loads(request.content or b"{}")
            values = {c["name"]: c["value"] for item in body.get("serviceOrderItem", []) for c in item["service"]["serviceCharacteristic"]}
            if (body.get("externalId") or "").startswith("dunning:") and values.get("barring") not in (None, "none"):
                self.holding.set()
                await self.release.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_payment_while_the_barring_call_is_in_flight_ends_unbarred(make_settings, db_url, oss_http, ts_env):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    msisdn = account.msisdns[0]
    invoice_id = add_invoice(db_url, account, gross_cents=15000, due_at=due)
    transport = HeldBarring()
    # And the OSS, once it gets the order, takes a moment to complete it: the activity first finds it inProgress.
    await oss_http.post("/sim/rules", json={"match": {"msisdn": msisdn, "action": "modify"}, "behaviour": "slow", "delaySeconds": 0.5, "times": 1})
    async with dunning_worker(ts_env, settings, oss_transport=transport):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 35 * DAY)
        await asyncio.wait_for(transport.holding.wait(), timeout=30)
        receive_bank_transfer(db_url, account, owed_cents(db_url, account), due + 35 * DAY)
        await handle.signal(SIGNAL_BALANCE_SETTLED, BalanceSettled(source="bank_transfer"))
        await eventually(lambda: _signalled(ts_env.client, handle.id))
        transport.release.set()
        outcome: DunningOutcome = await handle.result()

    assert outcome.outcome == "settled"
    assert await barring(oss_http, msisdn) == "none"
    assert products(db_url, account.account_id)[0].status == "active"
    history = (await oss_http.get(f"/sim/services/{msisdn}")).json()["history"]
    assert [h["barring"] for h in history if h["change"].startswith("barring:")] == ["outgoing", "none"]
    # The payment really arrived while the barring activity was running.
    order = await _history_order(ts_env.client, handle.id)
    assert order.index("signal") < order.index("completed:dunning_set_barring")


async def _signalled(client, workflow_id: str) -> bool:
    return "signal" in await _history_order(client, workflow_id)


async def _history_order(client, workflow_id: str) -> list[str]:
    scheduled: dict[int, str] = {}
    order = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            order.append(f"completed:{scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]}")
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            order.append("signal")
    return order


class LostResponses(httpx.AsyncBaseTransport):
    """Forwards every request to the OSS, but loses the response to the first POST of each dunning
    externalId, as a network timeout would: the OSS did the work, o2c does not know."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.lost: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/serviceOrder"):
            await response.aread()
            external_id = json.loads(request.content or b"{}").get("externalId", "")
            if external_id.startswith("dunning:") and external_id not in self.lost and response.status_code == 201:
                self.lost.append(external_id)
                raise httpx.ReadTimeout("simulated: the response never arrived", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_oss_outages_and_lost_responses_during_barring_and_unbarring_are_retried(make_settings, db_url, oss_http, ts_env):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=15000, due_at=due)
    transport = LostResponses()
    # The OSS is down for the first two barring orders (503, nothing stored) ...
    await oss_http.post("/sim/rules", json={"match": {"action": "modify"}, "behaviour": "unavailable", "times": 2})
    async with dunning_worker(ts_env, settings, oss_transport=transport):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 36 * DAY)
        await eventually(lambda: all(p.status == "suspended" for p in products(db_url, account.account_id)), timeout_s=30)
        assert await oss_barring(oss_http, account) == {"outgoing"}
        # ... and down again when the bars are lifted.
        await oss_http.post("/sim/rules", json={"match": {"action": "modify"}, "behaviour": "unavailable", "times": 2})
        receive_bank_transfer(db_url, account, owed_cents(db_url, account), due + 36 * DAY)
        await handle.signal(SIGNAL_BALANCE_SETTLED, BalanceSettled(source="bank_transfer"))
        outcome: DunningOutcome = await handle.result()

    assert outcome.outcome == "settled"
    assert await oss_barring(oss_http, account) == {"none"}
    assert {p.status for p in products(db_url, account.account_id)} == {"active"}
    # Every barring and every lift was one service order per line, however often it was sent.
    orders = [o for o in (await oss_http.get("/sim/orders")).json() if (o.get("externalId") or "").startswith("dunning:")]
    by_key = {}
    for o in orders:
        by_key.setdefault(o["externalId"], []).append(o["state"])
    assert sorted(by_key.values()) == [["completed"]] * 4
    assert sorted(transport.lost) == sorted(by_key)  # each of them once lost its response
    for msisdn in account.msisdns:
        history = (await oss_http.get(f"/sim/services/{msisdn}")).json()["history"]
        assert [h["barring"] for h in history if h["change"].startswith("barring:")] == ["outgoing", "none"]
    assert (await oss_http.get("/sim/rules")).json() == []  # both outages were met


# --- 5. §61 TKG at run time -----------------------------------------------------------------------------------------


async def test_a_barring_without_a_written_notice_sends_it_first_and_waits_two_weeks(make_settings, db_url, oss_http, ts_env, mail_sink):
    """60 EUR overdue on day 21 (no barring notice: below 100 EUR); a second invoice falls due on day 30 and
    brings the arrears to 140 EUR. On day 35 the barring may not happen yet: the notice goes out then and
    the barring follows on day 49."""
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=6000, due_at=due)
    add_invoice(db_url, account, gross_cents=8000, due_at=due + 30 * DAY)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 48 * DAY)
        await eventually(lambda: len(dunning_mails(mail_sink, account)) == 3)
        assert await barring(oss_http, account.msisdns[0]) == "none"
        view = await eventually(lambda: status(handle))
        assert (view.next_step, view.next_step_at) == ("sperre-abgehend", due + 49 * DAY)
        await advance_to(ts_env, due + 50 * DAY)
        await eventually(lambda: products(db_url, account.account_id)[0].status == "suspended")
        await handle.terminate(reason="test finished")

    sent = notices(db_url, account)
    assert [(n.id.split(":")[-2] + ":" + n.id.split(":")[-1], days_after(due, n.sent_at)) for n in sent] == [
        ("zahlungserinnerung:notice-0", 5), ("mahnung:notice-1", 14), ("sperrankuendigung:notice-1", 35), ("sperre-abgehend:notice-1", 49)]
    notice_text = next(m for m in mails_to(mail_sink, account.email) if m["Subject"].startswith("Ankündigung der Sperre")).get_body(("plain",)).get_content()
    # 60 + 80 EUR and the first letter's fee invoice (2.50 EUR, issued on day 14, due on day 28).
    assert f"ab dem {(due + 49 * DAY).astimezone(BERLIN):%d.%m.%Y} 12:00" in notice_text and "142.50 EUR" in notice_text
    kinds = [(e.kind, days_after(due, e.at)) for e in events(db_url, account.account_id) if e.kind in (
        "dunning.level_skipped", "dunning.barring_deferred", "dunning.barred")]
    assert kinds == [("dunning.level_skipped", 21), ("dunning.barring_deferred", 35), ("dunning.barred", 49)]
