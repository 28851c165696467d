"""saved payment methods: a billing account's payment method as saved at the gateway (customer,
payment method and SEPA mandate ids, and whether the mandate is still active)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from persistence.types import UtcDateTime

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'saved_payment_method',
        sa.Column('billing_account_id', sa.String(), sa.ForeignKey('billing_account.id'), primary_key=True),
        sa.Column('gateway', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('gateway_customer_id', sa.String(), nullable=False),
        sa.Column('gateway_payment_method_id', sa.String(), nullable=False),
        sa.Column('source_digest', sa.String(), nullable=False),
        sa.Column('last4', sa.String(), nullable=True),
        sa.Column('brand', sa.String(), nullable=True),
        sa.Column('mandate_id', sa.String(), nullable=True),
        sa.Column('mandate_acceptance', sa.String(), nullable=True),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('status_reason', sa.String(), nullable=True),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_saved_payment_method_mandate_id', 'saved_payment_method', ['mandate_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_saved_payment_method_mandate_id', table_name='saved_payment_method')
    op.drop_table('saved_payment_method')
