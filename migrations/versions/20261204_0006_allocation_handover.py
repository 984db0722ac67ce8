"""allocation hand-over: a migrated VM takes its source VM's MACs, reverted until final

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handover", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("source", sa.JSON(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_allocations_handover_valid"), "handover IS NULL OR handover IN ('pending', 'final')"
        )
        batch_op.create_index("ix_allocations_handover", ["handover"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_allocations_handover")
        batch_op.drop_constraint(op.f("ck_allocations_handover_valid"), type_="check")
        batch_op.drop_column("source")
        batch_op.drop_column("handover")
