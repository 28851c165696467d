"""The billing-account workflow and the invoice lifecycle: the draft hold (onHold until approved, then
numbered, sent and collected), on-demand bills, credit notes applied to an open invoice, and invoice
e-mails retried while the mail server fails. Time-skipping server, real activities, real SMTP servers."""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlmodel import select

from activities.invoice_issuer import CreditRequest
from adapters.notify.mail_sink import _BoundPortController
from o2c_cli.verify_invoices import run as verify
from persistence.db import session_scope
from persistence.tables import BillingAccount, BillOnDemand, Notification, UsageRecord
from services.bill_on_demand import OnDemandOrder, record_request
from services.bills import approve_bill
from services.credit_notes import CreditNoteOrder, create_credit_note
from tests.support.billing import (
    DECLINING_CARD,
    advance_to,
    eventually,
    events,
    first_invoice,
    invoices,
    local_midnight,
    mails_to,
    open_account,
    payments,
    pin_clock,
    start_billing,
)
from workflows.messages import (
    QUERY_BALANCE,
    QUERY_DUNNING_STATE,
    SIGNAL_BILL_ON_DEMAND,
    SIGNAL_CREDIT_NOTE_ISSUED,
    SIGNAL_INVOICE_APPROVED,
    BalanceView,
    BillOnDemandRequested,
    CreditNoteIssued,
    DunningView,
    InvoiceApproved,
)

CARD = "4242424242424242"


class _Quiet:
    def write(self, _text: str) -> int:
        return 0


def chain_ok(db_url: str) -> bool:
    return verify(db_url, out=_Quiet()) == 0


def hold_invoices(db_url: str, account_id: str) -> None:
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        account.invoice_hold = True
        session.add(account)


def approve(db_url: str, settings, invoice_id: str, at: datetime):
    with session_scope(db_url) as session:
        invoice, _ = approve_bill(session, settings, invoice_id, "validated", "finance", approved_at=at)
        return invoice


def invoice_mails(mail_sink, account) -> list[str]:
    return [m["Subject"] for m in mails_to(mail_sink, account.email) if m["Subject"].startswith(("Your invoice", "Your credit note"))]


# --- the draft hold -------------------------------------------------------------------------------


async def test_held_invoice_waits_without_a_number_until_approved_then_is_sent_and_collected(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=CARD)
    hold_invoices(db_url, account.account_id)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        handle = client.get_workflow_handle(account.workflow_id)
        draft = await first_invoice(ts_env, db_url, account, start.year)
        # Held: no number, no document, not sent, not collected, not open (nothing is due on a draft).
        assert (draft.state, draft.number, draft.pdf, draft.content_hash) == ("onHold", None, None, None)
        assert invoice_mails(mail_sink, account) == [] and payments(db_url, account.account_id) == []
        assert (await handle.query(QUERY_BALANCE, result_type=BalanceView)).open_cents == 0
        assert [e.kind for e in events(db_url, account.account_id) if e.kind.startswith("invoice.")] == ["invoice.held"]

        # Staff approve it a week later: numbered then, sent and charged by the workflow.
        approved_at = await ts_env.get_current_time() + timedelta(days=7)
        await advance_to(ts_env, approved_at)
        approved = approve(db_url, settings, draft.id, approved_at)
        assert approved.number.startswith(f"INV-{start.year}-") and approved.issued_at == approved_at
        assert approved.due_at == approved_at + (draft.due_at - draft.issued_at)
        await handle.signal(SIGNAL_INVOICE_APPROVED, InvoiceApproved(invoice_id=draft.id))
        settled = await eventually(lambda: (found := invoices(db_url, account.account_id)[0]).state == "settled" and found)
        assert settled.paid_cents == settled.gross_cents
        assert invoice_mails(mail_sink, account) == [f"Your invoice {approved.number}"]
        card = [(p.status, p.amount_cents, p.invoice_id) for p in payments(db_url, account.account_id)]
        assert card == [("succeeded", settled.gross_cents, draft.id)]

        # The next cycle's invoice is held again; approved without the workflow being told, it is found
        # and delivered at the cycle close after.
        await advance_to(ts_env, local_midnight(date(start.year + 1, 1, 15)) + timedelta(hours=1))
        second = (await eventually(lambda: (found := invoices(db_url, account.account_id)) and len(found) == 2 and found))[1]
        assert (second.state, second.number) == ("onHold", None)
        approve(db_url, settings, second.id, await ts_env.get_current_time())
        await advance_to(ts_env, local_midnight(date(start.year + 1, 2, 15)) + timedelta(hours=1))
        found = await eventually(lambda: (rows := invoices(db_url, account.account_id)) and len(rows) == 3 and rows[1].state == "settled" and rows)
    assert found[2].state == "onHold"
    assert invoice_mails(mail_sink, account) == [f"Your invoice {approved.number}", f"Your invoice {found[1].number}"]
    assert chain_ok(db_url)


# --- on-demand bills ------------------------------------------------------------------------------


async def test_on_demand_bill_takes_everything_unbilled_once_and_is_sent_and_collected(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=CARD)
    product = account.products[0]
    period_start = local_midnight(date(start.year, 11, 15))
    with session_scope(db_url) as session:
        session.add(UsageRecord(id=f"cdr-{uuid.uuid4()}", usage_type="voice", msisdn=product.msisdn, product_id=product.product_id,
                                billing_account_id=account.account_id, event_time=start + timedelta(hours=1), quantity=600, units=10,
                                chargeable_units=10, amount_micros=900_000, period_start=period_start, received_at=start + timedelta(hours=1)))
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        handle = client.get_workflow_handle(account.workflow_id)
        await advance_to(ts_env, start + timedelta(days=3))
        with session_scope(db_url) as session:
            request, _, _ = record_request(session, OnDemandOrder(account.account_id, "Final bill", None, None, "finance"))
        await handle.signal(SIGNAL_BILL_ON_DEMAND, BillOnDemandRequested(request_id=request.id))
        await handle.signal(SIGNAL_BILL_ON_DEMAND, BillOnDemandRequested(request_id=request.id))  # a repeat bills nothing more
        done = await eventually(lambda: (row := _request(db_url, request.id)).state == "done" and row)
        bill = await eventually(lambda: (rows := invoices(db_url, account.account_id)) and rows[0].state == "settled" and rows[0])
        assert len(invoices(db_url, account.account_id)) == 1  # the repeated signal billed nothing

        # The cycle closes on 15 December: what the on-demand bill took is not billed again.
        await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
        both = await eventually(lambda: (rows := invoices(db_url, account.account_id)) and len(rows) == 2 and rows)
    cycle = next(i for i in both if i.kind == "cycle")  # both cover the period from 15 November

    assert done.invoice_id == bill.id and bill.kind == "on_demand" and bill.number.startswith(f"INV-{start.year}-")
    # The current period's fee (14 of 30 days from activation) and the unbilled usage, nothing in advance.
    assert sorted((line["kind"], line["net_amount"]) for line in bill.lines) == [("recurring", "4.66"), ("usage", "0.90")]
    assert (bill.local_period_start, bill.local_period_end) == (date(start.year, 11, 15), date(start.year, 12, 5))
    assert [(line["kind"], line["net_amount"], line["period_start"]) for line in cycle.lines] == [("recurring", "9.99", f"{start.year}-12-15")]
    assert invoice_mails(mail_sink, account) == [f"Your invoice {bill.number}", f"Your invoice {cycle.number}"]
    assert [(p.invoice_id, p.amount_cents) for p in payments(db_url, account.account_id)] == [(bill.id, bill.gross_cents), (cycle.id, cycle.gross_cents)]
    assert chain_ok(db_url)


def _request(db_url: str, request_id: str) -> BillOnDemand:
    with session_scope(db_url) as session:
        return session.get(BillOnDemand, request_id)


# --- credit notes ---------------------------------------------------------------------------------


async def test_credit_note_on_an_unpaid_invoice_settles_it_and_ends_dunning(running_worker, make_settings, db_url, oss_http, ts_env, mail_sink):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=DECLINING_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        handle = client.get_workflow_handle(account.workflow_id)
        invoice = await first_invoice(ts_env, db_url, account, start.year)
        await eventually(lambda: _dunning(handle, invoice.id))
        issued_at = await ts_env.get_current_time()
        with session_scope(db_url) as session:
            note, _ = create_credit_note(session, settings, CreditNoteOrder(invoice.id, f"cn-{invoice.id}", CreditRequest(reason="Goodwill"), "finance"),
                                         issued_at=issued_at)
        await handle.signal(SIGNAL_CREDIT_NOTE_ISSUED, CreditNoteIssued(credit_note_id=note.id, invoice_id=invoice.id, amount_cents=-note.gross_cents))
        state = await eventually(lambda: _dunning(handle, None))
        view = await handle.query(QUERY_BALANCE, result_type=BalanceView)
        await eventually(lambda: len(invoice_mails(mail_sink, account)) == 2)
    assert (state.level, view.open_cents, view.open_invoices) == ("none", 0, [])
    assert invoices(db_url, account.account_id)[0].state == "settled"
    assert invoice_mails(mail_sink, account) == [f"Your invoice {invoice.number}", f"Your credit note {note.number}"]
    mail = [m for m in mails_to(mail_sink, account.email) if m["Subject"] == f"Your credit note {note.number}"][0]
    assert [part.get_filename() for part in mail.iter_attachments()] == [f"{note.number}.pdf"]
    # The card was tried once, at issue; nothing more is collected for a credited invoice.
    assert [(p.method, p.status) for p in payments(db_url, account.account_id)] == [("card", "declined"), ("credit_note", "succeeded")]
    assert chain_ok(db_url)


async def _dunning(handle, invoice_id):
    state = await handle.query(QUERY_DUNNING_STATE, result_type=DunningView)
    return state if state.invoice_id == invoice_id else None


# --- e-mail delivery retried while the mail server fails -------------------------------------------


class FlakySmtp:
    """A real SMTP server (aiosmtpd) that answers the first `failures` messages with `code`, then accepts."""

    def __init__(self, directory: Path, failures: int, code: str = "451 4.3.0 Mailbox temporarily unavailable") -> None:
        self.failures, self.code, self.attempts, self.accepted = failures, code, 0, []
        self._controller = _BoundPortController(self, hostname="127.0.0.1", port=0, server_hostname="flaky-smtp")

    async def handle_DATA(self, server, session, envelope) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            return self.code
        self.accepted.append(envelope.content)
        return "250 OK"

    def __enter__(self) -> FlakySmtp:
        self._controller.start()
        self.port = self._controller.port
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


async def test_invoice_mail_is_retried_until_the_mail_server_takes_it(running_worker, make_settings, db_url, oss_http, ts_env, tmp_path):
    start = await pin_clock(ts_env, 12, 1)
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=CARD)
    with FlakySmtp(tmp_path, failures=3) as smtp:
        settings = make_settings(smtp_port=smtp.port)
        async with running_worker(settings) as client:
            await start_billing(client, settings.task_queue, account)
            await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
            invoice = await eventually(lambda: (rows := invoices(db_url, account.account_id)) and rows[0].state == "settled" and rows[0])
    assert smtp.attempts == 4 and len(smtp.accepted) == 1
    assert f"Subject: Your invoice {invoice.number}".encode() in smtp.accepted[0]
    with session_scope(db_url) as session:
        sent = session.get(Notification, f"invoice:{invoice.id}")
    assert sent is not None and sent.recipient == account.email
    # The invoice went out before it was collected.
    assert [p.status for p in payments(db_url, account.account_id)] == ["succeeded"]


async def test_a_mail_server_refusing_the_invoice_for_good_does_not_stop_collection(running_worker, make_settings, db_url, oss_http, ts_env, tmp_path):
    start = await pin_clock(ts_env, 12, 1)
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=start, bill_cycle_day=15, payment_method=CARD)
    with FlakySmtp(tmp_path, failures=1_000, code="550 5.1.1 Mailbox unavailable") as smtp:
        settings = make_settings(smtp_port=smtp.port)
        async with running_worker(settings) as client:
            await start_billing(client, settings.task_queue, account)
            await advance_to(ts_env, local_midnight(date(start.year, 12, 15)) + timedelta(hours=1))
            invoice = await eventually(lambda: (rows := invoices(db_url, account.account_id)) and rows[0].state == "settled" and rows[0])
            failed = await eventually(lambda: [e for e in events(db_url, account.account_id) if e.kind == "invoice.delivery_failed"])
    assert smtp.attempts == 1  # a permanent refusal is not retried
    assert "550" in failed[0].message
    assert invoice.paid_cents == invoice.gross_cents
    with session_scope(db_url) as session:
        assert session.exec(select(Notification).where(Notification.id == f"invoice:{invoice.id}")).first() is None
    assert Decimal(invoice.gross_cents) > 0
