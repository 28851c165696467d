"""The state a billing-account workflow keeps and carries across continue-as-new."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from domain.billing_cycle import BillingPeriod, CycleSpec
from domain.billing_profile import BillingProfile
from domain.dunning import DunningState
from workflows.messages import (
    BillOnDemandRequested,
    CreditNoteIssued,
    InvoiceApproved,
    DunningEnded,
    OpenInvoice,
    PaymentReceived,
    PendingDebit,
    ProductActivated,
    RoamingDataContinue,
    SpendingThresholdCrossed,
)


class AccountState(BaseModel):
    billing_account_id: str
    customer_id: str
    profile: BillingProfile
    cycle: CycleSpec
    period: BillingPeriod
    products: list[ProductActivated] = []
    dunning: DunningState = DunningState()
    open_cents: int = 0
    open_invoices: list[OpenInvoice] = []
    invoices_issued: int = 0
    cycles_closed: int = 0
    # Attempts made per invoice, so a retry after continue-as-new gets a new attempt number (and idempotency key).
    charge_attempts: dict[str, int] = {}
    hard_declined: bool = False
    # When each dunning step of the current episode actually ran: a suspension keeps its notice period
    # from the moment the written notice really went out, not from when it was planned.
    step_times: dict[str, datetime] = {}
    pending_payments: list[PaymentReceived] = []
    pending_spending: list[SpendingThresholdCrossed] = []
    # "<period start>:<percent>" of every spending notice already sent, so a repeated signal sends nothing.
    spending_notified: list[str] = []
    # The period whose hard spending cap barred the lines; lifted when the next cycle starts.
    spending_barred_period: datetime | None = None
    # The period whose roaming data cap barred roaming data (lifted at the next cycle or when the customer asks to
    # continue), and the period in which the customer asked to continue (not barred again in it).
    roaming_barred_period: datetime | None = None
    roaming_continued_period: datetime | None = None
    pending_roaming_continue: list[RoamingDataContinue] = []
    started_at: datetime | None = None
    # Invoices issued as onHold drafts (the account's invoice hold), waiting for staff approval.
    held_invoices: list[str] = []
    # Signals not yet acted on when the workflow continued as new.
    pending_approvals: list[InvoiceApproved] = []
    pending_on_demand: list[BillOnDemandRequested] = []
    pending_credit_notes: list[CreditNoteIssued] = []
    # The running DunningWorkflow episode (its workflow id), started when the oldest open invoice fell overdue.
    dunning_episode_id: str | None = None
    pending_dunning_ended: list[DunningEnded] = []
    # Charges in flight per invoice (SEPA debits in `processing`), followed by signal and by polling.
    pending_debits: dict[str, PendingDebit] = {}
    # Invoices whose customer was already asked to authenticate a payment (3-D Secure): asked once.
    action_notified: list[str] = []
    # On-demand requests already billed (the latest ones), so a repeated signal bills nothing twice.
    on_demand_done: list[str] = []
