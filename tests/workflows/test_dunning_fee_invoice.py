"""The late fee on its own fee-only invoice (Mahngebührenrechnung): the real dunning activities on the `db_url`
database (both backends), the SMTP sink, and the e-invoice XML checked as a receiver checks it (XSD, CEN
EN 16931 and Factur-X schematron, tests/documents/validators.py)."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from lxml import etree
from sqlmodel import select

from activities.dunning import LateFeeRequest
from activities.dunning_fee_invoice import FEE_PAYMENT_TERMS, fee_invoice_id
from persistence.db import session_scope
from persistence.tables import BusinessEvent, HubEvent, Invoice, Notification, Payment, PendingOneTimeCharge
from services.pending_charges import add_pending_charge, unbilled_pending_charges
from tests.documents.validators import all_errors
from tests.support.billing import mails_to
from tests.support.dunning import dunning_activities
from tests.support.records import create_account_with_email
from tests.workflows.test_invoice_lifecycle import FlakySmtp

NO_ERRORS_EN16931 = {"xsd": [], "cen": [], "facturx": []}
CII = {"ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
       "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"}


def fee(account_id: str, episode: str, level: str = "mahnung") -> LateFeeRequest:
    return LateFeeRequest(episode_id=episode, billing_account_id=account_id, level=level, amount=Decimal("2.50"), description="Mahngebühr 1. Mahnung")


def row(db_url: str, table, *where):
    with session_scope(db_url) as session:
        return session.exec(select(table).where(*where)).first()


async def test_a_late_fee_is_billed_at_once_on_a_valid_fee_only_invoice_and_mailed_once(make_settings, db_url, mail_sink):
    settings = make_settings()
    acts = dunning_activities(settings)
    account_id, email = create_account_with_email(db_url)
    episode = f"dunning-{account_id}-inv1"
    before = datetime.now(UTC)

    key = await acts.add_late_fee(fee(account_id, episode))
    again = await acts.add_late_fee(fee(account_id, episode))  # a retried activity: nothing happens twice

    assert key == again == f"dunning-fee:{episode}:mahnung"
    charge = row(db_url, PendingOneTimeCharge, PendingOneTimeCharge.key == key)
    invoice = row(db_url, Invoice, Invoice.id == charge.invoice_id)
    assert (charge.status, charge.invoice_id) == ("billed", fee_invoice_id(key))
    assert (invoice.kind, invoice.state, invoice.net_cents, invoice.vat_cents, invoice.gross_cents) == ("late_fee", "sent", 250, 0, 250)
    assert invoice.number.startswith(f"INV-{before.year}-") and invoice.content_hash and invoice.pdf.startswith(b"%PDF")
    assert invoice.due_at - invoice.issued_at == FEE_PAYMENT_TERMS and invoice.issued_at >= before
    assert [(line["description"], line["vat_category"], line["net_amount"]) for line in invoice.lines] == [("Mahngebühr 1. Mahnung", "O", "2.50")]
    assert len(list_rows(db_url, Invoice, Invoice.billing_account_id == account_id)) == 1

    # The XML is a valid EN 16931 invoice in category O: the BR-O rules pass (exemption reason, no VAT IDs, 0 VAT).
    assert all_errors(invoice.xml, "en16931") == NO_ERRORS_EN16931
    tree = etree.fromstring(invoice.xml)
    assert tree.xpath("//ram:ApplicableTradeTax/ram:CategoryCode/text()", namespaces=CII) == ["O", "O"]
    assert tree.xpath("//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:ExemptionReason/text()", namespaces=CII)
    assert not tree.xpath("//ram:SpecifiedTaxRegistration/ram:ID[@schemeID='VA']", namespaces=CII)  # BR-O-02
    assert tree.xpath("//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID[@schemeID='FC']/text()", namespaces=CII) == [
        settings.seller_tax_number]

    # E-mailed once with its PDF, keyed like every invoice mail.
    mails = [m for m in mails_to(mail_sink, email)]
    assert [m["Subject"] for m in mails] == [f"Your invoice {invoice.number} (Mahngebühr / late fee)"]
    attachments = [(a.get_filename(), a.get_content_type()) for a in mails[0].iter_attachments()]
    assert attachments == [(f"{invoice.number}.pdf", "application/pdf")]
    assert row(db_url, Notification, Notification.id == f"invoice:{invoice.id}") is not None
    story = [e.kind for e in list_rows(db_url, BusinessEvent, BusinessEvent.billing_account_id == account_id)]
    assert story.count("dunning.late_fee") == 1
    # Sent as every invoice is sent (activities.billing.DocumentMail): the move to `sent` is told to the hub once (TMF678).
    bill_events = list_rows(db_url, HubEvent, HubEvent.resource_key == f"customerBill:{invoice.id}")
    assert sorted((e.sequence, e.event_type, e.state) for e in bill_events) == [(1, "CustomerBillCreateEvent", "new"),
                                                                                (2, "CustomerBillStateChangeEvent", "sent")]


async def test_a_fee_invoice_the_mail_server_refuses_for_good_is_recorded_and_dunning_goes_on(make_settings, db_url, tmp_path):
    with FlakySmtp(tmp_path, failures=1_000, code="550 5.1.1 Mailbox unavailable") as smtp:
        acts = dunning_activities(make_settings(smtp_port=smtp.port))
        account_id, email = create_account_with_email(db_url)
        episode = f"dunning-{account_id}-inv1"
        key = await acts.add_late_fee(fee(account_id, episode))  # not raised: an undeliverable mail must not hold up dunning

    invoice = row(db_url, Invoice, Invoice.id == fee_invoice_id(key))
    assert smtp.attempts == 1 and smtp.accepted == []
    failed = [e for e in list_rows(db_url, BusinessEvent, BusinessEvent.billing_account_id == account_id) if e.kind == "invoice.delivery_failed"]
    assert len(failed) == 1 and failed[0].message.startswith(f"{invoice.number} could not be e-mailed to {email}: ") and "550" in failed[0].message
    assert row(db_url, Notification, Notification.id == f"invoice:{invoice.id}") is None
    assert invoice.state == "new"  # not sent


async def test_waiving_an_invoiced_fee_issues_one_credit_note_that_settles_the_fee_invoice(make_settings, db_url, mail_sink):
    settings = make_settings()
    acts = dunning_activities(settings)
    account_id, email = create_account_with_email(db_url)
    episode = f"dunning-{account_id}-inv1"
    key = await acts.add_late_fee(fee(account_id, episode))

    result = await acts.waive_fees(episode, account_id, [key], "finance:bbb", "goodwill")
    repeated = await acts.waive_fees(episode, account_id, [key], "finance:bbb", "goodwill")

    fee_invoice = row(db_url, Invoice, Invoice.id == fee_invoice_id(key))
    notes = list_rows(db_url, Invoice, Invoice.referenced_invoice_id == fee_invoice.id)
    assert (result.waived, result.credited, result.already_billed, result.credit_notes) == ([], [key], [], [notes[0].number])
    assert (repeated.credited, repeated.already_waived) == ([], [key])
    assert [(n.kind, n.gross_cents, n.vat_cents, n.reason) for n in notes] == [("credit_note", -250, 0, "Mahngebühr erlassen: goodwill")]
    assert all_errors(notes[0].xml, "en16931") == NO_ERRORS_EN16931
    assert (fee_invoice.state, fee_invoice.paid_cents) == ("settled", 250)
    ledger = list_rows(db_url, Payment, Payment.billing_account_id == account_id)
    assert [(p.method, p.amount_cents, p.invoice_id, p.recorded_by) for p in ledger] == [("credit_note", 250, fee_invoice.id, "finance:bbb")]
    subjects = [m["Subject"] for m in mails_to(mail_sink, email)]
    assert subjects == [f"Your invoice {fee_invoice.number} (Mahngebühr / late fee)", f"Your credit note {notes[0].number}"]
    assert "the late fee is waived" in mails_to(mail_sink, email)[1].get_body().get_content()  # the fee documents' own words


# A buyer with a VAT ID gets a valid fee invoice too (no VAT identifier on it, BR-O-02/-04):
# tests/workflows/test_out_of_scope_fee_documents.py.


def test_cycle_and_on_demand_gathering_leaves_out_late_fees_outside_the_scope_of_vat(db_url):
    account_id, _email = create_account_with_email(db_url)
    with session_scope(db_url) as session:
        add_pending_charge(session, key=f"o:{account_id}", billing_account_id=account_id, amount=Decimal("2.50"), description="Mahngebühr")
        add_pending_charge(session, key=f"s:{account_id}", billing_account_id=account_id, amount=Decimal("5.00"), description="Bearbeitung",
                           kind="one_time", vat_rate=Decimal("19"), vat_category="S")
        add_pending_charge(session, key=f"fee-s:{account_id}", billing_account_id=account_id, amount=Decimal("5.00"), description="Mahnkosten (S)",
                           vat_rate=Decimal("19"), vat_category="S")
    with session_scope(db_url) as session:
        assert [r.key for r in unbilled_pending_charges(session, account_id)] == [f"s:{account_id}", f"fee-s:{account_id}"]


def list_rows(db_url: str, table, *where):
    with session_scope(db_url) as session:
        return list(session.exec(select(table).where(*where)))


async def test_late_fees_count_toward_the_arrears_but_never_toward_the_barring_floor(make_settings, db_url, oss_http, ts_env, mail_sink):
    """99.00 EUR overdue: the barring notice level (100.00 EUR) is skipped on day 21. On day 35 the first letter's fee
    invoice (2.50 EUR, due on day 28) brings the arrears to 101.50 EUR, but a barring may not rest on fees (§61 TKG)."""
    from persistence.tables import DunningAction
    from tests.support.billing import advance_to, barring, open_account, pin_clock
    from tests.workflows.test_dunning_workflow import DAY, DECLINING_CARD, add_invoice, days_after, dunning_worker, start_episode, status

    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=9900, due_at=due)
    async with dunning_worker(ts_env, settings):
        handle = await start_episode(ts_env.client, settings, account, invoice_id, due)
        await advance_to(ts_env, due + 36 * DAY)
        view = await status(handle)
        await handle.terminate(reason="test finished")

    assert view.barred == "none" and await barring(oss_http, account.msisdns[0]) == "none"
    skipped = sorted((a for a in list_rows(db_url, DunningAction, DunningAction.episode_id == handle.id) if a.kind == "level_skipped"), key=lambda a: a.at)
    assert [(a.key.split(":")[-2], days_after(due, a.at)) for a in skipped] == [("sperrankuendigung", 21), ("sperre-abgehend", 35)]
    assert "arrears of 99.00 EUR (2.50 EUR late fees not counted) are below the 100.00 EUR" in skipped[1].reason
    assert not [m for m in mails_to(mail_sink, account.email) if m["Subject"].strip().startswith("Ankündigung der Sperre")]
