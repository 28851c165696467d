"""refunds and chargebacks (TMF676 refund): the `refund` table

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 14:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from persistence.types import UtcDateTime

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'refund',
        sa.Column('id', sa.String(), nullable=False),
        sa.Column('correlator_id', sa.String(), nullable=False),
        sa.Column('request_hash', sa.String(), nullable=True),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('payment_id', sa.String(), nullable=False),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(), nullable=False),
        sa.Column('method', sa.String(), nullable=False),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('gateway_refund_id', sa.String(), nullable=True),
        sa.Column('dispute_id', sa.String(), nullable=True),
        sa.Column('dispute_status', sa.String(), nullable=True),
        sa.Column('fee_cents', sa.BigInteger(), nullable=False, server_default='0'),
        sa.Column('failure_reason', sa.String(), nullable=True),
        sa.Column('reversal', sa.JSON(), nullable=False),
        sa.Column('reversed', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('recorded_by', sa.String(), nullable=True),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('correlator_id'),
        sa.UniqueConstraint('dispute_id'),
    )
    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refund_payment_id'), ['payment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refund_billing_account_id'), ['billing_account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_refund_gateway_refund_id'), ['gateway_refund_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('refund', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refund_gateway_refund_id'))
        batch_op.drop_index(batch_op.f('ix_refund_billing_account_id'))
        batch_op.drop_index(batch_op.f('ix_refund_payment_id'))
    op.drop_table('refund')
