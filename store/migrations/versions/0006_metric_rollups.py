"""metric rollups: long series summarised per 1024 points

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPAN = 1024  # scheduler.models.ROLLUP_SPAN when this revision was written


def upgrade() -> None:
    op.create_table(
        "metricrollup",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("column", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("first_idx", sa.BigInteger(), nullable=False),
        sa.Column("last_idx", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("run_id", "name", "column", "bucket"),
    )
    # Series stored before this revision get their rollups now.
    op.execute(
        f"""
        INSERT INTO metricrollup
            (run_id, name, "column", bucket, first_idx, last_idx, min_value, max_value, n)
        SELECT run_id, name, "column", idx / {SPAN}, min(idx), max(idx), min(value),
               max(value), count(*)
        FROM metricpoint
        GROUP BY run_id, name, "column", idx / {SPAN}
        """
    )


def downgrade() -> None:
    op.drop_table("metricrollup")
