"""teams, quotas per cluster, usage and run attempts (issue 17: clusters shared by teams)

Teams hold tokens; a team's quota on a cluster (nominal, borrowing and lending limits in
slots and GPUs); its decayed usage there (fair share); one row per attempt of a run (usage
accounting). A run records its team, whether it may be preempted and its preemptions; a
cluster, how it preempts and how fast past usage fades. Columns added to existing tables
take defaults, so a database of before teams admits exactly as it did.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _name(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "team",
        sa.Column("name", _name(32), nullable=False),
        sa.Column("description", _name(1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "team_usage",
        sa.Column("cluster", _name(32), nullable=False),
        sa.Column("team", _name(32), nullable=False),
        sa.Column("slot_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "team"),
    )
    op.create_table(
        "team_member",
        sa.Column("team", _name(32), nullable=False),
        sa.Column("token_id", _name(32), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team"], ["team.name"]),
        sa.ForeignKeyConstraint(["token_id"], ["apitoken.id"]),
        sa.PrimaryKeyConstraint("team", "token_id"),
    )
    op.create_index("ix_team_member_token_id", "team_member", ["token_id"], unique=False)
    op.create_table(
        "team_quota",
        sa.Column("cluster", _name(32), nullable=False),
        sa.Column("team", _name(32), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=True),
        sa.Column("borrowing_slots", sa.Integer(), nullable=True),
        sa.Column("borrowing_gpus", sa.Integer(), nullable=True),
        sa.Column("lending_slots", sa.Integer(), nullable=True),
        sa.Column("lending_gpus", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cluster"], ["cluster.name"]),
        sa.ForeignKeyConstraint(["team"], ["team.name"]),
        sa.PrimaryKeyConstraint("cluster", "team"),
    )
    op.create_index("ix_team_quota_team", "team_quota", ["team"], unique=False)
    op.create_table(
        "run_attempt",
        sa.Column("run_id", _name(300), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cluster", _name(32), nullable=False),
        sa.Column("team", _name(32), nullable=False),
        sa.Column("submitted_by", _name(64), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", _name(16), nullable=True),
        sa.Column("preempted_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("run_id", "attempt"),
    )
    op.create_index("ix_run_attempt_open", "run_attempt", ["cluster", "ended_at"], unique=False)
    op.create_index("ix_run_attempt_started", "run_attempt", ["started_at"], unique=False)
    op.create_index(
        "ix_run_attempt_outcome", "run_attempt", ["cluster", "outcome", "team"], unique=False
    )

    # Plain ADD COLUMNs (no table rebuild: the run table's expression index stays).
    false = sa.false()
    for column in (
        sa.Column("priority_preemption", sa.Boolean(), nullable=False, server_default=false),
        sa.Column(
            "preemption_min_runtime_seconds", sa.Float(), nullable=False, server_default="60"
        ),
        sa.Column("fair_share_half_life_hours", sa.Float(), nullable=False, server_default="168"),
        sa.Column("priority_aging_seconds", sa.Float(), nullable=False, server_default="3600"),
    ):
        op.add_column("cluster", column)
    for column in (
        sa.Column("team", _name(32), nullable=True),
        sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("previous_attempt_preempted", sa.Boolean(), nullable=False, server_default=false),
        sa.Column("preempt_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("preempted_by", sa.Text(), nullable=True),
        sa.Column("preemption_reason", sa.Text(), nullable=True),
    ):
        op.add_column("run", column)
    op.create_index(
        "ix_run_team_queue",
        "run",
        ["cluster", "team", "status", "dispatched_at", "priority", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_run_team_queue", table_name="run")
    # Plain DROP COLUMNs, likewise (SQLite 3.35 and later).
    for table, names in (
        (
            "run",
            (
                "preemption_reason",
                "preempted_by",
                "preempt_requested_at",
                "previous_attempt_preempted",
                "preemptions",
                "preemptible",
                "team",
            ),
        ),
        (
            "cluster",
            (
                "priority_aging_seconds",
                "fair_share_half_life_hours",
                "preemption_min_runtime_seconds",
                "priority_preemption",
            ),
        ),
    ):
        for name in names:
            op.drop_column(table, name)
    op.drop_index("ix_run_attempt_outcome", table_name="run_attempt")
    op.drop_index("ix_run_attempt_started", table_name="run_attempt")
    op.drop_index("ix_run_attempt_open", table_name="run_attempt")
    op.drop_table("run_attempt")
    op.drop_index("ix_team_quota_team", table_name="team_quota")
    op.drop_table("team_quota")
    op.drop_index("ix_team_member_token_id", table_name="team_member")
    op.drop_table("team_member")
    op.drop_table("team_usage")
    op.drop_table("team")
