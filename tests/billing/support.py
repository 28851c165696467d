"""Issuing documents straight through activities.invoice_issuer, for tests below the workflow and the API."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select as core_select
from sqlmodel import select

from activities.invoice_charges import PendingCharge
from activities.invoice_issuer import CreditItem, CreditRequest, credit_note_id_for, issue_credit_note, issue_invoice
from config.settings import Settings
from domain.billing_cycle import BillingPeriod
from domain.invoicing import ChargeLine
from persistence.db import engine_for, session_scope
from persistence.tables import BillingAccount, Invoice, Payment
from tests.support.records import create_billing_account, create_customer


def settings_for(db_url: str) -> Settings:
    return Settings(database_url=db_url)


def new_account(db_url: str, *, hold: bool = False) -> str:
    account_id = create_billing_account(db_url, create_customer(db_url))
    if hold:
        with session_scope(db_url) as session:
            account = session.get(BillingAccount, account_id)
            account.invoice_hold = True
            session.add(account)
    return account_id


def charge(net: str, description: str = "Mobile S monthly fee", rate: str = "19", kind: str = "recurring") -> PendingCharge:
    amount = Decimal(net)
    return PendingCharge(ChargeLine(kind=kind, description=description, unit="MON", unit_price=amount, net_amount=amount, vat_rate=Decimal(rate)), [], [])


def issue(db_url: str, account_id: str, at: datetime, *nets: str, hold: bool = False, settings: Settings | None = None) -> Invoice:
    """An invoice over `nets` (default 9.99 and 0.27), for a one-hour period starting at `at` (unique per call)."""
    nets = nets or ("9.99", "0.27")
    period = BillingPeriod(start=at, end=at + timedelta(hours=1), local_start=at.date(), local_end=at.date() + timedelta(days=1))
    with session_scope(db_url) as session:
        account = session.get(BillingAccount, account_id)
        charges = [charge(net, f"Line {i}") for i, net in enumerate(nets, start=1)]
        return issue_invoice(session, settings or settings_for(db_url), account, period, charges, at, at + timedelta(days=14), hold=hold)


def credit(db_url: str, invoice_id: str, at: datetime, *items: tuple[int, str | None], reason: str = "Goodwill", key: str | None = None):
    request = CreditRequest(reason=reason, items=tuple(CreditItem(n, None if a is None else Decimal(a)) for n, a in items))
    with session_scope(db_url) as session:
        return issue_credit_note(session, settings_for(db_url), invoice_id, request, at, credit_note_id=credit_note_id_for(key or str(uuid.uuid4())),
                                 issued_by="test")


def at(year: int, day_offset: int = 0, minutes: int = 0) -> datetime:
    """Noon UTC on 1 February of `year` (well inside the Berlin year), shifted."""
    return datetime(year, 2, 1, 12, tzinfo=UTC) + timedelta(days=day_offset, minutes=minutes)


def invoice(db_url: str, invoice_id: str) -> Invoice:
    with session_scope(db_url) as session:
        return session.get(Invoice, invoice_id)


def numbers(db_url: str, prefix: str) -> list[str]:
    with session_scope(db_url) as session:
        return sorted(n for n in session.exec(select(Invoice.number).where(Invoice.number.like(f"{prefix}%"))))


def ledger_entry(db_url: str, credit_note_id: str) -> Payment:
    with session_scope(db_url) as session:
        return session.get(Payment, f"creditNote:{credit_note_id}")


# --- behind the application's back (what the chain must reveal) -----------------------------------


def raw_row(db_url: str, invoice_id: str) -> dict:
    table = Invoice.__table__
    with engine_for(db_url).connect() as conn:
        return dict(conn.execute(core_select(table).where(table.c.id == invoice_id)).mappings().one())


def raw_update(db_url: str, invoice_id: str, **values) -> None:
    table = Invoice.__table__
    with engine_for(db_url).begin() as conn:
        conn.execute(table.update().where(table.c.id == invoice_id).values(**values))


def raw_delete(db_url: str, invoice_id: str) -> dict:
    row = raw_row(db_url, invoice_id)
    table = Invoice.__table__
    with engine_for(db_url).begin() as conn:
        conn.execute(table.delete().where(table.c.id == invoice_id))
    return row


def raw_insert(db_url: str, row: dict) -> None:
    with engine_for(db_url).begin() as conn:
        conn.execute(Invoice.__table__.insert().values(**row))
