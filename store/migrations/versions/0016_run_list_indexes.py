"""run list indexes (issue 16: list latency)

The runs with a tag or property (and value), for ``GET /runs?tags=`` / ``?properties=``:
an index on the key, the value's first 200 characters (any value fits PostgreSQL's B-tree
row limit) and the run. Before it, such a filter read the whole tag table.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"ix_runtag_key_value": "runtag", "ix_runproperty_key_value": "runproperty"}


def upgrade() -> None:
    for name, table in INDEXES.items():
        op.create_index(
            name, table, ["key", sa.text("substr(value, 1, 200)"), "run_id"], unique=False
        )


def downgrade() -> None:
    for name in reversed(list(INDEXES)):
        # A later batch rebuild of the table on SQLite cannot carry an expression index.
        op.execute(f"DROP INDEX IF EXISTS {name}")
