"""What crosses the workflow boundary: workflow ids, inputs, signals and query results.
Pure pydantic, importable by the API and activities without importing workflow code."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from domain.billing_cycle import CycleSpec
from domain.billing_profile import BillingProfile

ORDER_WORKFLOW = "OrderWorkflow"
BILLING_ACCOUNT_WORKFLOW = "BillingAccountWorkflow"

# Signal and query names, shared by the workflows and their callers.
SIGNAL_OSS_UPDATE = "oss_update"
SIGNAL_CANCEL_ORDER = "cancel_order"
SIGNAL_PRODUCT_ACTIVATED = "product_activated"
SIGNAL_PAYMENT_RECEIVED = "payment_received"
SIGNAL_PAYMENT_METHOD_UPDATED = "payment_method_updated"
SIGNAL_SPENDING_THRESHOLD = "spending_threshold_crossed"
SIGNAL_INVOICE_APPROVED = "invoice_approved"
SIGNAL_BILL_ON_DEMAND = "bill_on_demand"
SIGNAL_CREDIT_NOTE_ISSUED = "credit_note_issued"
SIGNAL_DUNNING_ENDED = "dunning_ended"
SIGNAL_ROAMING_DATA_CONTINUE = "roaming_data_continue"
QUERY_ORDER_STATUS = "order_status"
QUERY_ACCOUNT_SUMMARY = "account_summary"
QUERY_CURRENT_CYCLE = "current_cycle"
QUERY_BALANCE = "balance"
QUERY_DUNNING_STATE = "dunning_state"

SEARCH_ATTRIBUTES = ("CustomerId", "OrderId", "BillingAccountId")


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


def billing_account_workflow_id(billing_account_id: str) -> str:
    return f"billing-account-{billing_account_id}"


class OrderItemInput(BaseModel):
    item_id: str
    offering_id: str
    action: str = "add"  # "modify": a plan change of an existing product (no number, no OSS order)


class OrderInput(BaseModel):
    order_id: str
    customer_id: str
    billing_account_id: str
    items: list[OrderItemInput]
    # How long to wait for the OSS callback before each status poll, and in total.
    oss_callback_wait_s: float = 30.0
    oss_total_timeout_s: float = 3600.0


class OssUpdate(BaseModel):
    """TMF641 ServiceOrderStateChangeEvent as delivered to o2c's callback."""

    service_order_id: str
    external_id: str
    state: str


class CancelOrder(BaseModel):
    cancel_id: str
    reason: str | None = None


class OrderStatus(BaseModel):
    order_id: str
    state: str
    step: str
    reason: str | None = None


class ProductActivated(BaseModel):
    product_id: str
    msisdn: str
    offering_id: str
    activated_at: datetime


class PaymentReceived(BaseModel):
    payment_id: str
    amount_cents: int
    source: str  # bank_transfer | card | sepa_debit | webhook


class BillingAccountInput(BaseModel):
    billing_account_id: str
    customer_id: str
    # Carried across continue-as-new; absent on the first run.
    carried_state: dict | None = None


class DunningView(BaseModel):
    level: str
    suspended: bool
    paused: bool
    invoice_id: str | None
    next_step: str | None
    next_step_at: datetime | None
    # The running DunningWorkflow episode (its id); its own query `dunning_status` tells where it stands.
    episode_id: str | None = None


class PendingDebit(BaseModel):
    """A charge in flight (SEPA `processing`): the invoice is not charged again while it is waited for."""

    payment_id: str
    since: datetime
    next_check: datetime


class CycleView(BaseModel):
    start: datetime
    end: datetime
    local_start: str
    local_end: str


class AccountSummary(BaseModel):
    billing_account_id: str
    cycle: CycleView | None
    balance: Decimal = Field(description="open amount in EUR, gross")
    dunning: DunningView
    products: list[str]
    invoices_issued: int


class OpenInvoice(BaseModel):
    invoice_id: str
    number: str
    open_cents: int
    due_at: datetime


class BalanceView(BaseModel):
    """The account's open items after every received payment has been allocated."""

    open_cents: int
    open_invoices: list[OpenInvoice]


class IssuedInvoice(BaseModel):
    invoice_id: str
    number: str | None  # None while the invoice is an onHold draft
    gross_cents: int
    issued_at: datetime
    due_at: datetime
    state: str = "new"  # onHold: a draft waiting for staff approval; validated: approved, to be sent and charged


class InvoiceApproved(BaseModel):
    """Staff approved an onHold draft (it has its number now): the workflow sends and collects it."""

    invoice_id: str


class BillOnDemandRequested(BaseModel):
    """TMF678 customerBillOnDemand: bill everything not yet billed, now, off-cycle."""

    request_id: str


class CreditNoteIssued(BaseModel):
    """A credit note was issued through the API: the workflow books its credit and e-mails it."""

    credit_note_id: str
    invoice_id: str
    amount_cents: int


class DunningEnded(BaseModel):
    """A DunningWorkflow episode the account started has ended (DunningWorkflow -> BillingAccountWorkflow)."""

    episode_id: str
    outcome: str  # settled | collections | written_off
    lifted: bool = False  # the episode lifted its barring (every bar on the lines) as it ended


class PaymentCheck(BaseModel):
    """What the gateway says now about a charge still in flight (a SEPA debit in `processing`)."""

    payment_id: str
    status: str  # the payment row's status after this check
    changed: bool = False


class ChargeOutcome(BaseModel):
    status: str  # succeeded | processing | requires_action | declined | canceled | no_payment_method
    payment_id: str | None = None
    decline_code: str | None = None
    decline_class: str | None = None
    message: str | None = None


class AccountSetup(BaseModel):
    profile: BillingProfile
    cycle: CycleSpec
    customer_email: str | None = None


class SpendingThresholdCrossed(BaseModel):
    """Usage cost in a cycle reached a share of the account's spending limit (sent once per crossing by ingestion)."""

    period_start: datetime
    threshold_percent: int
    usage_cost: Decimal
    limit: Decimal
    hard_cap: bool = False
    kind: str = "spending"  # domain.spending: "spending" (the account's limit) or "roamingData" (the EU roaming data cap)


class RoamingDataContinue(BaseModel):
    """The customer asked (through the CRM) to go on using roaming data this cycle past the EU roaming data cap's
    cut-off: the workflow lifts the roaming data barring, if any, and does not bar again until the next cycle."""

    request_id: str
    reason: str
