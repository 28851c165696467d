"""Activities of the billing-account workflow: set-up, invoicing, payment collection, notices, barring.
Each is keyed by a business id (account, period, invoice, attempt, dunning step) and safe to retry."""
from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dunning_fee_invoice import FEE_KINDS, fee_invoice_mail, issue_pending_fee_invoice, pending_fee_invoice_id
from activities.invoice_charges import cycle_charges, on_demand_charges
from activities.invoice_issuer import CREDIT_NOTE, issue_invoice, move_invoice, on_demand_invoice_id, seal_documents
from activities.ledger import allocate_payments, balance
from activities.oss_orders import place_order
from activities.order_records import record_event, require_billing_account, utcnow
from adapters.notify.email import EmailMessageSpec, NotificationRejected, NotificationUnavailable, SmtpNotifier
from adapters.oss.port import OssClient
from adapters.payments.port import GatewayConfigError, GatewayError, GatewayUnavailable, PaymentGateway, PaymentNotFound
from config.settings import Settings
from config.tariff_loader import cached_tariff_book
from domain.billing_cycle import BillingPeriod, CycleSpec, zone
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from domain.money import from_minor
from domain.payments import ChargeRequest, charge_idempotency_key, parse_payment_method
from domain.products import ProductStatus
from domain.tariff import TariffBook
from persistence.db import session_scope
from persistence.tables import BillingAccount, BillOnDemand, Customer, Invoice, Notification, Payment, Product
from services.service_state import note_underlying, record_status_change, split_manual_holds
from services.hub_events import emit_bill_state_event, emit_product_event
from services.payment_methods import charge_method
from services.payments import advance_payment, emit_payment_event
from services.usage_rerate import rerate_flagged
from workflows.messages import AccountSetup, BalanceView, ChargeOutcome, IssuedInvoice, PaymentCheck, SpendingThresholdCrossed

# Threads for the blocking parts of async activities (as many as the worker's activity slots).
BLOCKING_THREADS = 32
# At most this many flagged usage periods of one account are re-rated before its invoice (there is
# one per product and period, so this is far above what an account has).
RERATE_LIMIT = 1000
# Product.status_reason of a line barred by a DunningWorkflow episode (activities.dunning.set_barring) and by a spending cap.
ARREARS_BAR_REASON = "barred for arrears"
SPENDING_BAR_REASON = "outgoing use barred: spending limit reached"


def issued_view(invoice: Invoice) -> IssuedInvoice:
    return IssuedInvoice(invoice_id=invoice.id, number=invoice.number, gross_cents=invoice.gross_cents, issued_at=invoice.issued_at,
                         due_at=invoice.due_at, state=invoice.state)


class BlockingWork:
    """For activity classes with async activities: `_in_thread` runs their blocking parts (database, rendering) on
    a thread pool of their own (BLOCKING_THREADS, as many as the worker's activity slots), never on the
    worker's event loop and not in the loop's small default pool."""

    _blocking: ThreadPoolExecutor | None = None
    _blocking_name = "activity-blocking"

    async def _in_thread(self, fn, *args):  # noqa: ANN001, ANN202
        """`fn(*args)` in the pool, in a copy of the caller's context (as asyncio.to_thread): the activity's context
        stays visible there, so activities.order_records.utcnow is the workflow's time, not the wall clock."""
        if self._blocking is None:  # created on the event loop's thread, so only once
            self._blocking = ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix=self._blocking_name)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._blocking, functools.partial(context.run, fn, *args))


class CheckedPayment(NamedTuple):
    """A payment row after a look at the gateway (PaymentLookUp)."""

    payment_id: str
    status: str
    amount_cents: int
    decline_code: str | None
    decline_class: str | None  # as the gateway answered now (None when it had no answer)
    changed: bool


class PaymentLookUp(BlockingWork):
    """Looks up a charge still in flight (a SEPA debit in `processing`) at the gateway: the polling fallback for a lost
    webhook, behind both BillingActivities.check_payment (the account's own charges) and DunningActivities.check_payment
    (dunning's retries), which keep their activity names and result types. The payment row only moves forward; a
    move is told in the customer's story as `<_checked_kind>.<status>`. Needs `gateway`, `db_url` and `_account`."""

    # The story's event kind prefix and the message's first words for a payment the look moved on.
    _checked_kind = "payment"
    _checked_words = "Payment"

    async def _look_up_payment(self, payment_id: str) -> CheckedPayment:
        """A gateway that cannot be reached, or that refuses o2c's credentials, fails the attempt and Temporal retries it
        (an operator fixes a rotated key; a look must not fail for good meanwhile). Any other gateway error (a payment
        the gateway does not know, a rejected request) is final for this look, which the workflow records (it looks again later)."""
        gateway_id, correlator = await self._in_thread(self._payment_refs, payment_id)
        try:
            outcome = await (self.gateway.retrieve(gateway_id) if gateway_id is not None else self.gateway.find_by_idempotency(correlator))
        except GatewayUnavailable as error:
            raise ApplicationError(f"payment gateway unavailable: {error}", type="GatewayUnavailable") from error
        except GatewayConfigError as error:
            raise ApplicationError(f"the payment gateway refuses o2c's configuration: {error}", type="GatewayConfigError") from error
        except PaymentNotFound as error:
            raise ApplicationError(f"the gateway does not know payment {payment_id}: {error}", type="PaymentNotFound", non_retryable=True) from error
        except GatewayError as error:
            raise ApplicationError(f"the gateway cannot tell payment {payment_id}: {error}", type=type(error).__name__, non_retryable=True) from error
        return await self._in_thread(self._payment_checked, payment_id, outcome)

    def _payment_refs(self, payment_id: str) -> tuple[str | None, str]:
        with session_scope(self.db_url) as session:
            payment = session.get(Payment, payment_id)
            if payment is None:
                raise ApplicationError(f"payment {payment_id} does not exist", type="UnknownPayment", non_retryable=True)
            return payment.gateway_payment_id, payment.correlator_id

    def _payment_checked(self, payment_id: str, outcome) -> CheckedPayment:  # noqa: ANN001
        """The row after the gateway's answer `outcome` (None: the gateway has no answer yet, the row stays)."""
        with session_scope(self.db_url) as session:
            payment = session.get(Payment, payment_id)
            changed = outcome is not None and advance_payment(session, payment, outcome.status, at=utcnow(), decline_code=outcome.decline_code)
            if changed:
                account = self._account(session, payment.billing_account_id)
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=f"{self._checked_kind}.{payment.status}",
                             message=f"{self._checked_words} {payment.id} of {from_minor(payment.amount_cents)} EUR is {payment.status} "
                                     "(checked with the gateway)" + (f", {outcome.decline_code}" if outcome.decline_code else ""),
                             data={"invoiceId": payment.invoice_id, "paymentId": payment.id})
            return CheckedPayment(payment_id=payment.id, status=payment.status, amount_cents=payment.amount_cents, decline_code=payment.decline_code,
                                  decline_class=outcome.decline_class if outcome is not None else None, changed=changed)


class DocumentMail(BlockingWork):
    """E-mails: an issued document (invoice, credit note, fee-only document) with its PDF, and notices; each once per
    key (the Notification row). Behind BillingActivities.send_invoice and the fee documents DunningActivities sends
    (a late-fee invoice, its credit note): one document has one key, `invoice:<id>`, whichever path sends it, so
    neither sends it twice. Needs `settings`, `db_url`, `notifier` and `_account`."""

    async def _send_document(self, invoice_id: str, *, fee_wording: bool = False, record_refusal: bool = False) -> bool:
        """Sends the document `invoice_id` once, then moves it to `sent` (TMF678 CustomerBillStateChangeEvent); False
        when there is no issued document (none, or an onHold draft without a number): nothing is sent. A document
        numbered without its PDF gets it first (seal_documents): sending always waits for the sealed PDF. A mail
        server that is down or answers 4xx fails the activity (Temporal retries it). A permanent refusal (5xx, a bad
        address) is final: raised as a non-retryable NotificationRejected for the workflow to record, or with
        `record_refusal` told in the customer's story (`invoice.delivery_failed`) and the document left unsent.
        `fee_wording`: the fee documents' own words (activities.dunning_fee_invoice.fee_invoice_mail), also for a credit note.
        The database work and the rendering run in threads, never on the worker's event loop."""
        mail = await self._in_thread(self._invoice_mail, invoice_id, fee_wording)
        if mail is None:
            return False
        account_id, recipient, subject, body, number, pdf = mail
        if recipient:
            try:
                await self._notify(f"invoice:{invoice_id}", invoice_id, account_id, recipient, subject, body,
                                   [(f"{number}.pdf", "application/pdf", pdf)], give_up_on_refusal=True)
            except ApplicationError as error:
                if not (record_refusal and error.type == "NotificationRejected"):
                    raise
                await self._in_thread(self._delivery_failed, account_id, invoice_id, f"{number} could not be e-mailed to {recipient}: {error.__cause__}")
                return True
        await self._in_thread(self._invoice_sent, invoice_id)
        return True

    def _invoice_mail(self, invoice_id: str, fee_wording: bool = False) -> tuple[str, str | None, str, str, str, bytes] | None:
        seal_documents(self.db_url, self.settings, invoice_id)
        with session_scope(self.db_url) as session:
            invoice = session.get(Invoice, invoice_id)
            if invoice is None or invoice.number is None:
                return None
            account = self._account(session, invoice.billing_account_id)
            customer = session.get(Customer, account.customer_id)
            recipient = account.email or (customer.email if customer else None)
            greeting = f"Dear {customer.name if customer else 'customer'},\n\n"
            if fee_wording or invoice.kind in FEE_KINDS:
                subject, body = fee_invoice_mail(invoice, customer, self.settings.seller_name)
            elif invoice.kind == CREDIT_NOTE:
                subject = f"Your credit note {invoice.number}"
                body = (f"{greeting}your credit note {invoice.number} over {from_minor(-invoice.gross_cents)} EUR for invoice "
                        f"{invoice.referenced_invoice_number} is attached. The amount is set off against open invoices or credited to "
                        f"your account.\n\n{self.settings.seller_name}")
            else:
                subject = f"Your invoice {invoice.number}"
                body = (f"{greeting}your invoice {invoice.number} over {from_minor(invoice.gross_cents)} EUR "
                        f"is attached. It is due on {invoice.due_at:%Y-%m-%d}.\n\n{self.settings.seller_name}")
            return account.id, recipient, subject, body, invoice.number, invoice.pdf or b""

    def _invoice_sent(self, invoice_id: str) -> None:
        with session_scope(self.db_url) as session:
            invoice = session.get(Invoice, invoice_id)
            if invoice.state in ("new", "validated"):
                move_invoice(invoice, state="sent")
                session.add(invoice)
                emit_bill_state_event(session, invoice, at=utcnow())  # TMF678 CustomerBillStateChangeEvent, same transaction

    def _delivery_failed(self, billing_account_id: str, invoice_id: str, message: str) -> None:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="invoice.delivery_failed",
                         message=message, data={"invoiceId": invoice_id})

    async def _notify(self, key: str, invoice_id: str | None, billing_account_id: str, recipient: str, subject: str, body: str, attachments: list,
                      *, give_up_on_refusal: bool = False) -> None:
        """Sends once per key. Transient SMTP failures fail the activity so Temporal retries it. A permanent
        refusal (5xx) is retried too unless `give_up_on_refusal`: a dunning notice must really go out before
        its consequences may follow, while an invoice mail that cannot be delivered must not hold up collection."""
        if await self._in_thread(self._notified, key):
            return
        try:
            message_id = await self.notifier.send(EmailMessageSpec(to=recipient, subject=subject, body_text=body, idempotency_key=key, attachments=attachments))
        except NotificationUnavailable as error:
            raise ApplicationError(f"SMTP unavailable: {error}", type="NotificationUnavailable") from error
        except NotificationRejected as error:
            raise ApplicationError(f"SMTP refused the message: {error}", type="NotificationRejected", non_retryable=give_up_on_refusal) from error
        await self._in_thread(self._record_notification, key, billing_account_id, recipient, subject, message_id)

    def _notified(self, key: str) -> bool:
        with session_scope(self.db_url) as session:
            return session.get(Notification, key) is not None

    def _record_notification(self, key: str, billing_account_id: str, recipient: str, subject: str, message_id: str) -> None:
        with session_scope(self.db_url) as session:
            if session.get(Notification, key) is None:
                session.add(Notification(id=key, billing_account_id=billing_account_id, recipient=recipient, subject=subject, message_id=message_id, sent_at=utcnow()))


class BillingActivities(PaymentLookUp, DocumentMail):
    def __init__(self, settings: Settings, catalog: Catalog, profiles: dict[str, BillingProfile], gateway: PaymentGateway, oss: OssClient, notifier: SmtpNotifier,
                 tariffs: TariffBook | None = None) -> None:
        self.settings = settings
        self._tariffs = tariffs
        self.db_url = settings.database_url
        self.catalog = catalog
        self.profiles = profiles
        self.gateway = gateway
        self.oss = oss
        self.notifier = notifier
        # The blocking parts (database, rendering) of the async activities: not the event loop's small default pool.
        self._blocking = ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="billing-blocking")

    _account = staticmethod(require_billing_account)

    @activity.defn(name="load_account_setup")
    def load_account_setup(self, billing_account_id: str) -> AccountSetup:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            profile = self.profiles.get(account.billing_profile)
            if profile is None:
                raise ApplicationError(f"unknown billing profile {account.billing_profile!r}", type="UnknownBillingProfile", non_retryable=True)
            customer = session.get(Customer, account.customer_id)
            anchor = account.cycle_anchor or account.created_at
            return AccountSetup(
                profile=profile, cycle=profile.cycle_spec(account.bill_cycle_day, account.timezone, anchor),
                customer_email=account.email or (customer.email if customer else None),
            )

    @property
    def tariffs(self) -> TariffBook:
        if self._tariffs is None:
            self._tariffs = cached_tariff_book()
        return self._tariffs

    def _rerate_flagged(self, session, account: BillingAccount) -> None:
        """Usage periods flagged for re-rating (out-of-order usage, a corrected tariff) are priced again
        before any charge is gathered, in the invoice's transaction, so the invoice bills the right amounts."""
        reports = rerate_flagged(session, self.tariffs, catalog=self.catalog, limit=RERATE_LIMIT, billing_account_id=account.id)
        for report in reports:
            if report.applied or report.billed_deltas or report.unrated:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="usage.rerated",
                             message=f"Usage of product {report.product_id} from {report.period_start:%Y-%m-%d} re-rated before invoicing: "
                                     f"{len(report.applied)} records changed by {report.applied_delta} EUR"
                                     + (f"; {len(report.billed_deltas)} already billed records differ by {report.billed_delta} EUR" if report.billed_deltas else "")
                                     + (f"; {len(report.unrated)} could not be rated again" if report.unrated else ""),
                             data={"productId": report.product_id, "periodStart": report.period_start.isoformat(),
                                   "applied": len(report.applied), "appliedDelta": str(report.applied_delta),
                                   "billedDelta": str(report.billed_delta), "unrated": len(report.unrated)})

    @activity.defn(name="issue_cycle_invoice")
    def issue_cycle_invoice(self, billing_account_id: str, cycle: CycleSpec, period: BillingPeriod, payment_terms_s: float) -> IssuedInvoice | None:
        """Closes the period: its usage and fees become one invoice with the next gapless number, or,
        while the account's invoice hold is on, an onHold draft without a number that staff approve.

        The charges are one computation (`cycle_charges`: an invoice-wide promotion sees the usage lines too),
        with the billing profile's `usage_grace` as the cut-off for late usage. Pending charges outside the
        scope of VAT (category O, e.g. a chargeback fee) never join it (BR-O-11): right after an issued cycle
        invoice they get one fee-only document of their own (activities.dunning_fee_invoice), which
        send_invoice sends with the cycle invoice. A draft on hold, or no invoice, leaves them for the next cycle."""
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            self._rerate_flagged(session, account)
            profile = self.profiles.get(account.billing_profile)
            products = list(session.exec(select(Product).where(Product.billing_account_id == billing_account_id)))
            charges = cycle_charges(session, billing_account_id, products, self.catalog, cycle, period,
                                    grace=profile.usage_grace if profile is not None else None)
            issued_at = utcnow()
            # Numbered here, rendered and sealed by send_invoice (seal_documents): no lock is held while the PDF renders.
            invoice = issue_invoice(session, self.settings, account, period, charges, issued_at, issued_at + timedelta(seconds=payment_terms_s),
                                    hold=account.invoice_hold, documents_later=True)
            if invoice is None:
                return None
            self._record_issued(session, account, invoice)
            if invoice.number is not None and session.get(Invoice, pending_fee_invoice_id(invoice.id)) is None:
                fees = issue_pending_fee_invoice(session, self.settings, account, invoice.id, issued_at)
                if fees is not None:
                    self._record_issued(session, account, fees)
            return issued_view(invoice)

    def _record_issued(self, session, account: BillingAccount, invoice: Invoice) -> None:
        if invoice.number is None:
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="invoice.held",
                         message=f"Invoice draft over {from_minor(invoice.gross_cents)} EUR is on hold until staff approve it (invoice hold)",
                         data={"invoiceId": invoice.id})
        else:
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="invoice.issued",
                         message=f"Invoice {invoice.number} issued: {from_minor(invoice.gross_cents)} EUR due {invoice.due_at:%Y-%m-%d %H:%M} UTC",
                         data={"invoiceId": invoice.id, "number": invoice.number})

    @activity.defn(name="issue_on_demand_invoice")
    def issue_on_demand_invoice(self, billing_account_id: str, cycle: CycleSpec, request_id: str, payment_terms_s: float) -> IssuedInvoice | None:
        """TMF678 customerBillOnDemand: an off-cycle invoice, now, for everything not yet billed (e.g. at
        termination). Keyed by the request: a retry returns the same invoice. The request ends `done`
        with its bill, or `rejected` when there was nothing to bill."""
        with session_scope(self.db_url) as session:
            request = session.get(BillOnDemand, request_id)
            if request is None or request.billing_account_id != billing_account_id:
                raise ApplicationError(f"customerBillOnDemand {request_id} of account {billing_account_id} does not exist",
                                       type="UnknownBillOnDemand", non_retryable=True)
            account = self._account(session, billing_account_id)
            invoice_id = on_demand_invoice_id(request_id)
            invoice = session.get(Invoice, invoice_id)
            if invoice is None and request.state == "inProgress":
                self._rerate_flagged(session, account)
                products = list(session.exec(select(Product).where(Product.billing_account_id == billing_account_id)))
                issued_at = utcnow()
                period, charges = on_demand_charges(session, billing_account_id, products, self.catalog, cycle, issued_at)
                invoice = issue_invoice(session, self.settings, account, period, charges, issued_at, issued_at + timedelta(seconds=payment_terms_s),
                                        kind="on_demand", invoice_id=invoice_id, documents_later=True)
                if invoice is not None:
                    self._record_issued(session, account, invoice)
            if request.state == "inProgress":
                request.state = "done" if invoice is not None else "rejected"
                request.state_reason = None if invoice is not None else "nothing_to_bill: every charge up to now is billed already"
                request.invoice_id = invoice.id if invoice is not None else None
                request.updated_at = utcnow()
                session.add(request)
            return issued_view(invoice) if invoice is not None else None

    @activity.defn(name="approved_invoices")
    def approved_invoices(self, invoice_ids: list[str]) -> list[IssuedInvoice]:
        """Which of these onHold drafts staff have approved meanwhile (in case the approval signal was lost)."""
        with session_scope(self.db_url) as session:
            rows = session.exec(select(Invoice).where(Invoice.id.in_(invoice_ids)).order_by(Invoice.issued_at, Invoice.id)).all()
            return [issued_view(row) for row in rows if row.number is not None]

    @activity.defn(name="send_invoice")
    async def send_invoice(self, invoice_id: str) -> None:
        """E-mails an issued invoice or credit note with its PDF, once (keyed by the document). A mail server
        that is down or answers 4xx makes the activity fail and Temporal retry it; a permanent refusal (5xx,
        bad address) is not retried and the workflow records it for staff. A cycle invoice numbered without
        its documents gets them first (seal_documents): sending always waits for the sealed PDF.
        The database work and the rendering run in threads, never on the worker's event loop."""
        if not await self._send_document(invoice_id):
            raise ApplicationError(f"invoice {invoice_id} is an onHold draft; it is sent once approved", type="InvoiceNotIssued", non_retryable=True)
        # The fee-only document issued with this cycle invoice (issue_cycle_invoice), if any: its own mail, key and state.
        await self._send_document(pending_fee_invoice_id(invoice_id))

    @activity.defn(name="charge_invoice")
    async def charge_invoice(self, invoice_id: str, attempt: int) -> ChargeOutcome:
        """Collects an invoice's open amount from the saved payment method; attempt n has its own idempotency key."""
        invoice, account, open_cents, method, gateway_customer_id, refused_code = await self._in_thread(self._charge_inputs, invoice_id, attempt)
        if open_cents <= 0:
            return ChargeOutcome(status="succeeded", message="nothing left to collect")
        if not method:
            return ChargeOutcome(status="no_payment_method", message="no payment method on file")
        if refused_code:  # a revoked SEPA mandate: a hard decline, the gateway is not asked
            return ChargeOutcome(status="declined", decline_code=refused_code, decline_class="hard", message="the payment method was revoked")
        request = ChargeRequest(invoice_id=invoice_id, attempt=attempt, amount_minor=open_cents, account_id=account.id, payment_method=method,
                                description=f"Invoice {invoice_id}", gateway_customer_id=gateway_customer_id)
        try:
            outcome = await self.gateway.charge(request)
            if outcome.status == "unknown":
                # The answer was lost (timeout, 5xx): read the gateway by the same idempotency key, never charge anew.
                found = await self.gateway.find_by_idempotency(request.idempotency_key)
                if found is not None:
                    outcome = found
        except GatewayUnavailable as error:
            # Unknown outcome: retrying the same attempt reuses the same idempotency key, so it cannot charge twice.
            raise ApplicationError(f"payment gateway unavailable: {error}", type="GatewayUnavailable") from error
        kind = parse_payment_method(method).kind
        payment_id = await self._in_thread(self._store_charge, account, invoice, request, open_cents, kind, attempt, outcome)  # DB work off the event loop
        if outcome.status == "unknown":
            # Still unknown: Temporal retries this activity, which sends the same request with the same idempotency
            # key (the gateway replays it if it ran), so a second charge is impossible.
            raise ApplicationError(f"the outcome of charge {request.idempotency_key} is unknown; reconciling again", type="PaymentOutcomeUnknown")
        return ChargeOutcome(status=outcome.status, payment_id=payment_id, decline_code=outcome.decline_code, decline_class=outcome.decline_class,
                             message=outcome.message)

    def _charge_inputs(self, invoice_id: str, attempt: int) -> tuple[Invoice, BillingAccount, int, str | None, str | None, str | None]:
        with session_scope(self.db_url) as session:
            invoice = session.get(Invoice, invoice_id)
            account = self._account(session, invoice.billing_account_id)
            open_cents = invoice.gross_cents - invoice.paid_cents
            method, gateway_customer_id, refused_code = charge_method(session, account)  # the method saved at the gateway, if any
            earlier = session.exec(select(Payment).where(Payment.correlator_id == charge_idempotency_key(invoice_id, attempt))).first()
            if earlier is not None:
                # A retry of this attempt (e.g. its outcome was unknown) sends exactly the same request again.
                open_cents = earlier.amount_cents
            return invoice, account, open_cents, method, gateway_customer_id, refused_code

    def _store_charge(self, account: BillingAccount, invoice: Invoice, request: ChargeRequest, open_cents: int, kind: str, attempt: int, outcome) -> str:
        """The attempt's payment row: created once (PaymentCreateEvent), then only moved forward (PaymentStateChangeEvent)."""
        invoice_id, correlator = invoice.id, request.idempotency_key
        with session_scope(self.db_url) as session:
            now = utcnow()
            payment = session.exec(select(Payment).where(Payment.correlator_id == correlator)).first()
            if payment is None:
                payment = Payment(id=correlator, correlator_id=correlator, billing_account_id=account.id, invoice_id=invoice_id,
                                  amount_cents=open_cents, method=kind, status=outcome.status, attempt=attempt,
                                  gateway_payment_id=outcome.gateway_payment_id, decline_code=outcome.decline_code, recorded_by="o2c", created_at=now)
                session.add(payment)
                session.flush()
                emit_payment_event(session, payment, created=True, at=now)
                changed = True
            else:
                if payment.gateway_payment_id is None and outcome.gateway_payment_id is not None:
                    payment.gateway_payment_id = outcome.gateway_payment_id
                    session.add(payment)
                changed = advance_payment(session, payment, outcome.status, at=now, decline_code=outcome.decline_code)
            if changed:
                message = (f"Payment of {from_minor(open_cents)} EUR for invoice {invoice.number} (attempt {attempt}): {payment.status}"
                           + (f", {outcome.decline_code} ({outcome.decline_class} decline)" if outcome.decline_code else ""))
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=f"payment.{payment.status}", message=message,
                             data={"invoiceId": invoice_id, "attempt": attempt, "paymentId": payment.id})
            return payment.id

    @activity.defn(name="check_payment")
    async def check_payment(self, payment_id: str) -> PaymentCheck:
        """Follows a charge still in flight (a SEPA debit in `processing`) by reading the gateway: the polling
        fallback for a lost webhook (PaymentLookUp). The payment row only moves forward (domain.payments.advance_payment_status)."""
        checked = await self._look_up_payment(payment_id)
        return PaymentCheck(payment_id=payment_id, status=checked.status, changed=checked.changed)

    @activity.defn(name="send_payment_action_notice")
    async def send_payment_action_notice(self, invoice_id: str, payment_id: str) -> None:
        """The bank wants the customer to authenticate the payment (3-D Secure): one e-mail per invoice."""
        account_id, recipient, subject, body = await self._in_thread(self._payment_action_notice, invoice_id, payment_id)
        if recipient:
            await self._notify(f"payment-action:{invoice_id}", invoice_id, account_id, recipient, subject, body, [])

    def _payment_action_notice(self, invoice_id: str, payment_id: str) -> tuple[str, str | None, str, str]:
        with session_scope(self.db_url) as session:
            invoice = session.get(Invoice, invoice_id)
            account = self._account(session, invoice.billing_account_id)
            customer = session.get(Customer, account.customer_id)
            recipient = account.email or (customer.email if customer else None)
            open_amount = from_minor(invoice.gross_cents - invoice.paid_cents)
            subject = f"Please confirm your payment for invoice {invoice.number}"
            body = (f"Dear {customer.name if customer else 'customer'},\n\nyour bank asks you to confirm the payment of {open_amount} EUR for "
                    f"invoice {invoice.number} (3-D Secure). We cannot collect it automatically until you do: please confirm it or pay "
                    f"the invoice by bank transfer.\n\n{self.settings.seller_name}")
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="payment.action_required",
                         message=f"Payment {payment_id} for invoice {invoice.number} needs the customer to authenticate; customer asked by e-mail",
                         data={"invoiceId": invoice_id, "paymentId": payment_id})
            return account.id, recipient, subject, body

    @activity.defn(name="apply_payments")
    def apply_payments(self, billing_account_id: str) -> BalanceView:
        with session_scope(self.db_url) as session:
            return allocate_payments(session, billing_account_id)

    @activity.defn(name="read_balance")
    def read_balance(self, billing_account_id: str) -> BalanceView:
        with session_scope(self.db_url) as session:
            return balance(session, billing_account_id)

    @activity.defn(name="send_dunning_notice")
    async def send_dunning_notice(self, billing_account_id: str, invoice_id: str, step_name: str, suspension_at: datetime | None = None) -> None:
        """A reminder; when it is the written notice before a suspension it names the date of the barring."""
        recipient, subject, body = await self._in_thread(self._dunning_notice, billing_account_id, invoice_id, step_name, suspension_at)
        if recipient:
            await self._notify(f"dunning:{invoice_id}:{step_name}", invoice_id, billing_account_id, recipient, subject, body, [])

    def _dunning_notice(self, billing_account_id: str, invoice_id: str, step_name: str, suspension_at: datetime | None) -> tuple[str | None, str, str]:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            customer = session.get(Customer, account.customer_id)
            invoice = session.get(Invoice, invoice_id)
            recipient = account.email or (customer.email if customer else None)
            open_amount = from_minor(invoice.gross_cents - invoice.paid_cents)
            if suspension_at is None:
                subject = f"Payment reminder: invoice {invoice.number}"
                consequence = "Please pay it to avoid a restriction of your service."
            else:
                local = suspension_at.astimezone(zone(account.timezone))
                subject = f"Notice of suspension: invoice {invoice.number}"
                consequence = (f"Unless the amount is paid, your mobile service will be barred from {local:%d.%m.%Y %H:%M} "
                               f"({account.timezone}), as §61 TKG allows. A payment at any time before or after restores it at once.")
            body = (f"Dear {customer.name if customer else 'customer'},\n\nour records show {open_amount} EUR open on invoice {invoice.number}, "
                    f"due {invoice.due_at:%Y-%m-%d}. {consequence}\n\n({step_name})\n{self.settings.seller_name}")
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id,
                         kind="dunning.reminder" if suspension_at is None else "dunning.suspension_notice",
                         message=f"Dunning step {step_name}: {subject.split(':')[0].lower()} for invoice {invoice.number} ({open_amount} EUR open)"
                         + (f", barring from {suspension_at:%Y-%m-%d %H:%M} UTC" if suspension_at else ""),
                         data={"invoiceId": invoice_id, "step": step_name})
            return recipient, subject, body

    @activity.defn(name="send_spending_notice")
    async def send_spending_notice(self, billing_account_id: str, event: SpendingThresholdCrossed) -> None:
        recipient, subject, body, key = await self._in_thread(self._spending_notice, billing_account_id, event)
        if recipient:
            await self._notify(key, None, billing_account_id, recipient, subject, body, [])

    def _spending_notice(self, billing_account_id: str, event: SpendingThresholdCrossed) -> tuple[str | None, str, str, str]:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            customer = session.get(Customer, account.customer_id)
            recipient = account.email or (customer.email if customer else None)
            consequence = (" Outgoing use is barred until the next cycle starts." if event.hard_cap and event.threshold_percent >= 100 else "")
            subject = f"You have used {event.threshold_percent} % of your spending limit"
            body = (f"Dear {customer.name if customer else 'customer'},\n\nyour usage this cycle has reached {event.usage_cost} EUR "
                    f"of your {event.limit} EUR limit ({event.threshold_percent} %).{consequence}\n\n{self.settings.seller_name}")
            summary = f"Spending limit {event.threshold_percent} % reached: {event.usage_cost} of {event.limit} EUR" + consequence
            key = f"spending:{billing_account_id}:{event.period_start.isoformat()}:{event.threshold_percent}"
            if event.kind == "roamingData":  # the EU roaming data cut-off limit (domain.spending.EU_ROAMING_DATA_CAP)
                cut_off = (" Mobile data while roaming outside the EU is now stopped until your next billing cycle starts, "
                           "unless you ask us to let it continue." if event.threshold_percent >= 100 else "")
                subject = f"Roaming data outside the EU: {event.threshold_percent} % of your {event.limit} EUR limit used"
                body = (f"Dear {customer.name if customer else 'customer'},\n\nmobile data you used this cycle while roaming outside the EU "
                        f"has cost {event.usage_cost} EUR, {event.threshold_percent} % of the {event.limit} EUR roaming data limit "
                        f"(EU Roaming Regulation 2022/612).{cut_off} You may opt out of this limit or keep it; contact us to change it."
                        f"\n\n{self.settings.seller_name}")
                summary = f"Roaming data limit {event.threshold_percent} % reached: {event.usage_cost} of {event.limit} EUR"
                key = f"roaming-data:{billing_account_id}:{event.period_start.isoformat()}:{event.threshold_percent}"
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id,
                         kind="spending.roaming_data" if event.kind == "roamingData" else "spending.threshold",
                         message=summary, data={"periodStart": event.period_start.isoformat(), "percent": event.threshold_percent})
            return recipient, subject, body, key

    @activity.defn(name="set_service_barring")
    async def set_service_barring(self, billing_account_id: str, barring: str, reason_key: str, purpose: str = "arrears") -> list[str]:
        """Bars ("full"/"outgoing") or restores ("none") every live product of the account through the OSS.
        A line the OSS refuses is reported and left as it is; the others are still changed.

        With purpose "spending" (a hard spending cap) a line barred for arrears by a DunningWorkflow episode is
        left alone: the cap neither weakens nor lifts dunning's barring (the episode lifts it when it ends).
        Under a staff suspension it changes only the cap's own bar (services.service_state.note_underlying)."""
        account, products, held = await self._in_thread(self._barring_targets, billing_account_id, purpose)
        changed: list[Product] = []
        refused: list[str] = []
        for product in products:
            refusal = await place_order(functools.partial(self.oss.set_barring, external_id=f"bar:{reason_key}:{product.id}", msisdn=product.msisdn,
                                                barring=barring), "barring order")
            if refusal is not None:
                refused.append(f"{product.msisdn} ({refusal})")
                continue
            changed.append(product)
        return await self._in_thread(self._record_barring, account, held, changed, refused, barring, reason_key, purpose)

    def _barring_targets(self, billing_account_id: str, purpose: str) -> tuple[BillingAccount, list[Product], list[Product]]:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            live = (ProductStatus.ACTIVE, ProductStatus.SUSPENDED)
            products = list(session.exec(select(Product).where(Product.billing_account_id == billing_account_id, Product.status.in_(live))))
            if purpose == "spending":
                products = [p for p in products if not (p.status == ProductStatus.SUSPENDED and (p.status_reason or "").startswith(ARREARS_BAR_REASON))]
            products, held = split_manual_holds(session, products)  # a staff suspension keeps this bar under it (docs/service-state.md)
            return account, products, held

    def _record_barring(self, account: BillingAccount, held: list[Product], changed: list[Product], refused: list[str], barring: str,
                        reason_key: str, purpose: str) -> list[str]:
        target = ProductStatus.ACTIVE if barring == "none" else ProductStatus.SUSPENDED
        with session_scope(self.db_url) as session:
            note_underlying(session, held, barring, SPENDING_BAR_REASON if purpose == "spending" else "suspended for arrears")
            for product in changed:
                row = session.get(Product, product.id)
                if row.status != target:
                    previous = row.status
                    row.status, row.status_reason = target, (None if target == ProductStatus.ACTIVE
                                                             else SPENDING_BAR_REASON if purpose == "spending" else "suspended for arrears")
                    session.add(row)
                    record_status_change(session, row, previous, reason=row.status_reason or reason_key, source="spending" if purpose == "spending" else "dunning")
                    session.flush()
                    emit_product_event(session, row, at=utcnow())
            verb = "restored" if barring == "none" else f"barred ({barring})"
            msisdns = [p.msisdn for p in changed]
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id,
                         kind="service.restored" if barring == "none" else "service.suspended",
                         message=f"Service {verb} through the OSS for {', '.join(msisdns) or 'no live products'}", data={"msisdns": msisdns, "key": reason_key})
            if refused:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.barring_refused",
                             message=f"The OSS refused to set barring {barring} for {', '.join(refused)}; staff must check these lines",
                             data={"refused": refused, "key": reason_key})
        return msisdns

    @activity.defn(name="set_roaming_data_barring")
    async def set_roaming_data_barring(self, billing_account_id: str, barred: bool, period_start: datetime, why: str = "") -> list[str]:
        """The EU roaming data cap's cut-off: bars (or lifts) mobile data while roaming, and nothing else, on every
        live line of the account through the OSS. Voice, SMS and domestic data go on and the product stays
        active (TMF637): a partial barring is not a suspension. One OSS order per line, cycle and direction
        (externalId `roaming-cap:<account>:<period start>:<product>`, `...:lifted` to lift). An account that
        opted out of the cap by now is not barred."""
        account, products = await self._in_thread(self._roaming_targets, billing_account_id, barred, period_start)
        if account is None:
            return []
        changed: list[str] = []
        refused: list[str] = []
        for product in products:
            key = f"roaming-cap:{billing_account_id}:{period_start.isoformat()}:{product.id}" + ("" if barred else ":lifted")
            refusal = await place_order(functools.partial(self.oss.set_roaming_data_barring, external_id=key, msisdn=product.msisdn,
                                                          barred=barred), "roaming data barring order")
            if refusal is not None:
                refused.append(f"{product.msisdn} ({refusal})")
                continue
            changed.append(product.msisdn)
        await self._in_thread(self._record_roaming_barring, account, changed, refused, barred, period_start, why)
        return changed

    def _roaming_targets(self, billing_account_id: str, barred: bool, period_start: datetime) -> tuple[BillingAccount | None, list[Product]]:
        """(the account, its live lines); (None, []) when it opted out of the cap (recorded)."""
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            if barred and account.roaming_data_cap_opt_out:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.roaming_data_not_barred",
                             message="Roaming data limit reached, but the customer opted out of it: roaming data is not barred",
                             data={"periodStart": period_start.isoformat()})
                return None, []
            live = (ProductStatus.ACTIVE, ProductStatus.SUSPENDED)
            products = [p for p in session.exec(select(Product).where(Product.billing_account_id == billing_account_id, Product.status.in_(live)))
                        if p.msisdn]
            return account, products

    def _record_roaming_barring(self, account: BillingAccount, changed: list[str], refused: list[str], barred: bool, period_start: datetime,
                                why: str) -> None:
        with session_scope(self.db_url) as session:
            data = {"msisdns": changed, "periodStart": period_start.isoformat(), "why": why}
            if barred:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.roaming_data_barred",
                             message=f"Roaming data barred through the OSS (roaming data limit reached) for {', '.join(changed) or 'no live products'}; "
                                     "voice, SMS and domestic data go on", data=data)
            else:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.roaming_data_restored",
                             message=f"Roaming data restored through the OSS ({why or 'lifted'}) for {', '.join(changed) or 'no live products'}",
                             data=data)
            if refused:
                record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind="service.barring_refused",
                             message=f"The OSS refused to {'bar' if barred else 'restore'} roaming data for {', '.join(refused)}; staff must check these lines",
                             data={"refused": refused, "periodStart": period_start.isoformat()})

    @activity.defn(name="record_account_event")
    def record_account_event(self, billing_account_id: str, kind: str, message: str) -> None:
        with session_scope(self.db_url) as session:
            account = self._account(session, billing_account_id)
            record_event(session, customer_id=account.customer_id, billing_account_id=account.id, kind=kind, message=message)
