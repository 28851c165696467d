"""usage rating detail: each usage record names the tariff version that priced it, with the called
number, zone, band and the split into parts; allowance counters count exact seconds and bytes and
can be flagged for re-rating

Columns are appended with server defaults so existing rows stay valid. Existing counters get their
exact consumption from the whole minutes / MB they held (at most one unit above the truth, which
is what those rows were rated with).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_USAGE_COLUMNS = ('tariff_id', 'tariff_version', 'destination', 'destination_name', 'roaming_country', 'zone', 'band', 'disposition')
_COUNTER_COLUMNS = ('voice_s', 'data_bytes', 'eu_roaming_data_bytes')


def upgrade() -> None:
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        for name in _USAGE_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(), nullable=True))
        batch_op.add_column(sa.Column('parts', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.create_index('ix_usage_record_product_period', ['product_id', 'period_start'], unique=False)

    with op.batch_alter_table('allowance_counter', schema=None) as batch_op:
        for name in _COUNTER_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_event_time', persistence.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('needs_rerate', sa.Boolean(), nullable=False, server_default=sa.false()))

    op.execute('UPDATE allowance_counter SET voice_s = voice_minutes * 60, data_bytes = data_mb * 1000000')


def downgrade() -> None:
    with op.batch_alter_table('allowance_counter', schema=None) as batch_op:
        for name in ('needs_rerate', 'last_event_time', *_COUNTER_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table('usage_record', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_record_product_period')
        for name in ('parts', *_USAGE_COLUMNS):
            batch_op.drop_column(name)
