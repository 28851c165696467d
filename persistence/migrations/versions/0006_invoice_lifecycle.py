"""invoice lifecycle: tamper-evident document chain, credit notes, on-demand bills and the draft hold

Every issued document (invoice or credit note) gets its place in one hash chain (`chain_seq`,
`previous_hash`, `content_hash`); the chain's head is one row in `document_chain`, which issuers
lock, so the chain cannot fork and a document cut off its end is still noticed. Invoices issued
before this revision keep NULL there (reported as unchained by `o2c verify-invoices`).

A credit note is an invoice row of kind `credit_note` that names the invoice it corrects; since an
invoice may have several credit notes (and an account several on-demand bills in one period), the
one-invoice-per-period rule becomes a partial unique index over cycle invoices only. An onHold draft
has no number yet, so `number` becomes nullable (still unique). `credit_note_request` keeps client
idempotency keys, `bill_on_demand` the TMF678 CustomerBillOnDemand requests, and
`billing_account.invoice_hold` the draft-hold setting.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_CYCLE_ONLY = sa.text("kind = 'cycle'")


def upgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.alter_column('number', existing_type=sa.String(), nullable=True)
        batch_op.drop_constraint('uq_invoice_account_period', type_='unique')
        batch_op.add_column(sa.Column('chain_seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('previous_hash', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('content_hash', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('referenced_invoice_id', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('referenced_invoice_number', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('referenced_invoice_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.String(), nullable=True))
        batch_op.create_unique_constraint('uq_invoice_chain_seq', ['chain_seq'])
        batch_op.create_index('ix_invoice_referenced_invoice_id', ['referenced_invoice_id'], unique=False)
    op.create_index('uq_invoice_account_period', 'invoice', ['billing_account_id', 'period_start', 'kind'], unique=True,
                    sqlite_where=_CYCLE_ONLY, postgresql_where=_CYCLE_ONLY)

    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invoice_hold', sa.Boolean(), nullable=False, server_default=sa.false()))

    chain = op.create_table(
        'document_chain',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('last_seq', sa.BigInteger(), nullable=False),
        sa.Column('last_hash', sa.String(), nullable=True),
    )
    op.bulk_insert(chain, [{'id': 'documents', 'last_seq': 0, 'last_hash': None}])

    op.create_table(
        'credit_note_request',
        sa.Column('key', sa.String(), primary_key=True),
        sa.Column('invoice_id', sa.String(), nullable=False),
        sa.Column('request_hash', sa.String(), nullable=False),
        sa.Column('credit_note_id', sa.String(), nullable=False),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_credit_note_request_invoice_id', 'credit_note_request', ['invoice_id'], unique=False)

    op.create_table(
        'bill_on_demand',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('name', sa.String(), nullable=True),
        sa.Column('description', sa.String(), nullable=True),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('state_reason', sa.String(), nullable=True),
        sa.Column('idempotency_key', sa.String(), nullable=True),
        sa.Column('request_hash', sa.String(), nullable=True),
        sa.Column('invoice_id', sa.String(), nullable=True),
        sa.Column('requested_by', sa.String(), nullable=True),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('idempotency_key', name='uq_bill_on_demand_idempotency_key'),
    )
    op.create_index('ix_bill_on_demand_billing_account_id', 'bill_on_demand', ['billing_account_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_bill_on_demand_billing_account_id', table_name='bill_on_demand')
    op.drop_table('bill_on_demand')
    op.drop_index('ix_credit_note_request_invoice_id', table_name='credit_note_request')
    op.drop_table('credit_note_request')
    op.drop_table('document_chain')
    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.drop_column('invoice_hold')
    # Credit notes and numberless drafts do not fit the old schema, and issued documents are never deleted.
    left = op.get_bind().execute(sa.text("SELECT count(*) FROM invoice WHERE kind = 'credit_note' OR number IS NULL")).scalar()
    if left:
        raise RuntimeError(f"cannot downgrade below 0006: {left} credit notes or onHold drafts exist")
    op.drop_index('uq_invoice_account_period', table_name='invoice')
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_index('ix_invoice_referenced_invoice_id')
        batch_op.drop_constraint('uq_invoice_chain_seq', type_='unique')
        for name in ('reason', 'referenced_invoice_date', 'referenced_invoice_number', 'referenced_invoice_id',
                     'content_hash', 'previous_hash', 'chain_seq'):
            batch_op.drop_column(name)
        batch_op.alter_column('number', existing_type=sa.String(), nullable=False)
        batch_op.create_unique_constraint('uq_invoice_account_period', ['billing_account_id', 'period_start', 'kind'])
