"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:12:29.303736
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=150), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name=op.f('ck_api_tokens_role_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('target', sa.String(length=512), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index('ix_audit_events_target', ['target_type', 'target_id'], unique=False)

    op.create_table('held_macs',
    sa.Column('mac', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('mac', name=op.f('pk_held_macs'))
    )
    op.create_table('pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('name_key', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('allow_duplicates', sa.Boolean(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('cursor', sa.BigInteger(), nullable=True),
    sa.Column('held_count', sa.BigInteger(), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('index_token', sa.BigInteger(), nullable=False),
    sa.Column('low_warned', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pools')),
    sa.UniqueConstraint('name_key', name=op.f('uq_pools_name_key'))
    )
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.create_index('uq_pools_single_default', ['is_default'], unique=True, sqlite_where=sa.text('is_default'), postgresql_where=sa.text('is_default'))

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name=op.f('ck_users_role_valid')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('pool_changes',
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('mac', sa.BigInteger(), nullable=True),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_changes_pool_id_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pool_id', 'revision', name=op.f('pk_pool_changes'))
    )
    op.create_table('pool_ranges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('start_mac', sa.BigInteger(), nullable=False),
    sa.Column('end_mac', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('start_mac <= end_mac', name=op.f('ck_pool_ranges_bounds_ordered')),
    sa.CheckConstraint('start_mac > 0 AND end_mac < 281474976710656', name=op.f('ck_pool_ranges_bounds_48bit')),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_ranges_pool_id_pools'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_ranges'))
    )
    with op.batch_alter_table('pool_ranges', schema=None) as batch_op:
        batch_op.create_index('ix_pool_ranges_bounds', ['start_mac', 'end_mac'], unique=False)
        batch_op.create_index(batch_op.f('ix_pool_ranges_pool_id'), ['pool_id'], unique=False)

    op.create_table('scopes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.String(length=2048), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('engine', 'datacenter', 'cluster', 'namespace')", name=op.f('ck_scopes_kind_valid')),
    sa.ForeignKeyConstraint(['parent_id'], ['scopes.id'], name=op.f('fk_scopes_parent_id_scopes'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_scopes_pool_id_pools'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scopes')),
    sa.UniqueConstraint('parent_id', 'name', name=op.f('uq_scopes_parent_id_name')),
    sa.UniqueConstraint('path', name=op.f('uq_scopes_path'))
    )
    with op.batch_alter_table('scopes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scopes_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scopes_pool_id'), ['pool_id'], unique=False)

    op.create_table('allocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mac', sa.BigInteger(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('scope_id', sa.Integer(), nullable=False),
    sa.Column('owner_kind', sa.String(length=64), nullable=False),
    sa.Column('owner_name', sa.String(length=512), nullable=False),
    sa.Column('owner_uid', sa.String(length=255), nullable=True),
    sa.Column('interface', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('in_range', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state <> 'pending' OR expires_at IS NOT NULL", name=op.f('ck_allocations_pending_expires')),
    sa.CheckConstraint("state IN ('allocated', 'pending', 'reserved')", name=op.f('ck_allocations_state_valid')),
    sa.ForeignKeyConstraint(['mac'], ['held_macs.mac'], name=op.f('fk_allocations_mac_held_macs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_allocations_pool_id_pools'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['scope_id'], ['scopes.id'], name=op.f('fk_allocations_scope_id_scopes'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_allocations')),
    sa.UniqueConstraint('scope_id', 'owner_kind', 'owner_name', 'interface', name=op.f('uq_allocations_scope_id_owner_kind_owner_name_interface'))
    )
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.create_index('ix_allocations_mac', ['mac'], unique=False)
        batch_op.create_index('ix_allocations_owner', ['owner_kind', 'owner_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_allocations_pool_id'), ['pool_id'], unique=False)
        batch_op.create_index('ix_allocations_state_expires', ['state', 'expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('allocations', schema=None) as batch_op:
        batch_op.drop_index('ix_allocations_state_expires')
        batch_op.drop_index(batch_op.f('ix_allocations_pool_id'))
        batch_op.drop_index('ix_allocations_owner')
        batch_op.drop_index('ix_allocations_mac')

    op.drop_table('allocations')
    with op.batch_alter_table('scopes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scopes_pool_id'))
        batch_op.drop_index(batch_op.f('ix_scopes_parent_id'))

    op.drop_table('scopes')
    with op.batch_alter_table('pool_ranges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pool_ranges_pool_id'))
        batch_op.drop_index('ix_pool_ranges_bounds')

    op.drop_table('pool_ranges')
    op.drop_table('pool_changes')
    op.drop_table('users')
    with op.batch_alter_table('pools', schema=None) as batch_op:
        batch_op.drop_index('uq_pools_single_default', sqlite_where=sa.text('is_default'), postgresql_where=sa.text('is_default'))

    op.drop_table('pools')
    op.drop_table('held_macs')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_target')
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
    op.drop_table('api_tokens')
