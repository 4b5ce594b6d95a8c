"""default cluster, container runs, run duration limit, metric steps, valueless tags

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cluster", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("container_runs", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_run_duration_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_idx", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE metric SET next_idx = count")
    with op.batch_alter_table("runtag", schema=None) as batch_op:
        batch_op.alter_column("value", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE runtag SET value = '' WHERE value IS NULL")
    with op.batch_alter_table("runtag", schema=None) as batch_op:
        batch_op.alter_column("value", existing_type=sa.Text(), nullable=False)
    with op.batch_alter_table("metric", schema=None) as batch_op:
        batch_op.drop_column("next_idx")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("max_run_duration_seconds")
    with op.batch_alter_table("cluster", schema=None) as batch_op:
        batch_op.drop_column("is_default")
        batch_op.drop_column("container_runs")
