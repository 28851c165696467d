"""TMF event hubs: listeners registered through `POST {api}/hub`, the log of emitted events (which
numbers each resource's events and keeps event ids deterministic), and the per-listener delivery
outbox that the hub dispatcher POSTs from

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'hub_listener',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('api', sa.String(), nullable=False),
        sa.Column('callback', sa.String(), nullable=False),
        sa.Column('query', sa.String(), nullable=True),
        sa.Column('secret', sa.String(), nullable=False),
        sa.Column('created_by', sa.String(), nullable=True),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('deleted_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_hub_listener_api', 'hub_listener', ['api'], unique=False)
    op.create_index('ix_hub_listener_deleted_at', 'hub_listener', ['deleted_at'], unique=False)

    op.create_table(
        'hub_event',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('event_type', sa.String(), nullable=False),
        sa.Column('resource_key', sa.String(), nullable=False),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('event_time', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('resource_key', 'sequence', name='uq_hub_event_resource_sequence'),
    )
    op.create_index('ix_hub_event_resource_key', 'hub_event', ['resource_key'], unique=False)

    op.create_table(
        'hub_delivery',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('listener_id', sa.String(), sa.ForeignKey('hub_listener.id'), nullable=False),
        sa.Column('event_id', sa.String(), nullable=False),
        sa.Column('event_type', sa.String(), nullable=False),
        sa.Column('resource_key', sa.String(), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('body', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('replayed_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('failed_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('listener_id', 'event_id', name='uq_hub_delivery_listener_event'),
    )
    op.create_index('ix_hub_delivery_due', 'hub_delivery', ['status', 'next_attempt_at'], unique=False)
    op.create_index('ix_hub_delivery_resource', 'hub_delivery', ['listener_id', 'resource_key', 'sequence'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_hub_delivery_resource', table_name='hub_delivery')
    op.drop_index('ix_hub_delivery_due', table_name='hub_delivery')
    op.drop_table('hub_delivery')
    op.drop_index('ix_hub_event_resource_key', table_name='hub_event')
    op.drop_table('hub_event')
    op.drop_index('ix_hub_listener_deleted_at', table_name='hub_listener')
    op.drop_index('ix_hub_listener_api', table_name='hub_listener')
    op.drop_table('hub_listener')
