"""team queue per kind (issue 17: admission reads each team's head per kind)

A team's waiting runs are read per kind, preemptible or not (``scheduler.queue_head``):
its non-preemptible runs may use only its quota, and read together they hid the
preemptible runs behind them from the idle capacity those may borrow. The team queue's
index gains the kind after the team; it serves the team listings' counts (one range per
kind) and the loose scan of a cluster's teams as before.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE = ["status", "dispatched_at", "priority", "created_at", "id"]


def upgrade() -> None:
    op.create_index(
        "ix_run_team_kind_queue", "run", ["cluster", "team", "preemptible", *QUEUE], unique=False
    )
    op.drop_index("ix_run_team_queue", table_name="run")


def downgrade() -> None:
    op.create_index("ix_run_team_queue", "run", ["cluster", "team", *QUEUE], unique=False)
    op.drop_index("ix_run_team_kind_queue", table_name="run")
