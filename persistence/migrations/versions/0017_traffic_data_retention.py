"""traffic data retention: when a usage record's traffic details and a rejected record's source line were erased,
a complaint hold per billing account, the retention runs, and the indexes the nightly run walks
(domain.traffic_retention: six months after the bill, or after receipt for a rejected record)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 17:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from persistence.types import UtcDateTime

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('usage_record', sa.Column('traffic_erased_at', UtcDateTime(timezone=True), nullable=True))
    op.add_column('rejected_usage', sa.Column('line_erased_at', UtcDateTime(timezone=True), nullable=True))
    op.create_index('ix_rejected_usage_line_kept', 'rejected_usage', ['received_at', 'id'], unique=False,
                    postgresql_where=sa.text('line_erased_at IS NULL'), sqlite_where=sa.text('line_erased_at IS NULL'))
    op.add_column('billing_account', sa.Column('traffic_data_hold_reason', sa.String(), nullable=True))
    op.add_column('billing_account', sa.Column('traffic_data_hold_since', UtcDateTime(timezone=True), nullable=True))
    op.create_index('ix_invoice_issued_at', 'invoice', ['issued_at'], unique=False)
    op.create_table(
        'traffic_retention_run',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('as_of', UtcDateTime(timezone=True), nullable=False),
        sa.Column('billed_before', UtcDateTime(timezone=True), nullable=False),
        sa.Column('rejected_before', UtcDateTime(timezone=True), nullable=False),
        sa.Column('scope', sa.JSON(), nullable=True),
        sa.Column('started_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('finished_at', UtcDateTime(timezone=True), nullable=True),
        sa.Column('cursor_issued_at', UtcDateTime(timezone=True), nullable=True),
        sa.Column('cursor_invoice_id', sa.String(), nullable=True),
        sa.Column('usage_records_erased', sa.BigInteger(), nullable=False),
        sa.Column('rejected_lines_erased', sa.BigInteger(), nullable=False),
        sa.Column('held_accounts', sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('traffic_retention_run')
    op.drop_index('ix_invoice_issued_at', table_name='invoice')
    op.drop_column('billing_account', 'traffic_data_hold_since')
    op.drop_column('billing_account', 'traffic_data_hold_reason')
    op.drop_index('ix_rejected_usage_line_kept', table_name='rejected_usage')
    op.drop_column('rejected_usage', 'line_erased_at')
    op.drop_column('usage_record', 'traffic_erased_at')
