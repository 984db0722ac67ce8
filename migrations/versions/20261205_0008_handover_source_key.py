"""hand-over source key: a pending hand-over keeps its source's owner identity taken

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 13:10:00
"""

import json

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _key(source: dict) -> str:
    # The same format as manager.services.handovers.identity_key (kept here: a migration
    # must not change when the application code does).
    interface = str(source["interface"])
    return (
        f"{source['scope_id']}:{source['owner_kind']}:{len(interface)}:{interface}:"
        f"{source['owner_name']}"
    )


def upgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_key", sa.String(length=1100), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, source FROM allocations WHERE handover = 'pending'")
    ).all()
    for row_id, source in rows:
        if isinstance(source, str):
            source = json.loads(source)
        if source:
            conn.execute(
                sa.text("UPDATE allocations SET source_key = :key WHERE id = :id"),
                {"key": _key(source), "id": row_id},
            )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index("uq_allocations_source_key", ["source_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("uq_allocations_source_key")
        batch_op.drop_column("source_key")
