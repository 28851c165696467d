"""dunning: episodes, the action / audit log, and pending one-time charges (late fees) for the next invoice

`dunning_episode` is one DunningWorkflow (id `dunning-<account>-<first overdue invoice>`), its state and
why it ended. `dunning_action` records every dunning action and every staff request (pause, resume,
waive a fee, retry a payment) with who and why, keyed by a unique business key. `pending_charge` holds
one-time charges such as late fees until an invoice bills them (or staff waive them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dunning_episode',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('customer_id', sa.String(), nullable=True),
        sa.Column('invoice_id', sa.String(), nullable=False),
        sa.Column('segment', sa.String(), nullable=False),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('level', sa.String(), nullable=True),
        sa.Column('started_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('ended_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('end_reason', sa.String(), nullable=True),
    )
    op.create_index('ix_dunning_episode_billing_account_id', 'dunning_episode', ['billing_account_id'], unique=False)
    op.create_index('ix_dunning_episode_state', 'dunning_episode', ['state'], unique=False)

    op.create_table(
        'dunning_action',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('key', sa.String(), nullable=False),
        sa.Column('episode_id', sa.String(), nullable=False),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('level', sa.String(), nullable=True),
        sa.Column('actor', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('applied_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_dunning_action_episode_id', 'dunning_action', ['episode_id'], unique=False)
    op.create_index('ix_dunning_action_billing_account_id', 'dunning_action', ['billing_account_id'], unique=False)
    op.create_index('ix_dunning_action_at', 'dunning_action', ['at'], unique=False)

    op.create_table(
        'pending_charge',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('key', sa.String(), nullable=False),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('description', sa.String(), nullable=False),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.Column('vat_rate', sa.String(), nullable=False),
        sa.Column('vat_category', sa.String(), nullable=False),
        sa.Column('source', sa.String(), nullable=True),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('invoice_id', sa.String(), nullable=True),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('billed_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('waived_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('waived_by', sa.String(), nullable=True),
        sa.Column('waive_reason', sa.String(), nullable=True),
        sa.UniqueConstraint('key'),
    )
    op.create_index('ix_pending_charge_billing_account_id', 'pending_charge', ['billing_account_id'], unique=False)
    op.create_index('ix_pending_charge_source', 'pending_charge', ['source'], unique=False)
    op.create_index('ix_pending_charge_status', 'pending_charge', ['status'], unique=False)
    op.create_index('ix_pending_charge_invoice_id', 'pending_charge', ['invoice_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pending_charge_invoice_id', table_name='pending_charge')
    op.drop_index('ix_pending_charge_status', table_name='pending_charge')
    op.drop_index('ix_pending_charge_source', table_name='pending_charge')
    op.drop_index('ix_pending_charge_billing_account_id', table_name='pending_charge')
    op.drop_table('pending_charge')
    op.drop_index('ix_dunning_action_at', table_name='dunning_action')
    op.drop_index('ix_dunning_action_billing_account_id', table_name='dunning_action')
    op.drop_index('ix_dunning_action_episode_id', table_name='dunning_action')
    op.drop_table('dunning_action')
    op.drop_index('ix_dunning_episode_state', table_name='dunning_episode')
    op.drop_index('ix_dunning_episode_billing_account_id', table_name='dunning_episode')
    op.drop_table('dunning_episode')
