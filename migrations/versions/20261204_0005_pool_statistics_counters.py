"""pool statistics counters: external and duplicate MACs kept on the pool row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_EXTERNAL = """
UPDATE pools SET external_count = (
    SELECT count(DISTINCT a.mac) FROM allocations a
    WHERE a.pool_id = pools.id AND NOT EXISTS (
        SELECT 1 FROM pool_ranges r
        WHERE r.pool_id = pools.id AND r.start_mac <= a.mac AND r.end_mac >= a.mac))
"""
_DUPLICATES = """
UPDATE pools SET duplicate_count = (
    SELECT count(DISTINCT a.mac) FROM allocations a
    WHERE a.pool_id = pools.id AND EXISTS (
        SELECT 1 FROM allocations b WHERE b.mac = a.mac AND b.id <> a.id))
"""


def upgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("external_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("duplicate_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    op.execute(_EXTERNAL)
    op.execute(_DUPLICATES)


def downgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("duplicate_count")
        batch_op.drop_column("external_count")
