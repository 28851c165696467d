"""invoice documents: the EN 16931 CII XML stored next to the PDF (`invoice.xml`), the buyer's
Leitweg-ID for XRechnung (`billing_account.leitweg_id`) and the itemised-bill (EVN) opt-in
(`billing_account.itemised_bill`, `billing_account.itemised_mask_last3`)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.add_column(sa.Column('xml', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leitweg_id', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('itemised_bill', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('itemised_mask_last3', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('billing_account', schema=None) as batch_op:
        batch_op.drop_column('itemised_mask_last3')
        batch_op.drop_column('itemised_bill')
        batch_op.drop_column('leitweg_id')
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_column('xml')
