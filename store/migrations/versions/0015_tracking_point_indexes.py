"""tracking point indexes (issue 16: ingest speed)

Every point paid for three B-trees: the table, the series index the reads use, and a
unique index over (run_id, producer, seq, sub) that only recognised a replayed batch. The
unique index goes; a replay is recognised by ``metricproducer`` instead, one row per
(run, producer) holding the highest seq stored (``store.tracking.writes``). Points
already stored give it its first rows. Every read path keeps its index
(``ix_metricpoint_series``: whole series, history, rollups, latest values).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNIQUE = "uq_metricpoint_run_id_producer_seq_sub"
COLUMNS = ["run_id", "producer", "seq", "sub"]
# SQLite reflects the unnamed constraint of 0002 without a name: this names it so batch
# mode can drop it. (PostgreSQL named it itself.)
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def upgrade() -> None:
    op.create_table(
        "metricproducer",
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("producer", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("run_id", "producer"),
    )
    op.execute(
        "INSERT INTO metricproducer (run_id, producer, last_seq) "
        "SELECT run_id, producer, max(seq) FROM metricpoint GROUP BY run_id, producer"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("metricpoint_run_id_producer_seq_sub_key", "metricpoint", "unique")
        return
    with op.batch_alter_table("metricpoint", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint(UNIQUE, type_="unique")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint(
            "metricpoint_run_id_producer_seq_sub_key", "metricpoint", COLUMNS
        )
    else:
        with op.batch_alter_table("metricpoint", naming_convention=NAMING) as batch_op:
            batch_op.create_unique_constraint(UNIQUE, COLUMNS)
    op.drop_table("metricproducer")
