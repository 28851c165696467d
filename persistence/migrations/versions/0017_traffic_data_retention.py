"""traffic data retention: when a usage record's traffic details and a rejected record's source line were
erased (domain.traffic_retention: six months after the bill, or after receipt for a rejected record)

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


def downgrade() -> None:
    op.drop_column('rejected_usage', 'line_erased_at')
    op.drop_column('usage_record', 'traffic_erased_at')
