"""SQLModel tables. Money is stored as integer cents (invoices, payments) or micro-units (rated usage).
Times are stored as UTC. Workflows never import this module (the sandbox would re-define the tables)."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Index, JSON, LargeBinary, UniqueConstraint, event, select, text
from sqlalchemy.orm import Session as _OrmSession
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
    # Cycle invoices wait as onHold drafts (no number) until staff approve them (migration 0006).
    invoice_hold: bool = False
    # A limit on the usage cost of one cycle (cents); None = no limit. With a hard cap, reaching it
    # bars outgoing use until the next cycle.
    spending_limit_cents: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    spending_hard_cap: bool = False
    # The EU roaming data cut-off limit (domain.spending.EU_ROAMING_DATA_CAP) applies unless the customer opted out (0015).
    roaming_data_cap_opt_out: bool = False
    # A complaint about a bill is open (migration 0017): the account's traffic data is kept past its six months
    # until staff release the hold (domain.traffic_retention). None = no hold.
    traffic_data_hold_reason: str | None = None
    traffic_data_hold_since: datetime | None = _utc(default=None, nullable=True)
    # E-invoicing (migration 0011): a Leitweg-ID (BT-10) makes the embedded XML an XRechnung.
    leitweg_id: str | None = None
    # Itemised bill (EVN, §65 TKG): only on the customer's request; optionally the last 3 digits masked.
    itemised_bill: bool = False
    itemised_mask_last3: bool = False


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
    # Indexes (migration 0015): each one is written by every CDR, so only those a query needs:
    # msisdn and billing_account_id (usage list filters, invoicing), (product_id, period_start)
    # (re-rating) and invoice_id only where set (an invoice's usage).
    __table_args__ = (
        Index("ix_usage_record_product_period", "product_id", "period_start"),
        Index("ix_usage_record_invoice_id", "invoice_id", postgresql_where=text("invoice_id IS NOT NULL"),
              sqlite_where=text("invoice_id IS NOT NULL")),
    )
    msisdn: str = Field(index=True)
    product_id: str
    billing_account_id: str = Field(index=True)
    event_time: datetime = _utc()
    quantity: int = Field(sa_type=BigInteger)  # seconds, messages or bytes
    status: str = "rated"  # TMF635: received | guided | rated | rerated | billed
    units: int = 0
    allowance_units: int = 0
    chargeable_units: int = 0
    amount_micros: int = Field(default=0, sa_type=BigInteger)
    catalog_version: str | None = None
    period_start: datetime = _utc()
    invoice_id: str | None = None
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
    # Set when the retention job erased the called number, roaming country and exact time (domain.traffic_retention).
    traffic_erased_at: datetime | None = _utc(default=None, nullable=True)


class RejectedUsage(SQLModel, table=True):
    """Nothing accepted is lost: a record we could not rate is kept with its reason."""

    __tablename__ = "rejected_usage"
    id: int | None = Field(default=None, primary_key=True)
    record_id: str | None = Field(default=None, index=True)
    reason_code: str
    reason: str
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime = _utc()
    # Set when the retention job erased the source line from `payload` (domain.traffic_retention).
    line_erased_at: datetime | None = _utc(default=None, nullable=True)
    # The retention run walks the lines still kept by receipt time (migration 0017).
    __table_args__ = (
        Index("ix_rejected_usage_line_kept", "received_at", "id", postgresql_where=text("line_erased_at IS NULL"),
              sqlite_where=text("line_erased_at IS NULL")),
    )



class TrafficRetentionRun(SQLModel, table=True):
    """One run of the traffic data retention (services.traffic_retention): what it erased, which accounts it had to
    keep, and how far it got. Counts are written in the transaction of each chunk they count, so a run that stops
    halfway is on record for what it did; the next run goes on from `billed_before` of the last finished one."""

    __tablename__ = "traffic_retention_run"
    id: str = Field(primary_key=True)
    as_of: datetime = _utc()
    billed_before: datetime = _utc()  # usage of invoices issued at or before this was due
    rejected_before: datetime = _utc()  # rejected lines received at or before this were due
    scope: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # None: every account; else the ids it was limited to
    started_at: datetime = _utc()
    finished_at: datetime | None = _utc(default=None, nullable=True)
    # Where the walk through due invoices stands: (issued_at, id) of the last one done.
    cursor_issued_at: datetime | None = _utc(default=None, nullable=True)
    cursor_invoice_id: str | None = None
    usage_records_erased: int = Field(default=0, sa_type=BigInteger)
    rejected_lines_erased: int = Field(default=0, sa_type=BigInteger)
    held_accounts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


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
    # The running cost of the usage rated into this period (sum of usage_record.amount_micros) and the part
    # of it that is roaming data outside roam-like-at-home, moved under this row's lock by every write of
    # usage (migration 0015): spending limits and the EU roaming data cap read these, never re-sum usage.
    usage_micros: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    roaming_data_micros: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class InvoiceSequence(SQLModel, table=True):
    """One row per number series; incremented in the same transaction as the invoice insert (gapless)."""

    __tablename__ = "invoice_sequence"
    series: str = Field(primary_key=True)
    last_value: int = 0


class Invoice(SQLModel, table=True):
    """An issued document: an invoice (kind cycle | on_demand) or a credit note (kind credit_note).

    Issued means numbered: from then on only `state` and `paid_cents` may change (GoBD); the guard
    below refuses anything else, and `content_hash` (SHA-256 over the canonical content, chained to
    the previous document's hash in issue order, see activities.invoice_issuer) makes a change made
    behind the ORM's back visible to `o2c verify-invoices`. A cycle invoice of an account on hold
    is first an onHold draft without a number; approval numbers and seals it."""

    __table_args__ = (
        # One cycle invoice per account and period; on-demand bills and credit notes may share a period.
        Index("uq_invoice_account_period", "billing_account_id", "period_start", "kind", unique=True,
              sqlite_where=text("kind = 'cycle'"), postgresql_where=text("kind = 'cycle'")),
    )
    id: str = Field(primary_key=True)
    number: str | None = Field(default=None, unique=True)  # None only for an onHold draft
    kind: str = "cycle"  # cycle | on_demand | late_fee | credit_note
    billing_account_id: str = Field(index=True)
    customer_id: str = Field(index=True)
    state: str = Field(default="new", index=True)  # TMF678: new | onHold | validated | sent | partiallyPaid | settled
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    local_period_start: date
    local_period_end: date
    issued_at: datetime = _utc(index=True)  # the traffic data retention run walks invoices by issue date (0017)
    due_at: datetime = _utc()
    currency: str = "EUR"
    net_cents: int = Field(sa_type=BigInteger)
    vat_cents: int = Field(sa_type=BigInteger)
    gross_cents: int = Field(sa_type=BigInteger)
    paid_cents: int = Field(default=0, sa_type=BigInteger)  # settled so far, by payments and credit notes
    lines: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    vat_breakdown: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    pdf: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # The EN 16931 CII XML (Factur-X EN 16931 or XRechnung) embedded in `pdf` (migration 0011).
    xml: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # Tamper evidence: position in the one document chain, the previous document's hash and this one's.
    chain_seq: int | None = Field(default=None, sa_type=BigInteger, unique=True)
    previous_hash: str | None = None
    content_hash: str | None = None
    # A credit note names the invoice it corrects (number and issue date as printed) and why.
    referenced_invoice_id: str | None = Field(default=None, index=True)
    referenced_invoice_number: str | None = None
    referenced_invoice_date: date | None = None
    reason: str | None = None


# What may still move on an issued document: its TMF678 state and how much of it is settled.
INVOICE_MOVABLE_FIELDS = frozenset({"state", "paid_cents"})
# Set once on a numbered document that has neither PDF nor hash yet, never changed afterwards.
INVOICE_SEAL_FIELDS = frozenset({"pdf", "xml", "chain_seq", "previous_hash", "content_hash"})


class ImmutableDocumentError(RuntimeError):
    """An issued invoice or credit note was about to be changed or deleted (GoBD: correct it by a credit note)."""


@event.listens_for(Invoice, "before_update")
def _issued_documents_keep_their_content(_mapper, connection, target: Invoice) -> None:
    from sqlalchemy import inspect as sa_inspect

    changed = sorted(a.key for a in sa_inspect(target).attrs if a.key not in INVOICE_MOVABLE_FIELDS and a.history.has_changes())
    if not changed:
        return
    table = Invoice.__table__
    stored = connection.execute(select(table.c.number, table.c.content_hash.is_(None) & table.c.pdf.is_(None)).where(table.c.id == target.id)).first()
    stored_number, awaiting_seal = (stored[0], bool(stored[1])) if stored is not None else (None, False)
    # A cycle invoice is numbered first and gets its PDF, XML and seal once, afterwards (invoice_issuer.seal_documents).
    if stored_number is not None and not (awaiting_seal and set(changed) <= INVOICE_SEAL_FIELDS):
        raise ImmutableDocumentError(f"{stored_number} is issued: {', '.join(changed)} cannot change; issue a credit note instead")


@event.listens_for(Invoice, "before_delete")
def _issued_documents_are_kept(_mapper, _connection, target: Invoice) -> None:
    if target.number is not None:
        raise ImmutableDocumentError(f"{target.number} is issued and cannot be deleted")


def _is_bulk_change_of(state, model: type[SQLModel]) -> bool:
    """An ORM-executed UPDATE or DELETE statement aimed at `model`'s table (it would bypass per-row guards)."""
    if not (state.is_update or state.is_delete):
        return False
    mapper = state.bind_mapper
    return (mapper is not None and mapper.class_ is model) or getattr(state.statement, "table", None) is model.__table__


@event.listens_for(_OrmSession, "do_orm_execute")
def _no_bulk_invoice_changes(state) -> None:
    # Bulk UPDATE/DELETE statements bypass the per-row guards above, so invoices are changed row by row only.
    if _is_bulk_change_of(state, Invoice):
        raise ImmutableDocumentError("invoices are updated row by row through the ORM, never by a bulk UPDATE or DELETE")


class DocumentChain(SQLModel, table=True):
    """The head of the document hash chain: one row, locked by every issuer, so the chain never forks
    and a document removed from its end is still noticed (migration 0006 creates the row)."""

    __tablename__ = "document_chain"
    id: str = Field(primary_key=True)  # "documents"
    last_seq: int = Field(default=0, sa_type=BigInteger)
    last_hash: str | None = None


class CreditNoteRequest(SQLModel, table=True):
    """A client's key for a credit note request: the same key again returns the same credit note."""

    __tablename__ = "credit_note_request"
    key: str = Field(primary_key=True)
    invoice_id: str = Field(index=True)
    request_hash: str
    credit_note_id: str
    created_at: datetime = _utc()


class BillOnDemand(SQLModel, table=True):
    """TMF678 CustomerBillOnDemand: an off-cycle bill requested for a billing account; the account's
    workflow issues it (state inProgress until then)."""

    __tablename__ = "bill_on_demand"
    id: str = Field(primary_key=True)
    billing_account_id: str = Field(index=True)
    name: str | None = None
    description: str | None = None
    state: str = "inProgress"  # inProgress | done | rejected | terminatedWithError
    state_reason: str | None = None
    idempotency_key: str | None = Field(default=None, unique=True)
    request_hash: str | None = None
    invoice_id: str | None = None
    requested_by: str | None = None
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


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
    allocated_cents: int = Field(default=0, sa_type=BigInteger)  # how much of a succeeded payment is used up: by invoices, or refunded (services.refunds)
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


class HubListener(SQLModel, table=True):
    """A listener registered at one TMF API's hub (`POST {api}/hub`): where that API's events go.
    `secret` signs every delivery (HMAC-SHA256); it is shown to the client once, at registration.
    A deleted listener is kept (deleted_at set) so its delivery history stays readable."""

    __tablename__ = "hub_listener"
    id: str = Field(primary_key=True)
    api: str = Field(index=True)  # productOrderingManagement | productInventory | customerBillManagement | paymentManagement | accountManagement
    callback: str
    query: str | None = None  # TMF filter, e.g. "eventType=ProductOrderStateChangeEvent"
    secret: str
    created_by: str | None = None  # the API key's role
    created_at: datetime = _utc()
    deleted_at: datetime | None = _utc(default=None, nullable=True, index=True)


class HubEvent(SQLModel, table=True):
    """Every event o2c emitted, whether or not a listener wanted it: it numbers the events of each
    resource (`sequence`) and makes event ids deterministic business keys
    ("<resourceType>:<id>:<state>:<n>")."""

    __tablename__ = "hub_event"
    __table_args__ = (UniqueConstraint("resource_key", "sequence", name="uq_hub_event_resource_sequence"),)
    id: str = Field(primary_key=True)  # the eventId
    event_type: str
    resource_key: str = Field(index=True)  # "<resourceType>:<id>"
    state: str  # what the event says happened: the resource's state or status, or an explicit key
    sequence: int = Field(sa_type=BigInteger)  # 1, 2, 3 ... per resource
    event_time: datetime = _utc()
    created_at: datetime = _utc()


class HubDelivery(SQLModel, table=True):
    """One event for one listener, written in the transaction that made the change (an outbox), and
    POSTed by the hub dispatcher. Deliveries of the same listener and resource go out strictly in
    `sequence` order: a later one waits while an earlier one is pending."""

    __tablename__ = "hub_delivery"
    __table_args__ = (
        UniqueConstraint("listener_id", "event_id", name="uq_hub_delivery_listener_event"),
        Index("ix_hub_delivery_due", "status", "next_attempt_at"),
        Index("ix_hub_delivery_resource", "listener_id", "resource_key", "sequence"),
    )
    id: int | None = Field(default=None, primary_key=True)
    listener_id: str = Field(foreign_key="hub_listener.id")
    event_id: str
    event_type: str
    resource_key: str
    sequence: int = Field(sa_type=BigInteger)
    body: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # the TMF event as POSTed
    status: str = "pending"  # pending | delivered | failed | cancelled (listener deleted)
    attempts: int = 0
    next_attempt_at: datetime | None = _utc(default=None, nullable=True)  # None = as soon as it is first in line
    last_error: str | None = None
    last_status_code: int | None = None
    created_at: datetime = _utc()  # when o2c recorded it (wall clock): the retry window starts here
    replayed_at: datetime | None = _utc(default=None, nullable=True)  # a replay starts a new retry window
    delivered_at: datetime | None = _utc(default=None, nullable=True)
    failed_at: datetime | None = _utc(default=None, nullable=True)


# --- dunning (migration 0008) ---------------------------------------------------------------------


class DunningEpisode(SQLModel, table=True):
    """One dunning episode (one DunningWorkflow, id `dunning-<account>-<first overdue invoice>`): where it
    stands for staff, and why it ended."""

    __tablename__ = "dunning_episode"
    id: str = Field(primary_key=True)  # the workflow id
    billing_account_id: str = Field(index=True)
    customer_id: str | None = None
    invoice_id: str  # the first overdue invoice
    segment: str  # the dunning policy (config/dunning/<segment>.yaml)
    state: str = Field(default="active", index=True)  # active | settled | collections | written_off
    level: str | None = None  # the last level whose actions ran
    started_at: datetime = _utc()
    ended_at: datetime | None = _utc(default=None, nullable=True)
    end_reason: str | None = None


class DunningAction(SQLModel, table=True):
    """What dunning did and what staff asked it to do, one row per action, keyed by a business key so a
    retried activity or a repeated request writes it once. Staff actions carry who (`actor`) and why
    (`reason`); the workflow's own actions have actor `system`."""

    __tablename__ = "dunning_action"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    episode_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    kind: str  # notice | late_fee | payment_retry | bar | unbar | terminate | collections | write_off | pause | resume | waive_fee | retry_payment
    level: str | None = None
    actor: str = "system"
    reason: str | None = None
    status: str = "done"  # done | skipped | failed; staff requests: requested -> applied | rejected | failed
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = _utc(index=True)
    applied_at: datetime | None = _utc(default=None, nullable=True)


class PendingOneTimeCharge(SQLModel, table=True):
    """A one-time charge (e.g. a late fee) waiting for the account's next invoice, which bills it once
    (services.pending_charges). Amounts are net cents; the VAT rate is kept as exact decimal text."""

    __tablename__ = "pending_charge"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # business key, e.g. "dunning-fee:<episode>:<level>"
    billing_account_id: str = Field(index=True)
    kind: str = "late_fee"
    description: str
    amount_cents: int = Field(sa_type=BigInteger)
    vat_rate: str = "0"
    vat_category: str = "O"
    source: str | None = Field(default=None, index=True)  # e.g. the dunning episode id
    status: str = Field(default="pending", index=True)  # pending | billed | waived
    invoice_id: str | None = Field(default=None, index=True)
    created_at: datetime = _utc()
    billed_at: datetime | None = _utc(default=None, nullable=True)
    waived_at: datetime | None = _utc(default=None, nullable=True)
    waived_by: str | None = None
    waive_reason: str | None = None


class StripeWebhookEvent(SQLModel, table=True):
    """Each Stripe event is acted on once: its id is written in the same transaction as its effect
    on the payment (migration 0007), so a redelivery finds it and does nothing. `result` says what
    the event did: applied | unchanged (stale or repeated state) | ignored (not a payment event) |
    unmatched (no o2c payment to record it on)."""

    __tablename__ = "stripe_webhook_event"
    id: str = Field(primary_key=True)  # Stripe's event id, evt_...
    type: str
    object_id: str | None = Field(default=None, index=True)  # e.g. the PaymentIntent's id
    payment_id: str | None = None
    result: str
    received_at: datetime = _utc()


# --- access control and audit (migration 0010) ----------------------------------------------------


class ApiKey(SQLModel, table=True):
    """An API key, stored as the SHA-256 of the key (a high-entropy random string, shown once). A rotated
    key stays valid until `expires_at` (the grace period) and names its successor in `replaced_by`."""

    __tablename__ = "api_key"
    id: str = Field(primary_key=True)
    name: str
    role: str = Field(index=True)
    key_hash: str = Field(unique=True)  # hex SHA-256 of the key
    prefix: str  # the key's first characters, to recognise it in lists (never enough to use it)
    source: str = "admin"  # admin (created through the API or CLI) | config (seeded from O2C_API_KEYS)
    created_at: datetime = _utc()
    created_by: str | None = None
    expires_at: datetime | None = _utc(default=None, nullable=True)
    revoked_at: datetime | None = _utc(default=None, nullable=True)
    revoked_by: str | None = None
    replaced_by: str | None = None  # the key that rotation made in its place


class StaffUser(SQLModel, table=True):
    """A person who logs in to the staff console. `password_hash` is scrypt (services.staff)."""

    __tablename__ = "staff_user"
    id: str = Field(primary_key=True)
    username: str = Field(unique=True)
    display_name: str
    role: str
    password_hash: str
    active: bool = True
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


class StaffSession(SQLModel, table=True):
    """A console login. The cookie carries a random token; only its SHA-256 is stored. `csrf_token` is
    sent back with every form post of the session."""

    __tablename__ = "staff_session"
    id: str = Field(primary_key=True)  # hex SHA-256 of the cookie token
    staff_user_id: str = Field(index=True)
    csrf_token: str
    created_at: datetime = _utc()
    expires_at: datetime = _utc(index=True)
    ended_at: datetime | None = _utc(default=None, nullable=True)
    user_agent: str | None = None


class AuditLog(SQLModel, table=True):
    """Who did what, when and why: one row per change, written in the transaction of the change (or, for
    the request-level entry, right after the response). Append-only: the guards below refuse any UPDATE
    or DELETE through the ORM, and on PostgreSQL a trigger (migration 0010) refuses them in SQL."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _utc(index=True)
    actor_kind: str  # api_key | staff | config_key | system | anonymous
    actor_id: str
    actor_role: str | None = None
    actor_name: str | None = None
    action: str  # e.g. "POST /tmf-api/...", "apiKey.rotate", "console.cancel_order"
    resource_type: str | None = None
    resource_id: str | None = None
    customer_id: str | None = Field(default=None, index=True)
    reason: str | None = None
    before: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    request_id: str | None = Field(default=None, index=True)
    method: str | None = None
    path: str | None = None
    status: int | None = None


class AppendOnlyError(RuntimeError):
    """The audit log is append-only: an entry can never be changed or removed."""


@event.listens_for(AuditLog, "before_update")
def _audit_entries_never_change(_mapper, _connection, target: AuditLog) -> None:
    raise AppendOnlyError(f"audit_log entry {target.id} cannot be changed: the audit log is append-only")


@event.listens_for(AuditLog, "before_delete")
def _audit_entries_are_kept(_mapper, _connection, target: AuditLog) -> None:
    raise AppendOnlyError(f"audit_log entry {target.id} cannot be deleted: the audit log is append-only")


@event.listens_for(_OrmSession, "do_orm_execute")
def _no_bulk_audit_changes(state) -> None:
    if _is_bulk_change_of(state, AuditLog):
        raise AppendOnlyError("the audit log is append-only: no UPDATE or DELETE")


# --- service state (migration 0014) ----------------------------------------------------------------


class ProductStatusChange(SQLModel, table=True):
    """The history of a product's status: every move (and every change of why), by whom and on whose behalf."""

    __tablename__ = "product_status_change"
    id: int | None = Field(default=None, primary_key=True)
    product_id: str = Field(index=True)
    from_status: str | None = None
    to_status: str
    reason: str | None = None
    source: str  # manual | dunning | spending | reconciliation
    actor: str = "system"
    at: datetime = _utc(index=True)


class ManualSuspension(SQLModel, table=True):
    """A staff suspension in force (the row goes when staff restore the line), with the bar the other parties
    (dunning, the spending cap) want underneath it, re-applied on restore (domain.service_state)."""

    __tablename__ = "manual_suspension"
    product_id: str = Field(primary_key=True)
    request_id: str
    reason: str
    actor: str
    at: datetime = _utc()
    underlying_barring: str = "none"  # none | outgoing | full
    underlying_reason: str | None = None



class Refund(SQLModel, table=True):
    """TMF676 Refund: money given back from a payment (kind refund: by finance, through the gateway or
    booked by hand) or taken back by the payer's bank (kind chargeback: a card dispute or a SEPA return).
    `reversal` records where the money came from (account credit, invoice allocations; domain.allocation
    .reverse), so a failed refund or a won dispute puts it back exactly (migration 0012)."""

    __tablename__ = "refund"
    id: str = Field(primary_key=True)
    correlator_id: str = Field(unique=True)  # the client's idempotency key; "dispute:<id>" for a Stripe dispute
    request_hash: str | None = None
    kind: str = "refund"  # refund | chargeback
    payment_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    amount_cents: int = Field(sa_type=BigInteger)
    currency: str = "EUR"
    method: str  # gateway | manual
    status: str  # pending | succeeded | failed | canceled
    reason: str | None = None
    gateway_refund_id: str | None = Field(default=None, index=True)
    dispute_id: str | None = Field(default=None, unique=True)
    dispute_status: str | None = None  # needs_response | under_review | won | lost (chargebacks)
    fee_cents: int = Field(default=0, sa_type=BigInteger)
    failure_reason: str | None = None
    reversal: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reversed: bool = False  # the money is currently taken back from the payment
    recorded_by: str | None = None
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


# --- cycle charges: billed fees, plan changes, promotions (migration 0013) ---------------------------


class BilledFeeRow(SQLModel, table=True):
    """A recurring charge or credit an issued invoice carries for part of one cycle (domain.charges.BilledFee).
    Passed back to domain.charges.compute_cycle_charges, it keeps a fee from being billed twice. Fees are
    micro-units (a discounted fee may have sub-cent precision)."""

    __tablename__ = "billed_fee"
    __table_args__ = (UniqueConstraint("invoice_id", "seq", name="uq_billed_fee_invoice_seq"),)
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(index=True)
    seq: int  # position among the invoice's billed fees
    product_id: str = Field(index=True)
    plan_id: str
    period_start: datetime = _utc()
    covered_from: datetime = _utc()
    covered_to: datetime = _utc()
    monthly_fee_micros: int = Field(sa_type=BigInteger)
    net_fee_micros: int = Field(sa_type=BigInteger)
    direction: str  # charge | credit
    times: int = 1


class ProductPlanSpan(SQLModel, table=True):
    """A plan (product offering) of a product from `effective_at` on: the first plan at activation, then each
    plan change (TMF622 modify). A downgrade waits for the cycle end: `applied` turns true once
    Product.offering_id shows it."""

    __tablename__ = "product_plan_span"
    __table_args__ = (UniqueConstraint("product_id", "effective_at", name="uq_product_plan_span_product_effective"),)
    id: str = Field(primary_key=True)  # "<order id>:<order item id>"
    product_id: str = Field(index=True)
    offering_id: str
    offering_version: str
    previous_offering_id: str | None = None
    effective_at: datetime = _utc(index=True)
    requested_at: datetime = _utc()
    order_id: str | None = None
    applied: bool = False


class ProductDiscount(SQLModel, table=True):
    """A catalog promotion granted to a product by its order item (TMF622 itemPrice.priceAlteration)."""

    __tablename__ = "product_discount"
    __table_args__ = (UniqueConstraint("product_id", "promotion_id", name="uq_product_discount_promotion"),)
    id: str = Field(primary_key=True)  # "<product id>:<promotion id>"
    product_id: str = Field(index=True)
    billing_account_id: str = Field(index=True)
    promotion_id: str
    name: str
    kind: str  # percent | fixed
    value: str  # exact decimal text: percent, or net EUR per cycle
    applies_to: str  # recurring | invoice
    cycles: int | None = None
    first_cycle_at: datetime = _utc()
    order_id: str | None = None


class SavedPaymentMethod(SQLModel, table=True):
    """The payment method of a billing account as saved at the payment gateway (migration 0016): the gateway's
    customer, payment method and (SEPA) mandate ids. One row per account, replaced when the method changes.
    `source_digest` is a digest of what the client sent, so the same PATCH again calls no gateway."""

    __tablename__ = "saved_payment_method"
    billing_account_id: str = Field(primary_key=True, foreign_key="billing_account.id")
    gateway: str  # stripe | sandbox
    kind: str  # card | sepa_debit
    gateway_customer_id: str
    gateway_payment_method_id: str
    source_digest: str
    last4: str | None = None
    brand: str | None = None
    mandate_id: str | None = Field(default=None, index=True)
    mandate_acceptance: str | None = None  # online | offline
    # active | revoked (the mandate was revoked or went inactive: charges are hard declines until a new method is saved)
    status: str = "active"
    status_reason: str | None = None
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


class ConsoleLoginFailure(SQLModel, table=True):
    """A failed console sign-in, counted per (username, client address) to slow password guessing
    (api.console.login_limit). Kept in the database so every API process counts the same failures."""

    __tablename__ = "console_login_failure"
    __table_args__ = (Index("ix_console_login_failure_key", "username", "client_ip", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    username: str
    client_ip: str
    at: datetime = _utc()
