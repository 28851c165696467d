"""billed fees, plan changes, promotions: the recurring charges and credits issued invoices carry per
product and cycle (`billed_fee`, domain.charges.BilledFee), the plan timeline of each product
(`product_plan_span`, TMF622 modify) and the catalog promotions granted to products (`product_discount`)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'billed_fee',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('invoice_id', sa.String(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('product_id', sa.String(), nullable=False),
        sa.Column('plan_id', sa.String(), nullable=False),
        sa.Column('period_start', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('covered_from', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('covered_to', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('monthly_fee_micros', sa.BigInteger(), nullable=False),
        sa.Column('net_fee_micros', sa.BigInteger(), nullable=False),
        sa.Column('direction', sa.String(), nullable=False),
        sa.Column('times', sa.Integer(), nullable=False),
        sa.UniqueConstraint('invoice_id', 'seq', name='uq_billed_fee_invoice_seq'),
    )
    op.create_index('ix_billed_fee_invoice_id', 'billed_fee', ['invoice_id'], unique=False)
    op.create_index('ix_billed_fee_product_id', 'billed_fee', ['product_id'], unique=False)
    op.create_table(
        'product_plan_span',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('product_id', sa.String(), nullable=False),
        sa.Column('offering_id', sa.String(), nullable=False),
        sa.Column('offering_version', sa.String(), nullable=False),
        sa.Column('previous_offering_id', sa.String(), nullable=True),
        sa.Column('effective_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('requested_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('order_id', sa.String(), nullable=True),
        sa.Column('applied', sa.Boolean(), nullable=False),
        sa.UniqueConstraint('product_id', 'effective_at', name='uq_product_plan_span_product_effective'),
    )
    op.create_index('ix_product_plan_span_product_id', 'product_plan_span', ['product_id'], unique=False)
    op.create_index('ix_product_plan_span_effective_at', 'product_plan_span', ['effective_at'], unique=False)
    op.create_table(
        'product_discount',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('product_id', sa.String(), nullable=False),
        sa.Column('billing_account_id', sa.String(), nullable=False),
        sa.Column('promotion_id', sa.String(), nullable=False),
        sa.Column('name', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('value', sa.String(), nullable=False),
        sa.Column('applies_to', sa.String(), nullable=False),
        sa.Column('cycles', sa.Integer(), nullable=True),
        sa.Column('first_cycle_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('order_id', sa.String(), nullable=True),
        sa.UniqueConstraint('product_id', 'promotion_id', name='uq_product_discount_promotion'),
    )
    op.create_index('ix_product_discount_product_id', 'product_discount', ['product_id'], unique=False)
    op.create_index('ix_product_discount_billing_account_id', 'product_discount', ['billing_account_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_product_discount_billing_account_id', table_name='product_discount')
    op.drop_index('ix_product_discount_product_id', table_name='product_discount')
    op.drop_table('product_discount')
    op.drop_index('ix_product_plan_span_effective_at', table_name='product_plan_span')
    op.drop_index('ix_product_plan_span_product_id', table_name='product_plan_span')
    op.drop_table('product_plan_span')
    op.drop_index('ix_billed_fee_product_id', table_name='billed_fee')
    op.drop_index('ix_billed_fee_invoice_id', table_name='billed_fee')
    op.drop_table('billed_fee')
