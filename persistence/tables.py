"""SQLModel tables. Money is stored as integer cents (invoices, payments) or micro-units (rated usage).
Times are stored as UTC. Workflows never import this module (the sandbox would re-define the tables)."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, JSON, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from persistence.types import UtcDateTime


def _utc(**kwargs):
    return Field(sa_type=UtcDateTime, **kwargs)


class Customer(SQLModel, table=True):
    id: str = Field(primary_key=True)
    name: str = Field(index=True)
    status: str = "approved"
    email: str | None = None
    phone: str | None = None
    address: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    vat_id: str | None = None
    created_at: datetime = _utc()


class BillingAccount(SQLModel, table=True):
    __tablename__ = "billing_account"
    id: str = Field(primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    name: str
    state: str = "active"
    timezone: str = "Europe/Berlin"
    bill_cycle_day: int = 1
    billing_profile: str = "standard"
    currency: str = "EUR"
    payment_method: str | None = None  # e.g. a card token / test card number or "sepa:IBAN"
    email: str | None = None
    # The first instant of billing for fixed-length (demo) cycles; monthly cycles are anchored on the BCD.
    cycle_anchor: datetime | None = _utc(default=None, nullable=True)
    created_at: datetime = _utc()
    # A limit on the usage cost of one cycle (cents); None = no limit. With a hard cap, reaching it
    # bars outgoing use until the next cycle.
    spending_limit_cents: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    spending_hard_cap: bool = False


class ProductOrder(SQLModel, table=True):
    __tablename__ = "product_order"
    id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    state: str = Field(index=True)
    state_reason: str | None = None
    idempotency_key: str | None = Field(default=None, unique=True)
    request_hash: str | None = None
    request: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    external_id: str | None = None
    order_date: datetime = _utc()
    completion_date: datetime | None = _utc(default=None, nullable=True)
    cancellation_date: datetime | None = _utc(default=None, nullable=True)
    cancellation_reason: str | None = None


class ProductOrderItem(SQLModel, table=True):
    __tablename__ = "product_order_item"
    order_id: str = Field(foreign_key="product_order.id", primary_key=True)
    item_id: str = Field(primary_key=True)
    action: str
    offering_id: str
    state: str = "acknowledged"
    msisdn: str | None = None
    service_order_id: str | None = None
    service_order_state: str | None = None
    product_id: str | None = None


class OrderStep(SQLModel, table=True):
    """What the order workflow did, step by step, so staff can see where an order stands and why."""

    __tablename__ = "order_step"
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(index=True)
    step: str
    status: str  # started | done | failed | compensated
    detail: str | None = None
    at: datetime = _utc()


class CancelProductOrder(SQLModel, table=True):
    __tablename__ = "cancel_product_order"
    id: str = Field(primary_key=True)
    order_id: str = Field(index=True)
    state: str = "acknowledged"  # acknowledged | inProgress | done | terminatedWithError
    reason: str | None = None
    requested_at: datetime = _utc()
    effective_at: datetime | None = _utc(default=None, nullable=True)


class MsisdnPoolEntry(SQLModel, table=True):
    __tablename__ = "msisdn_pool"
    msisdn: str = Field(primary_key=True)
    status: str = Field(default="free", index=True)  # free | reserved | assigned
    reserved_for: str | None = Field(default=None, index=True)  # business key: "<order id>/<item id>"
    updated_at: datetime | None = _utc(default=None, nullable=True)


class Product(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("order_id", "order_item_id", name="uq_product_order_item"),)
    id: str = Field(primary_key=True)
    customer_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    offering_id: str
    offering_version: str
    catalog_version: str
    name: str
    msisdn: str | None = Field(default=None, index=True)
    status: str = Field(index=True)
    order_id: str
    order_item_id: str
    start_date: datetime | None = _utc(default=None, nullable=True)
    termination_date: datetime | None = _utc(default=None, nullable=True)
    billing_start: datetime | None = _utc(default=None, nullable=True)
    status_reason: str | None = None


class UsageRecord(SQLModel, table=True):
    """A usage record accepted for rating (TMF635). The client's record id is the dedup key."""

    __tablename__ = "usage_record"
    id: str = Field(primary_key=True)
    usage_type: str  # voice | sms | data
    msisdn: str = Field(index=True)
    product_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    event_time: datetime = _utc(index=True)
    quantity: int = Field(sa_type=BigInteger)  # seconds, messages or bytes
    status: str = "rated"  # TMF635: received | guided | rated | rerated | billed
    units: int = 0
    allowance_units: int = 0
    chargeable_units: int = 0
    amount_micros: int = Field(default=0, sa_type=BigInteger)
    catalog_version: str | None = None
    period_start: datetime = _utc(index=True)
    invoice_id: str | None = Field(default=None, index=True)
    received_at: datetime = _utc()
    # How it was priced (domain.rating_engine), so a bill line can be explained and re-rated.
    # units / allowance_units / chargeable_units above stay in billing units (started minutes,
    # messages, started MB) for the invoice; `parts` has the exact split in seconds, messages or bytes.
    tariff_id: str | None = None
    tariff_version: str | None = None
    destination: str | None = None  # the called number, E.164 digits
    destination_name: str | None = None  # e.g. "Germany mobile"
    roaming_country: str | None = None  # where it was used, as received (ISO country or zone id); None = at home
    zone: str | None = None  # the tariff's roaming zone it was rated in ("home", "eu", ...)
    band: str | None = None  # time band at the start: peak | offpeak | weekend | holiday
    parts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    disposition: str | None = None  # voice: ANSWERED, NO ANSWER, BUSY, ...


class RejectedUsage(SQLModel, table=True):
    """Nothing accepted is lost: a record we could not rate is kept with its reason."""

    __tablename__ = "rejected_usage"
    id: int | None = Field(default=None, primary_key=True)
    record_id: str | None = Field(default=None, index=True)
    reason_code: str
    reason: str
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = _utc()


class AllowanceCounter(SQLModel, table=True):
    __tablename__ = "allowance_counter"
    product_id: str = Field(primary_key=True)
    period_start: datetime = _utc(primary_key=True)
    # Allowance consumed this period. voice_minutes and data_mb are kept for compatibility, as the
    # started minutes / MB of the exact voice_s and data_bytes below, which rating uses.
    voice_minutes: int = 0
    sms: int = 0
    data_mb: int = 0
    voice_s: int = Field(default=0, sa_type=BigInteger)
    data_bytes: int = Field(default=0, sa_type=BigInteger)
    eu_roaming_data_bytes: int = Field(default=0, sa_type=BigInteger)  # for the EU fair-use limit
    last_event_time: datetime | None = _utc(default=None, nullable=True)  # latest usage rated into this period
    # Set when usage arrived older than usage already rated here (or the tariff was corrected):
    # allowances were drawn out of time order; services.usage_rerate puts them right.
    needs_rerate: bool = False


class InvoiceSequence(SQLModel, table=True):
    """One row per number series; incremented in the same transaction as the invoice insert (gapless)."""

    __tablename__ = "invoice_sequence"
    series: str = Field(primary_key=True)
    last_value: int = 0


class Invoice(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("billing_account_id", "period_start", "kind", name="uq_invoice_account_period"),)
    id: str = Field(primary_key=True)
    number: str = Field(unique=True)
    kind: str = "cycle"  # cycle | on_demand
    billing_account_id: str = Field(index=True)
    customer_id: str = Field(index=True)
    state: str = Field(default="new", index=True)  # TMF678: new | onHold | validated | sent | partiallyPaid | settled
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    local_period_start: date
    local_period_end: date
    issued_at: datetime = _utc()
    due_at: datetime = _utc()
    currency: str = "EUR"
    net_cents: int = Field(sa_type=BigInteger)
    vat_cents: int = Field(sa_type=BigInteger)
    gross_cents: int = Field(sa_type=BigInteger)
    paid_cents: int = Field(default=0, sa_type=BigInteger)
    lines: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    vat_breakdown: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    pdf: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class BilledCharge(SQLModel, table=True):
    """Marks a charge as invoiced, keyed by what it is ("recurring:<product>:<period start>", "activation:<product>"),
    so a fee is never charged twice, whichever invoice picks it up."""

    __tablename__ = "billed_charge"
    key: str = Field(primary_key=True)
    invoice_id: str = Field(index=True)


class Payment(SQLModel, table=True):
    id: str = Field(primary_key=True)
    correlator_id: str = Field(unique=True)  # TMF676 natural idempotency key
    billing_account_id: str = Field(index=True)
    invoice_id: str | None = Field(default=None, index=True)
    amount_cents: int = Field(sa_type=BigInteger)
    currency: str = "EUR"
    method: str  # card | sepa_debit | bank_transfer
    status: str  # succeeded | processing | requires_action | declined | canceled
    attempt: int = 0
    gateway_payment_id: str | None = None
    decline_code: str | None = None
    description: str | None = None
    recorded_by: str | None = None
    allocated_cents: int = Field(default=0, sa_type=BigInteger)  # how much of a succeeded payment went to invoices
    created_at: datetime = _utc()


class PaymentAllocation(SQLModel, table=True):
    """Which invoice a payment (or part of it) settled; payments go to open invoices oldest first."""

    __tablename__ = "payment_allocation"
    payment_id: str = Field(primary_key=True)
    invoice_id: str = Field(primary_key=True)
    amount_cents: int = Field(sa_type=BigInteger)
    at: datetime = _utc()


class Notification(SQLModel, table=True):
    """Each notice is sent once: the business key is the primary key."""

    id: str = Field(primary_key=True)
    billing_account_id: str = Field(index=True)
    channel: str = "email"
    recipient: str
    subject: str
    message_id: str | None = None
    sent_at: datetime = _utc()


class BusinessEvent(SQLModel, table=True):
    """The customer's story for support staff: what happened, when and why."""

    __tablename__ = "business_event"
    id: int | None = Field(default=None, primary_key=True)
    customer_id: str | None = Field(default=None, index=True)
    billing_account_id: str | None = Field(default=None, index=True)
    kind: str
    message: str
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = _utc(index=True)


class ImportedFile(SQLModel, table=True):
    """One CDR file's import, keyed by the SHA-256 of its content, so the same bytes are imported
    once however often the file is dropped or the importer restarts. Each batch of lines commits
    together with `last_line_no` and the counts, so an import cut off mid-file resumes after the
    last committed line instead of starting over."""

    __tablename__ = "imported_file"
    sha256: str = Field(primary_key=True)
    file_name: str
    format: str | None = None  # asterisk | freeswitch | pgw; None until detected
    source: str | None = None  # the record-id namespace ("<source>:<key>")
    timezone: str | None = None  # the switch clock's zone the file was read in
    status: str = Field(index=True)  # processing | done | failed
    size_bytes: int = Field(default=0, sa_type=BigInteger)
    last_line_no: int = 0  # every line up to and including this one is committed
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    not_charged: int = 0  # calls that were not answered: counted, never charged
    rejected_parse: int = 0
    rejected_window: int = 0
    rejected_rating: int = 0
    started_at: datetime = _utc()
    finished_at: datetime | None = _utc(default=None, nullable=True)
    error: str | None = None


class RejectedUsageRecycle(SQLModel, table=True):
    """One attempt to recycle a rejected usage record (TMF635 status `recycled`). Append-only: the
    rejected_usage row stays as it was received, and its current status is derived from these rows
    (services.usage_recycle), so the history of every attempt is kept."""

    __tablename__ = "rejected_usage_recycle"
    id: int | None = Field(default=None, primary_key=True)
    rejected_id: int = Field(foreign_key="rejected_usage.id", index=True)
    attempted_at: datetime = _utc()
    outcome: str  # accepted | duplicate | not_charged | rejected
    new_reason_code: str | None = None  # why it was rejected again (outcome rejected)
    new_reason: str | None = None
    usage_record_id: str | None = None  # the stored usage record (accepted, duplicate)
    recycled_by: str


class OutboxMessage(SQLModel, table=True):
    """A message written in the same transaction as the change it reports, delivered afterwards by a
    relay (at least once; receivers are idempotent). `key` makes writing it idempotent: the same
    business fact is written once, however often the transaction that finds it runs."""

    __tablename__ = "outbox_message"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    topic: str = Field(index=True)  # e.g. spending.threshold
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _utc()
    delivered_at: datetime | None = _utc(default=None, nullable=True, index=True)
    next_attempt_at: datetime | None = _utc(default=None, nullable=True)  # None = as soon as possible
    attempts: int = 0
    last_error: str | None = None
