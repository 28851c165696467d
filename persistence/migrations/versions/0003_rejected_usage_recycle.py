"""rejected_usage_recycle: one row per attempt to recycle a rejected usage record (append-only;
the rejected record's status, rejected or recycled, is derived from its attempts)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:12:04.961332
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import persistence.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rejected_usage_recycle',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rejected_id', sa.Integer(), nullable=False),
    sa.Column('attempted_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('new_reason_code', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('new_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('usage_record_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('recycled_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['rejected_id'], ['rejected_usage.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rejected_usage_recycle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rejected_usage_recycle_rejected_id'), ['rejected_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rejected_usage_recycle', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rejected_usage_recycle_rejected_id'))

    op.drop_table('rejected_usage_recycle')
