"""Activities of the DunningWorkflow. Each is keyed by a business id (episode, timeline step, attempt),
so a retry after a crash or a timeout repeats nothing the customer or the OSS would notice:

- notices: the Notification row's key (and the e-mail's Message-ID derived from it);
- late fees: the pending charge's key `dunning-fee:<episode>:<level>`, its fee invoice's id derived from it;
- payment retries: the gateway idempotency key from invoice and attempt (domain.payments.ChargeRequest);
- barring: the OSS service order's externalId `dunning:<episode>:<step>:<product>`;
- termination: the OSS service order's externalId `terminate:<episode>:<product>`, the final bill request's
  idempotency key `dunning-final-bill:<episode>`;
- every record: the dunning_action row's key.

Every action also writes a BusinessEvent for the customer's story."""
from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from api import tmf
from activities import msisdn_pool
from activities.dunning_fee_invoice import LATE_FEE_KIND, credit_fee_invoice, fee_credit_note_id, fee_invoice_id, issue_fee_invoice
from activities.billing import DocumentMail, PaymentLookUp
from activities.invoice_issuer import record_settlement
from activities.ledger import allocate_payments, credit_cents, open_invoices
from activities.order_records import record_event, require_billing_account, utcnow
from activities.oss_orders import place_order
from adapters.notify.email import EmailMessageSpec, NotificationRejected, NotificationUnavailable, SmtpNotifier
from adapters.oss.port import OssClient
from adapters.payments.port import GatewayError, GatewayUnavailable, PaymentGateway
from config.dunning_loader import DunningConfig
from config.settings import Settings
from domain.billing_cycle import zone
from domain.dunning_policy import DunningPolicy
from domain.dunning_timeline import DunningBalance, DunningInput, StaffCommand
from domain.money import from_minor
from domain.payments import ChargeRequest, parse_payment_method
from domain.products import ProductStatus
from persistence.db import session_scope
from persistence.tables import (
    BillingAccount,
    BillOnDemand,
    Customer,
    DunningAction,
    DunningEpisode,
    Invoice,
    Notification,
    Payment,
    PendingOneTimeCharge,
    Product,
)
from services import dunning as records
from services.audit import SYSTEM, record_audit
from services.hub_events import DUNNING_LEVEL_CHANGE, emit_event, emit_product_event
from services.payments import advance_payment, emit_payment_event
from services.pending_charges import WAIVED, add_pending_charge, waive_pending_charge
from services.service_state import note_underlying, record_status_change, split_manual_holds

# Payment states in which an invoice is not charged again off-session (see retry_plan).
IN_FLIGHT = ("processing", "requires_action", "unknown")
BARRING_LABELS = {"outgoing": "abgehende Verbindungen", "full": "alle Verbindungen (Notrufe bleiben möglich)", "none": "keine"}
FINAL_BILL_NAMESPACE = uuid.UUID("0d6b5e3c-86c4-4f43-9f0e-7f3c1ad0b7e2")


class SmsSender(Protocol):
    """An SMS gateway (adapters.notify.sms.HttpSmsSender). Must be idempotent on `idempotency_key`."""

    async def send(self, *, to: str, text: str, idempotency_key: str) -> str: ...


# --- what the workflow sends and gets back ------------------------------------------------------------------


class NoticeRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    key: str  # "<episode>:<step>:notice-<n>"
    level: str
    template: str
    channel: Literal["email", "sms"] = "email"
    announces_barring: bool = False
    barring_at: datetime | None = None
    barring_scope: str | None = None
    late_fee_cents: int = 0
    as_of: datetime


class NoticeResult(BaseModel):
    sent: bool
    sent_at: datetime | None = None  # when it went out (the sending attempt's time)
    recipient: str | None = None
    subject: str | None = None
    reason: str | None = None


class LateFeeRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    level: str
    amount: Decimal
    description: str
    vat_rate: Decimal = Decimal("0")
    vat_category: str = "O"

    @property
    def key(self) -> str:
        return f"dunning-fee:{self.episode_id}:{self.level}"


class WaiveResult(BaseModel):
    waived: list[str] = []  # not yet invoiced: waived
    credited: list[str] = []  # on their fee invoice: credited in full by a credit note
    credit_notes: list[str] = []  # the credit notes' numbers
    already_billed: list[str] = []  # on an invoice that cannot be credited here
    already_waived: list[str] = []


class RetryItem(BaseModel):
    invoice_id: str
    attempt: int


class RetryRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    invoice_id: str
    attempt: int
    trigger: str  # "retry-2", "level:mahnung" or "staff:<command id>"


class RetryResult(BaseModel):
    status: str  # succeeded | processing | requires_action | declined | canceled | no_payment_method | nothing_due
    payment_id: str | None = None
    amount_cents: int = 0
    decline_code: str | None = None
    decline_class: str | None = None


class BarringRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    barring: Literal["none", "outgoing", "full"]
    key: str  # "<episode>:<step>" for a barring, "<episode>:lift-<n>" for lifting
    level: str | None = None
    reason: str


class BarringResult(BaseModel):
    changed: list[str] = []
    refused: list[str] = []


class TerminationRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    level: str
    final_bill: bool = True
    overdue_cents: int = 0


class HandOverRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    level: str
    kind: Literal["collections", "write_off"]
    agency: str | None = None
    overdue_cents: int
    invoice_ids: list[str]


class RecordRequest(BaseModel):
    """An entry in the action log and the customer's story, for what needs no outside call."""

    episode_id: str
    billing_account_id: str
    key: str
    kind: str  # e.g. level_skipped, barring_deferred, retry_skipped, started
    event_kind: str  # BusinessEvent kind, e.g. dunning.level_skipped
    message: str
    level: str | None = None
    status: str = "done"
    data: dict = {}


class StaffResult(BaseModel):
    episode_id: str
    billing_account_id: str
    command: StaffCommand
    kind: str  # pause | resume | waive_fee | retry_payment
    status: Literal["applied", "rejected"]
    message: str
    result: dict = {}


class CloseRequest(BaseModel):
    episode_id: str
    billing_account_id: str
    state: Literal["settled", "collections", "written_off"]
    reason: str
    level: str | None = None


def sms_recipients(session: Session, account: BillingAccount, customer: Customer | None) -> list[str]:
    """Where an SMS notice goes: the MSISDN of every line of the account not yet terminated (a barred line still
    receives SMS), in E.164 with "+"; the customer's phone number when the account has no line."""
    live = (ProductStatus.ACTIVE, ProductStatus.SUSPENDED)
    products = session.exec(select(Product).where(Product.billing_account_id == account.id, Product.status.in_(live)).order_by(Product.msisdn)).all()
    numbers = [p.msisdn for p in products if p.msisdn] or ([customer.phone] if customer is not None and customer.phone else [])
    return list(dict.fromkeys(n if n.startswith("+") else f"+{n}" for n in numbers))


def write_off_id(episode_id: str) -> str:
    return f"writeOff:{episode_id}"


def write_off(session: Session, account: BillingAccount, req: HandOverRequest, *, at: datetime) -> int:
    """Books the write-off of what is still open on `req.invoice_ids` (once per episode); returns the amount.
    Money received and not yet allocated is applied first, so only what is really unpaid is written off."""
    entry_id = write_off_id(req.episode_id)
    existing = session.get(Payment, entry_id)
    if existing is not None:
        return existing.amount_cents
    allocate_payments(session, account.id)
    invoices = [i for i in open_invoices(session, account.id) if i.id in set(req.invoice_ids) and i.gross_cents > i.paid_cents]
    amount = sum(i.gross_cents - i.paid_cents for i in invoices)
    if amount <= 0:
        return 0
    reason = f"written off for arrears (dunning episode {req.episode_id}, level {req.level})"
    entry = Payment(id=entry_id, correlator_id=entry_id, billing_account_id=account.id, amount_cents=amount, currency=account.currency,
                    method="write_off", status="succeeded", description=reason.capitalize(), recorded_by="dunning", created_at=at)
    session.add(entry)
    session.flush()
    before = [{"invoiceId": i.id, "number": i.number, "state": i.state, "openCents": i.gross_cents - i.paid_cents} for i in invoices]
    for invoice in invoices:
        record_settlement(session, entry, invoice, invoice.gross_cents - invoice.paid_cents, at)
    record_audit(session, SYSTEM, "dunning.write_off", "billingAccount", account.id, reason=reason, before={"openInvoices": before},
                 after={"writeOff": entry_id, "amountCents": amount, "invoices": [{"invoiceId": i.id, "state": i.state} for i in invoices]},
                 customer_id=account.customer_id, at=at)
    return amount


def collections_dossier(session: Session, account: BillingAccount, req: HandOverRequest) -> dict:
    """What the collection agency gets: the debtor, the invoices handed over with what is open on each, the
    episode's late fees and the notices sent (with when)."""
    customer = session.get(Customer, account.customer_id)
    invoices = [i for i in open_invoices(session, account.id) if i.id in set(req.invoice_ids)]
    fees = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.source == req.episode_id)).all()
    sent = session.exec(select(Notification).where(Notification.id.startswith(f"dunning:{req.episode_id}:"))).all()
    return {
        "debtor": {"customerId": account.customer_id, "name": customer.name if customer else None, "email": account.email or (customer.email if customer else None),
                   "phone": customer.phone if customer else None, "address": customer.address if customer else None, "billingAccountId": account.id},
        "invoices": [{"invoiceId": i.id, "number": i.number, "issuedAt": i.issued_at.isoformat(), "dueAt": i.due_at.isoformat(),
                      "grossCents": i.gross_cents, "openCents": i.gross_cents - i.paid_cents} for i in invoices],
        "lateFees": [{"key": f.key, "amountCents": f.amount_cents, "status": f.status, "invoiceId": f.invoice_id} for f in fees],
        "notices": sorted(({"channel": n.channel, "subject": n.subject, "sentAt": n.sent_at.isoformat()} for n in sent), key=lambda n: n["sentAt"]),
        "currency": account.currency,
        "openCents": sum(i.gross_cents - i.paid_cents for i in invoices),
    }


def arrears(session: Session, billing_account_id: str, as_of: datetime) -> DunningBalance:
    invoices = open_invoices(session, billing_account_id)
    overdue = [i for i in invoices if i.due_at <= as_of and i.gross_cents > i.paid_cents]
    credit = credit_cents(session, billing_account_id)
    overdue_cents = sum(i.gross_cents - i.paid_cents for i in overdue) - credit
    open_cents = sum(i.gross_cents - i.paid_cents for i in invoices) - credit
    fee_cents = sum(i.gross_cents - i.paid_cents for i in overdue if i.kind == LATE_FEE_KIND)
    return DunningBalance(as_of=as_of, overdue_cents=max(overdue_cents, 0), open_cents=open_cents, fee_cents=min(fee_cents, max(overdue_cents, 0)),
                          overdue_invoice_ids=[i.id for i in overdue], overdue_invoice_numbers=[i.number or i.id for i in overdue])


class DunningActivities(PaymentLookUp, DocumentMail):
    """The DunningWorkflow's activities. The async ones run their database work on a thread pool (BlockingWork), never on the event loop.
    A fee document (late-fee invoice, its credit note) is e-mailed as activities.billing.send_invoice e-mails any document
    (DocumentMail), except that a refused address is recorded, not raised: an undeliverable mail must not hold up dunning."""

    _blocking_name = "dunning-blocking"
    # A debit a dunning retry made, moved on by a look at the gateway (PaymentLookUp), is told as dunning's.
    _checked_kind = "dunning.payment_retry"
    _checked_words = "Dunning payment"

    def __init__(self, settings: Settings, config: DunningConfig, gateway: PaymentGateway, oss: OssClient, notifier: SmtpNotifier,
                 sms: SmsSender | None = None) -> None:
        self.settings = settings
        self.db_url = settings.database_url
        self.config = config
        self.gateway = gateway
        self.oss = oss
        self.notifier = notifier
        self.sms = sms

    _account = staticmethod(require_billing_account)

    # --- set-up and balance --------------------------------------------------------------------------------

    @activity.defn(name="dunning_load_policy")
    def load_policy(self, segment: str) -> DunningPolicy:
        try:
            return self.config.policy(segment)
        except KeyError as error:
            raise ApplicationError(str(error), type="UnknownDunningSegment", non_retryable=True) from error

    @activity.defn(name="dunning_open_episode")
    def open_episode(self, inp: DunningInput) -> None:
        with session_scope(self.db_url) as session:
            account = self._account(session, inp.billing_account_id)
            _row, created = records.open_episode(session, inp, at=utcnow())
            if created:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.started",
                             message=f"Dunning episode started ({inp.segment}) for invoices overdue since {inp.due_at:%Y-%m-%d}",
                             data={"episodeId": inp.episode_id, "invoiceId": inp.invoice_id, "segment": inp.segment})

    @activity.defn(name="dunning_read_balance")
    def read_balance(self, billing_account_id: str, as_of: datetime) -> DunningBalance:
        """Arrears at `as_of` (the workflow's clock): open amounts past their due date, less money received
        and not yet allocated to an invoice (a payment the billing-account workflow has not booked yet)."""
        with session_scope(self.db_url) as session:
            self._account(session, billing_account_id)
            return arrears(session, billing_account_id, as_of)

    # --- notices -----------------------------------------------------------------------------------------

    @activity.defn(name="dunning_send_notice")
    async def send_notice(self, req: NoticeRequest) -> NoticeResult:
        template = self.config.template(req.template)

        def read():  # noqa: ANN202
            with session_scope(self.db_url) as session:
                account = self._account(session, req.billing_account_id)
                customer = session.get(Customer, account.customer_id)
                episode = session.get(DunningEpisode, req.episode_id)
                values = self._notice_values(session, account, customer, episode, req)
                subject, body = template.render(values)
                already = session.get(Notification, req.key)
                msisdns: list[str] = []
                if req.channel == "email":
                    recipient = account.email or (customer.email if customer else None)
                else:
                    msisdns = sms_recipients(session, account, customer)
                    recipient = ", ".join(msisdns)
                return account, subject, body, already, recipient, msisdns

        account, subject, body, already, recipient, msisdns = await self._in_thread(read)
        if already is not None:
            return NoticeResult(sent=True, sent_at=already.sent_at, recipient=already.recipient, subject=already.subject)
        kind = "dunning.barring_notice" if req.announces_barring else "dunning.notice"
        if not recipient:
            return await self._in_thread(self._notice_not_sent, req, account, f"no {'e-mail address' if req.channel == 'email' else 'mobile number'} on file")
        try:
            if req.channel == "email":
                message_id = await self.notifier.send(EmailMessageSpec(to=recipient, subject=subject, body_text=body, idempotency_key=req.key))
            elif self.sms is not None:
                # One SMS to every line of the account (key per number: the gateway sends each once).
                ids = [await self.sms.send(to=msisdn, text=body, idempotency_key=f"{req.key}:{msisdn}") for msisdn in msisdns]
                message_id = ",".join(ids)
            else:
                return await self._in_thread(self._notice_not_sent, req, account, "no SMS gateway is configured")
        except NotificationUnavailable as error:
            raise ApplicationError(f"SMTP unavailable: {error}", type="NotificationUnavailable") from error
        except NotificationRejected as error:
            # A refused address or message will not be accepted on retry: the workflow records it.
            raise ApplicationError(f"notice refused: {error}", type="NotificationRejected", non_retryable=True) from error
        await self._in_thread(self._notice_sent, req, account, kind, recipient, subject, message_id)
        return NoticeResult(sent=True, sent_at=utcnow(), recipient=recipient, subject=subject)

    def _notice_sent(self, req: NoticeRequest, account: BillingAccount, kind: str, recipient: str, subject: str, message_id: str) -> None:
        with session_scope(self.db_url) as session:
            if session.get(Notification, req.key) is None:
                session.add(Notification(id=req.key, billing_account_id=account.id, channel=req.channel, recipient=recipient,
                                         subject=subject or req.template, message_id=message_id, sent_at=utcnow()))
                barring = f", barring announced for {req.barring_at:%Y-%m-%d %H:%M} UTC" if req.barring_at else ""
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=kind,
                             message=f"Dunning level {req.level}: {req.channel} notice '{subject or req.template}' sent to {recipient}{barring}",
                             data={"episodeId": req.episode_id, "level": req.level, "template": req.template, "key": req.key})
                records.record_action(session, key=req.key, episode_id=req.episode_id, billing_account_id=account.id, kind="notice",
                                      level=req.level, at=utcnow(), data={"template": req.template, "channel": req.channel, "recipient": recipient,
                                                                          "barringAt": req.barring_at.isoformat() if req.barring_at else None})

    def _notice_not_sent(self, req: NoticeRequest, account: BillingAccount, reason: str) -> NoticeResult:
        with session_scope(self.db_url) as session:
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.notice_not_sent",
                         message=f"Dunning level {req.level}: {req.channel} notice '{req.template}' not sent: {reason}",
                         data={"episodeId": req.episode_id, "level": req.level, "key": req.key})
            records.record_action(session, key=req.key, episode_id=req.episode_id, billing_account_id=account.id, kind="notice", level=req.level,
                                  status="failed", reason=reason, at=utcnow(), data={"template": req.template, "channel": req.channel})
        return NoticeResult(sent=False, reason=reason)

    def _notice_values(self, session: Session, account: BillingAccount, customer: Customer | None, episode: DunningEpisode | None,
                       req: NoticeRequest) -> dict[str, str]:
        balance = arrears(session, account.id, req.as_of)
        tz = zone(account.timezone)
        invoices = open_invoices(session, account.id)
        overdue = [i for i in invoices if i.id in balance.overdue_invoice_ids]
        first_due = min((i.due_at for i in overdue), default=None)
        fees = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.source == req.episode_id)).all()
        total_fees = sum(f.amount_cents for f in fees if f.status != WAIVED)
        return {
            "customer_name": customer.name if customer else "Kundin, Kunde",
            "account_id": account.id,
            "invoice_numbers": ", ".join(balance.overdue_invoice_numbers) or (episode.invoice_id if episode else ""),
            "due_date": f"{first_due.astimezone(tz):%d.%m.%Y}" if first_due else "",
            "overdue_amount": f"{balance.overdue}",
            "unpaid_invoices": str(balance.unpaid_invoices),
            "late_fee": f"{from_minor(req.late_fee_cents)}",
            "total_fees": f"{from_minor(total_fees)}",
            "barring_date": f"{req.barring_at.astimezone(tz):%d.%m.%Y %H:%M}" if req.barring_at else "",
            "barring_scope": BARRING_LABELS.get(req.barring_scope or "", ""),
            "level": req.level,
            "seller_name": self.settings.seller_name,
            "currency": account.currency,
        }

    # --- late fees ---------------------------------------------------------------------------------------

    @activity.defn(name="dunning_add_late_fee")
    async def add_late_fee(self, req: LateFeeRequest) -> str:
        """Records the fee (pending charge `dunning-fee:<episode>:<level>`) and bills it at once on its own
        invoice (activities.dunning_fee_invoice: category O cannot share an invoice), which is e-mailed like
        any invoice. Repeating it finds the fee, its invoice and its mail and does nothing again."""
        key, invoice_id = await self._in_thread(self._bill_late_fee, req)
        if invoice_id is not None:
            await self._send_document(invoice_id, fee_wording=True, record_refusal=True)
        return key

    def _bill_late_fee(self, req: LateFeeRequest) -> tuple[str, str | None]:
        with session_scope(self.db_url) as session:
            account = self._account(session, req.billing_account_id)
            row, created = add_pending_charge(session, key=req.key, billing_account_id=account.id, amount=req.amount, description=req.description,
                                              kind="late_fee", vat_rate=req.vat_rate, vat_category=req.vat_category, source=req.episode_id, at=utcnow())
            if created:
                records.record_action(session, key=req.key, episode_id=req.episode_id, billing_account_id=account.id, kind="late_fee",
                                      level=req.level, at=utcnow(), data={"amountCents": row.amount_cents, "pendingChargeKey": row.key})
            if row.status == WAIVED:
                return row.key, None
            if row.invoice_id is not None:
                return row.key, row.invoice_id
            try:
                with session.begin_nested():
                    invoice = issue_fee_invoice(session, self.settings, account, row, utcnow())
            except ValueError as error:
                # The issuer found the document invalid (EN 16931); the savepoint undid number and chain.
                if created:
                    record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.late_fee_not_invoiced",
                                 message=f"Dunning level {req.level}: late fee {req.description} of {req.amount} EUR recorded but not invoiced: {error}; "
                                         "staff must bill it by hand",
                                 data={"episodeId": req.episode_id, "level": req.level, "pendingChargeKey": row.key})
                return row.key, None
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.late_fee",
                         message=f"Dunning level {req.level}: late fee {req.description} of {req.amount} EUR billed on invoice {invoice.number} "
                                 f"(due {invoice.due_at:%Y-%m-%d})",
                         data={"episodeId": req.episode_id, "level": req.level, "pendingChargeKey": row.key, "invoiceId": invoice.id,
                               "number": invoice.number})
            return row.key, invoice.id

    @activity.defn(name="dunning_waive_fees")
    async def waive_fees(self, episode_id: str, billing_account_id: str, keys: list[str], actor: str, reason: str) -> WaiveResult:
        """Waives fees: one not yet invoiced is marked waived; one already on its fee invoice is credited in
        full by a credit note (once per fee), which settles the fee invoice or becomes account credit, and is
        e-mailed. `already_billed` lists fees that could not be credited (e.g. billed on some other invoice)."""
        result, notes = await self._in_thread(self._waive_fees, billing_account_id, keys, actor, reason)
        for note_id in notes:
            await self._send_document(note_id, fee_wording=True, record_refusal=True)
        return result

    def _waive_fees(self, billing_account_id: str, keys: list[str], actor: str, reason: str) -> tuple[WaiveResult, list[str]]:
        result, notes = WaiveResult(), []
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            for key in keys:
                before = session.exec(select(PendingOneTimeCharge).where(PendingOneTimeCharge.key == key)).first()
                if before is None:
                    continue
                was = before.status
                row = waive_pending_charge(session, key, actor=actor, reason=reason, at=utcnow())
                if row.status == WAIVED and was != WAIVED:
                    result.waived.append(key)
                elif row.status == WAIVED:
                    result.already_waived.append(key)
                elif row.invoice_id is not None and row.invoice_id == fee_invoice_id(key):
                    already = session.get(Invoice, fee_credit_note_id(key)) is not None
                    note = credit_fee_invoice(session, self.settings, row, reason=reason, actor=actor, at=utcnow())
                    (result.already_waived if already else result.credited).append(key)
                    result.credit_notes.append(note.number)
                    notes.append(note.id)
                    if not already:
                        record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.late_fee_credited",
                                     message=f"Late fee {row.description} waived after it was invoiced: credit note {note.number} "
                                             f"over {from_minor(-note.gross_cents)} EUR (by {actor}: {reason})",
                                     data={"pendingChargeKey": key, "invoiceId": row.invoice_id, "creditNoteId": note.id})
                else:
                    result.already_billed.append(key)
        return result, notes

    # --- payment retries ---------------------------------------------------------------------------------

    @activity.defn(name="dunning_retry_plan")
    def retry_plan(self, billing_account_id: str, as_of: datetime) -> list[RetryItem]:
        """The overdue invoices to charge again, each with its next attempt number (after every attempt any
        path has made), so a new attempt always gets a new idempotency key and never replays an old decline."""
        with session_scope(self.db_url) as session:
            self._account(session, billing_account_id)
            items = []
            for invoice in open_invoices(session, billing_account_id):
                if invoice.due_at > as_of or invoice.gross_cents <= invoice.paid_cents:
                    continue
                tried = session.exec(select(Payment).where(Payment.invoice_id == invoice.id)).all()
                if any(p.status in IN_FLIGHT for p in tried):
                    # A SEPA debit still in flight is waited for, and a charge the bank wants the customer to
                    # authenticate (3-D Secure) cannot succeed off-session: no retry for that invoice.
                    continue
                attempts = [p.attempt for p in tried]
                items.append(RetryItem(invoice_id=invoice.id, attempt=max(attempts, default=0) + 1))
            return items

    @activity.defn(name="dunning_retry_payment")
    async def retry_payment(self, req: RetryRequest) -> RetryResult:
        """Charges the invoice's open amount from the saved payment method. The same (invoice, attempt) is
        the same gateway idempotency key: retrying this activity after a timeout cannot charge twice."""
        def read():  # noqa: ANN202
            with session_scope(self.db_url) as session:
                account = self._account(session, req.billing_account_id)
                invoice = next((i for i in open_invoices(session, account.id) if i.id == req.invoice_id), None)
                open_cents = (invoice.gross_cents - invoice.paid_cents) if invoice is not None else 0
                return account, open_cents, account.payment_method, invoice.number if invoice is not None else req.invoice_id

        account, open_cents, method, number = await self._in_thread(read)
        if open_cents <= 0:
            return RetryResult(status="nothing_due")
        if not method:
            await self._in_thread(self._retry_recorded, req, account, RetryResult(status="no_payment_method"), open_cents, number)
            return RetryResult(status="no_payment_method")
        request = ChargeRequest(invoice_id=req.invoice_id, attempt=req.attempt, amount_minor=open_cents, account_id=account.id,
                                payment_method=method, description=f"Invoice {number} (dunning)")
        try:
            outcome = await self.gateway.charge(request)
            if outcome.status == "unknown":
                # A lost answer is settled by reading the gateway with the same idempotency key, never by charging anew.
                outcome = await self.gateway.find_by_idempotency(request.idempotency_key) or outcome
        except GatewayUnavailable as error:
            raise ApplicationError(f"payment gateway unavailable: {error}", type="GatewayUnavailable") from error
        except GatewayError as error:
            raise ApplicationError(f"payment gateway refused the request: {error}", type=type(error).__name__, non_retryable=True) from error
        result = RetryResult(status=outcome.status, payment_id=request.idempotency_key, amount_cents=open_cents,
                             decline_code=outcome.decline_code, decline_class=outcome.decline_class)
        await self._in_thread(self._store_retry, req, account, request, open_cents, method, outcome)
        if outcome.status == "unknown":
            # Retried by Temporal with the same attempt, hence the same idempotency key: it cannot charge twice.
            raise ApplicationError(f"the outcome of charge {request.idempotency_key} is unknown; reconciling again", type="PaymentOutcomeUnknown")
        await self._in_thread(self._retry_recorded, req, account, result, open_cents, number)
        return result

    def _store_retry(self, req: RetryRequest, account: BillingAccount, request: ChargeRequest, open_cents: int, method: str, outcome) -> None:  # noqa: ANN001
        with session_scope(self.db_url) as session:
            payment = session.exec(select(Payment).where(Payment.correlator_id == request.idempotency_key)).first()
            if payment is None:
                payment = Payment(id=request.idempotency_key, correlator_id=request.idempotency_key, billing_account_id=account.id, invoice_id=req.invoice_id,
                                  amount_cents=open_cents, method=parse_payment_method(method).kind, status=outcome.status, attempt=req.attempt,
                                  gateway_payment_id=outcome.gateway_payment_id, decline_code=outcome.decline_code,
                                  description=f"dunning {req.trigger}", recorded_by="dunning", created_at=utcnow())
                session.add(payment)
                session.flush()
                emit_payment_event(session, payment, created=True, at=utcnow())
            else:
                # Never backwards (a replayed request answers with its first result).
                advance_payment(session, payment, outcome.status, at=utcnow(), decline_code=outcome.decline_code)

    @activity.defn(name="dunning_check_payment")
    async def check_payment(self, payment_id: str) -> RetryResult:
        """Looks up a retry's debit still in flight (SEPA `processing`) at the gateway: the polling fallback for
        a lost webhook, the same look (PaymentLookUp) as activities.billing.check_payment makes for the account's own
        charges. The payment row only moves forward; a change is told in the customer's story. Returns the row's status
        after the look."""
        checked = await self._look_up_payment(payment_id)
        return RetryResult(status=checked.status, payment_id=checked.payment_id, amount_cents=checked.amount_cents, decline_code=checked.decline_code,
                           decline_class=checked.decline_class)

    def _retry_recorded(self, req: RetryRequest, account: BillingAccount, result: RetryResult, open_cents: int, number: str) -> None:
        key = f"{req.episode_id}:retry:{req.invoice_id}:{req.attempt}"
        decline = f", {result.decline_code} ({result.decline_class} decline)" if result.decline_code else ""
        with session_scope(self.db_url) as session:
            _row, created = records.record_action(session, key=key, episode_id=req.episode_id, billing_account_id=account.id, kind="payment_retry",
                                                  level=req.trigger, at=utcnow(), status=result.status,
                                                  data={"invoiceId": req.invoice_id, "attempt": req.attempt, "amountCents": open_cents,
                                                        "paymentId": result.payment_id, "declineCode": result.decline_code})
            if created:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=f"dunning.payment_retry.{result.status}",
                             message=f"Dunning payment retry ({req.trigger}) of {from_minor(open_cents)} EUR for invoice {number}, "
                                     f"attempt {req.attempt}: {result.status}{decline}",
                             data={"episodeId": req.episode_id, "invoiceId": req.invoice_id, "attempt": req.attempt, "paymentId": result.payment_id})

    # --- barring -----------------------------------------------------------------------------------------

    @activity.defn(name="dunning_set_barring")
    async def set_barring(self, req: BarringRequest) -> BarringResult:
        """Bars ("outgoing" / "full") or lifts ("none") every live line of the account through the OSS, as
        activities.billing.set_service_barring does, with dunning's own idempotency keys. The OSS being down
        or slow fails the attempt (Temporal retries it with the same externalIds: the OSS replays); a line the
        OSS refuses is reported and the others are still changed."""
        account, products, held = await self._in_thread(self._barring_targets, req.billing_account_id)
        result = BarringResult()
        changed: list[Product] = []
        for product in products:
            refused = await place_order(partial(self.oss.set_barring, external_id=f"dunning:{req.key}:{product.id}", msisdn=product.msisdn,
                                                barring=req.barring), "barring order")
            if refused is not None:
                result.refused.append(f"{product.msisdn} ({refused})")
                continue
            changed.append(product)
            result.changed.append(product.msisdn)
        await self._in_thread(self._record_barring, req, account, held, changed, result)
        return result

    def _barring_targets(self, billing_account_id: str) -> tuple[BillingAccount, list[Product], list[Product]]:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            live = (ProductStatus.ACTIVE, ProductStatus.SUSPENDED)
            products = list(session.exec(select(Product).where(Product.billing_account_id == account.id, Product.status.in_(live))))
            # A staff suspension holds its lines: dunning's bar is kept under it (docs/service-state.md).
            products, held = split_manual_holds(session, products)
            return account, products, held

    def _record_barring(self, req: BarringRequest, account: BillingAccount, held: list[Product], changed: list[Product], result: BarringResult) -> None:
        target = ProductStatus.ACTIVE if req.barring == "none" else ProductStatus.SUSPENDED
        with session_scope(self.db_url) as session:
            note_underlying(session, held, req.barring, f"barred for arrears ({req.barring})", purpose="arrears")
            for product in changed:
                row = session.get(Product, product.id)
                reason = None if target == ProductStatus.ACTIVE else f"barred for arrears ({req.barring})"
                if row.status != target or row.status_reason != reason:
                    # The reason follows too (a line a spending cap barred is now barred for arrears: the cap's end leaves it barred).
                    moved = row.status != target
                    previous = row.status
                    row.status, row.status_reason = target, reason
                    session.add(row)
                    record_status_change(session, row, previous, reason=req.reason, source="dunning")
                    if moved:
                        session.flush()
                        emit_product_event(session, row, at=utcnow())
            _row, created = records.record_action(session, key=f"{req.key}:{req.barring}", episode_id=req.episode_id, billing_account_id=account.id,
                                                  kind="unbar" if req.barring == "none" else "bar", level=req.level, reason=req.reason, at=utcnow(),
                                                  status="done" if not result.refused else "partial",
                                                  data={"barring": req.barring, "msisdns": result.changed, "refused": result.refused})
            if created:
                verb = "lifted" if req.barring == "none" else f"set ({req.barring})"
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id,
                             kind="dunning.unbarred" if req.barring == "none" else "dunning.barred",
                             message=f"Barring {verb} through the OSS for {', '.join(result.changed) or 'no live lines'}: {req.reason}",
                             data={"episodeId": req.episode_id, "msisdns": result.changed, "key": req.key})
                if result.refused:
                    record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.barring_refused",
                                 message=f"The OSS refused barring {req.barring} for {', '.join(result.refused)}; staff must check these lines",
                                 data={"episodeId": req.episode_id, "refused": result.refused, "key": req.key})

    # --- termination and the end of the road -----------------------------------------------------------------

    @activity.defn(name="dunning_request_termination")
    async def request_termination(self, req: TerminationRequest) -> str | None:
        """Terminates the contract for arrears: every line not yet terminated is terminated in the OSS (TMF641
        service order `delete`, externalId `terminate:<episode>:<product>`: a repeat is replayed by the OSS), the
        product moves to `terminated` with its termination date (charges stop there; ProductStateChangeEvent),
        its number goes into the pool's quarantine; with a final bill, a customerBillOnDemand request that the
        billing-account workflow issues (signal `bill_on_demand`). Returns that request's id. The OSS being down
        fails the attempt (Temporal retries; the same externalIds); a line the OSS refuses is reported, the
        others are still terminated."""
        products = await self._in_thread(self._live_lines, req.billing_account_id)
        terminated, refused = [], []
        for product in products:
            refusal = await place_order(partial(self.oss.terminate_service, external_id=f"terminate:{req.episode_id}:{product.id}",
                                                          msisdn=product.msisdn), "termination order")
            if refusal is not None:
                refused.append(f"{product.msisdn} ({refusal})")
                continue
            terminated.append(product.id)
        return await self._in_thread(self._record_termination, req, terminated, refused)

    def _live_lines(self, billing_account_id: str) -> list[Product]:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            live = (ProductStatus.ACTIVE, ProductStatus.SUSPENDED, ProductStatus.PENDING_TERMINATE)
            return list(session.exec(select(Product).where(Product.billing_account_id == account.id, Product.status.in_(live))))

    def _record_termination(self, req: TerminationRequest, terminated: list[str], refused: list[str]) -> str | None:
        key = f"{req.episode_id}:terminate"
        now = utcnow()
        with session_scope(self.db_url) as session:
            account = self._account(session, req.billing_account_id)
            msisdns = []
            for product_id in terminated:
                row = session.get(Product, product_id)
                msisdns.append(row.msisdn)
                if row.status != ProductStatus.TERMINATED:
                    row.status, row.status_reason, row.termination_date = ProductStatus.TERMINATED, f"terminated for arrears ({req.level})", now
                    session.add(row)
                    session.flush()
                    emit_product_event(session, row, at=now)
                    if row.msisdn:
                        msisdn_pool.retire(session, row.msisdn)
            request_id = None
            if req.final_bill:
                request_id = str(uuid.uuid5(FINAL_BILL_NAMESPACE, req.episode_id))
                if session.get(BillOnDemand, request_id) is None:
                    session.add(BillOnDemand(id=request_id, billing_account_id=account.id, name="Schlussrechnung",
                                             description=f"Final bill: contract terminated for arrears (dunning level {req.level})",
                                             state="inProgress", idempotency_key=f"dunning-final-bill:{req.episode_id}", requested_by="dunning",
                                             created_at=now, updated_at=now))
            _row, created = records.record_action(session, key=key, episode_id=req.episode_id, billing_account_id=account.id, kind="terminate",
                                                  level=req.level, at=now, status="done" if not refused else "partial",
                                                  data={"finalBillRequestId": request_id, "overdueCents": req.overdue_cents,
                                                        "msisdns": msisdns, "refused": refused})
            if created:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.terminated",
                             message=f"Dunning level {req.level}: contract terminated for arrears of {from_minor(req.overdue_cents)} EUR; "
                                     f"lines terminated in the OSS: {', '.join(msisdns) or 'none'}"
                                     + (f", final bill requested ({request_id})" if request_id else ""),
                             data={"episodeId": req.episode_id, "finalBillRequestId": request_id, "msisdns": msisdns})
                if refused:
                    record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.termination_refused",
                                 message=f"The OSS refused terminating {', '.join(refused)}; staff must check these lines",
                                 data={"episodeId": req.episode_id, "refused": refused})
            return request_id

    @activity.defn(name="dunning_hand_over")
    def hand_over(self, req: HandOverRequest) -> None:
        """The end of the road. `collections`: the debt goes to an external agency; o2c records the hand-over and
        stores the dossier it hands over (debtor, invoices, fees, notices) in the action's data; the invoices stay
        open in o2c's ledger. `write_off`: the overdue invoices are written off in the ledger: one entry of method
        `write_off` (id `writeOff:<episode>`) settles what is left of each (a PaymentAllocation per invoice), so
        the balance due is 0; the invoice's TMF678 state moves as any settlement moves it (`settled`), the write-off
        being visible as that allocation. Audited (actor o2c, reason) and told in the customer's story."""
        with session_scope(self.db_url) as session:
            account = self._account(session, req.billing_account_id)
            data: dict = {"agency": req.agency, "overdueCents": req.overdue_cents, "invoiceIds": req.invoice_ids}
            if req.kind == "collections":
                data["dossier"] = collections_dossier(session, account, req)
            else:
                data["writtenOffCents"] = write_off(session, account, req, at=utcnow())
            _row, created = records.record_action(session, key=f"{req.episode_id}:{req.kind}", episode_id=req.episode_id, billing_account_id=account.id,
                                                  kind=req.kind, level=req.level, at=utcnow(), data=data)
            if created:
                what = f"handed over to {req.agency}" if req.kind == "collections" else f"written off ({from_minor(data['writtenOffCents'])} EUR booked)"
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=f"dunning.{req.kind}",
                             message=f"Dunning level {req.level}: arrears of {from_minor(req.overdue_cents)} EUR {what}",
                             data={"episodeId": req.episode_id, "invoiceIds": req.invoice_ids})

    # --- records -------------------------------------------------------------------------------------------

    @activity.defn(name="dunning_record")
    def record(self, req: RecordRequest) -> None:
        with session_scope(self.db_url) as session:
            account = self._account(session, req.billing_account_id)
            _row, created = records.record_action(session, key=req.key, episode_id=req.episode_id, billing_account_id=account.id, kind=req.kind,
                                                  level=req.level, status=req.status, reason=req.message, at=utcnow(), data=req.data)
            if req.level and req.kind == "level" and records.set_episode_level(session, req.episode_id, req.level):
                emit_event(session, event_type=DUNNING_LEVEL_CHANGE, resource_type="billingAccount", resource_id=account.id,
                           resource={**tmf.billing_account(account), "dunningLevel": req.level, "dunningEpisode": req.episode_id},
                           at=utcnow(), state=req.level)
            if created:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=req.event_kind, message=req.message,
                             data={"episodeId": req.episode_id, "level": req.level, **req.data})

    @activity.defn(name="dunning_staff_result")
    def staff_result(self, res: StaffResult) -> None:
        """Completes the audit record of a staff request (who, why, what came of it) and tells the story."""
        with session_scope(self.db_url) as session:
            account = self._account(session, res.billing_account_id)
            before = session.exec(select(DunningAction).where(DunningAction.key == records.staff_key(res.command.command_id))).first()
            already = before is not None and before.status in (records.APPLIED, records.REJECTED)
            records.settle_staff_action(session, command_id=res.command.command_id, episode_id=res.episode_id, billing_account_id=account.id,
                                        kind=res.kind, actor=res.command.actor, reason=res.command.reason, status=res.status, result=res.result,
                                        at=utcnow())
            if not already:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=f"dunning.staff.{res.kind}",
                             message=f"{res.message} (by {res.command.actor}: {res.command.reason})",
                             data={"episodeId": res.episode_id, "commandId": res.command.command_id, "status": res.status, **res.result})

    @activity.defn(name="dunning_close_episode")
    def close_episode(self, req: CloseRequest) -> None:
        with session_scope(self.db_url) as session:
            account = self._account(session, req.billing_account_id)
            _row, closed = records.close_episode(session, req.episode_id, state=req.state, reason=req.reason, level=req.level, at=utcnow())
            if closed:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="dunning.ended",
                             message=f"Dunning episode ended ({req.state}): {req.reason}",
                             data={"episodeId": req.episode_id, "state": req.state, "level": req.level})
                records.record_action(session, key=f"{req.episode_id}:end", episode_id=req.episode_id, billing_account_id=account.id,
                                      kind="end", level=req.level, reason=req.reason, at=utcnow(), data={"state": req.state})

