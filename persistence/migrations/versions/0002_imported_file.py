"""imported_file: one row per CDR file imported, so a file is imported exactly once

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:02:59.742884
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import persistence.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('imported_file',
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('file_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('format', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('last_line_no', sa.Integer(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('not_charged', sa.Integer(), nullable=False),
    sa.Column('rejected_parse', sa.Integer(), nullable=False),
    sa.Column('rejected_window', sa.Integer(), nullable=False),
    sa.Column('rejected_rating', sa.Integer(), nullable=False),
    sa.Column('started_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('sha256')
    )
    with op.batch_alter_table('imported_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imported_file_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('imported_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imported_file_status'))

    op.drop_table('imported_file')
