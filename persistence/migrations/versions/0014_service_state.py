"""service state: the product status history (`product_status_change`) and staff suspensions in force
(`manual_suspension`, with the bar dunning or a spending cap wants underneath); failed console sign-ins
(`console_login_failure`) for the login rate limit

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'product_status_change',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('product_id', sa.String(), nullable=False),
        sa.Column('from_status', sa.String(), nullable=True),
        sa.Column('to_status', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('source', sa.String(), nullable=False),
        sa.Column('actor', sa.String(), nullable=False),
        sa.Column('at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_product_status_change_product_id', 'product_status_change', ['product_id'], unique=False)
    op.create_index('ix_product_status_change_at', 'product_status_change', ['at'], unique=False)
    op.create_table(
        'manual_suspension',
        sa.Column('product_id', sa.String(), primary_key=True),
        sa.Column('request_id', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('actor', sa.String(), nullable=False),
        sa.Column('at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('underlying_barring', sa.String(), nullable=False),
        sa.Column('underlying_reason', sa.String(), nullable=True),
    )
    op.create_table(
        'console_login_failure',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('username', sa.String(), nullable=False),
        sa.Column('client_ip', sa.String(), nullable=False),
        sa.Column('at', persistence.types.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_console_login_failure_key', 'console_login_failure', ['username', 'client_ip', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_console_login_failure_key', table_name='console_login_failure')
    op.drop_table('console_login_failure')
    op.drop_table('manual_suspension')
    op.drop_index('ix_product_status_change_at', table_name='product_status_change')
    op.drop_index('ix_product_status_change_product_id', table_name='product_status_change')
    op.drop_table('product_status_change')
