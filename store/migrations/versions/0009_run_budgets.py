"""per-cluster run budgets; runs know the root of their tree

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cluster", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("budgets", sa.JSON(), nullable=True, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("root_run_id", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_run_root_run_id"), ["root_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_root_run_id"))
        batch_op.drop_column("root_run_id")
    with op.batch_alter_table("cluster", schema=None) as batch_op:
        batch_op.drop_column("budgets")
