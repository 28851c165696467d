"""stripe webhooks: the events already acted on, so a redelivered event (Stripe delivers at least
once, for up to three days) changes nothing

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'stripe_webhook_event',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('type', sa.String(), nullable=False),
        sa.Column('object_id', sa.String(), nullable=True),
        sa.Column('payment_id', sa.String(), nullable=True),
        sa.Column('result', sa.String(), nullable=False),
        sa.Column('received_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_stripe_webhook_event_object_id', 'stripe_webhook_event', ['object_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_stripe_webhook_event_object_id', table_name='stripe_webhook_event')
    op.drop_table('stripe_webhook_event')
