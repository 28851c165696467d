"""spending limits: a per-account limit on a cycle's usage cost (optionally a hard cap), and the
outbox through which ingestion reports crossed thresholds to the billing-account workflow

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 11:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spending_limit_cents', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('spending_hard_cap', sa.Boolean(), nullable=False, server_default=sa.false()))

    op.create_table(
        'outbox_message',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('key', sa.String(), nullable=False),
        sa.Column('topic', sa.String(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('next_attempt_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_outbox_message_topic', 'outbox_message', ['topic'], unique=False)
    op.create_index('ix_outbox_message_delivered_at', 'outbox_message', ['delivered_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_message_delivered_at', table_name='outbox_message')
    op.drop_index('ix_outbox_message_topic', table_name='outbox_message')
    op.drop_table('outbox_message')
    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.drop_column('spending_hard_cap')
        batch_op.drop_column('spending_limit_cents')
