"""access control and audit: hashed API keys with rotation and revocation, staff accounts and their
console sessions, and the append-only audit log (on PostgreSQL a trigger refuses UPDATE and DELETE)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import persistence.types


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


_APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""

# SQLite has triggers too; RAISE(ABORT) there is the same guarantee for a database edited by hand.
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)


def upgrade() -> None:
    op.create_table(
        'api_key',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('name', sa.String(), nullable=False),
        sa.Column('role', sa.String(), nullable=False),
        sa.Column('key_hash', sa.String(), nullable=False),
        sa.Column('prefix', sa.String(), nullable=False),
        sa.Column('source', sa.String(), nullable=False),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(), nullable=True),
        sa.Column('expires_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(), nullable=True),
        sa.Column('replaced_by', sa.String(), nullable=True),
        sa.UniqueConstraint('key_hash'),
    )
    op.create_index('ix_api_key_role', 'api_key', ['role'], unique=False)

    op.create_table(
        'staff_user',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('username', sa.String(), nullable=False),
        sa.Column('display_name', sa.String(), nullable=False),
        sa.Column('role', sa.String(), nullable=False),
        sa.Column('password_hash', sa.String(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('username'),
    )

    op.create_table(
        'staff_session',
        sa.Column('id', sa.String(), primary_key=True),
        sa.Column('staff_user_id', sa.String(), nullable=False),
        sa.Column('csrf_token', sa.String(), nullable=False),
        sa.Column('created_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('ended_at', persistence.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('user_agent', sa.String(), nullable=True),
    )
    op.create_index('ix_staff_session_staff_user_id', 'staff_session', ['staff_user_id'], unique=False)
    op.create_index('ix_staff_session_expires_at', 'staff_session', ['expires_at'], unique=False)

    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('at', persistence.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('actor_kind', sa.String(), nullable=False),
        sa.Column('actor_id', sa.String(), nullable=False),
        sa.Column('actor_role', sa.String(), nullable=True),
        sa.Column('actor_name', sa.String(), nullable=True),
        sa.Column('action', sa.String(), nullable=False),
        sa.Column('resource_type', sa.String(), nullable=True),
        sa.Column('resource_id', sa.String(), nullable=True),
        sa.Column('customer_id', sa.String(), nullable=True),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('before', sa.JSON(), nullable=True),
        sa.Column('after', sa.JSON(), nullable=True),
        sa.Column('request_id', sa.String(), nullable=True),
        sa.Column('method', sa.String(), nullable=True),
        sa.Column('path', sa.String(), nullable=True),
        sa.Column('status', sa.Integer(), nullable=True),
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False)
    op.create_index('ix_audit_log_customer_id', 'audit_log', ['customer_id'], unique=False)
    op.create_index('ix_audit_log_request_id', 'audit_log', ['request_id'], unique=False)

    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(_APPEND_ONLY_FUNCTION)
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        # TRUNCATE does not fire row triggers; refuse it too.
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")
    elif dialect == 'sqlite':
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    elif dialect == 'sqlite':
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    op.drop_index('ix_audit_log_request_id', table_name='audit_log')
    op.drop_index('ix_audit_log_customer_id', table_name='audit_log')
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_staff_session_expires_at', table_name='staff_session')
    op.drop_index('ix_staff_session_staff_user_id', table_name='staff_session')
    op.drop_table('staff_session')
    op.drop_table('staff_user')
    op.drop_index('ix_api_key_role', table_name='api_key')
    op.drop_table('api_key')
