"""list indexes and maintained run counters (issue 16: scale)

Every listing reads a page along an index in its own order; counts per cluster, status and
experiment, cancels and the queue-wait / run-duration histograms of ``/metrics`` live in
counter rows that triggers on ``run`` keep exact (so no write path, Python or SQL, can miss
them). The counters are filled from the runs already stored.

A later revision that recreates the ``run`` table on SQLite (``batch_alter_table`` with a
copy) drops its triggers: it must create them again (``create_triggers`` here).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Histogram bounds in seconds: api/metrics.py's WAIT_BUCKETS and DURATION_BUCKETS (now
# store.counters) when this revision was written. Bucket i counts values <= bound i and
# above bound i-1; bucket len(bounds) counts the rest (+Inf).
WAIT_BOUNDS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
DURATION_BOUNDS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600)
ENDED = "coalesce({r}.completed_at, {r}.failed_at, {r}.canceled_at)"
TRIGGERS = ("run_counters_insert", "run_counters_update", "run_counters_delete")

INDEXES = {
    "ix_run_queue": ["cluster", "status", "dispatched_at", "priority", "created_at", "id"],
    "ix_run_created": ["created_at", "id"],
    "ix_run_cluster_created": ["cluster", "created_at", "id"],
    "ix_run_status_created": ["status", "created_at", "id"],
    "ix_run_parent_created": ["parent_run_id", "created_at", "id"],
    "ix_run_experiment_created": ["experiment_id", "created_at", "id"],
    "ix_run_experiment_parent_created": ["experiment_id", "parent_run_id", "created_at", "id"],
}


def _micros(dialect: str, start: str, end: str) -> str:
    """SQL for the microseconds from ``start`` to ``end`` (never below 0), exact on both
    databases (SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' text). The whole seconds are read
    from the text without its fraction: SQLite's date functions keep milliseconds, so
    '…:54.999700' would count as second 55, and its fraction again on top."""
    if dialect == "postgresql":
        return f"GREATEST(0, (EXTRACT(EPOCH FROM ({end} - {start})) * 1000000)::bigint)"

    def stamp(x: str) -> str:
        fraction = f"CAST(substr(substr({x}, 21) || '000000', 1, 6) AS INTEGER)"
        return (
            f"(CAST(strftime('%s', substr({x}, 1, 19)) AS INTEGER) * 1000000"
            f" + CASE WHEN substr({x}, 20, 1) = '.' THEN {fraction} ELSE 0 END)"
        )

    return f"max(0, {stamp(end)} - {stamp(start)})"


def _bucket(micros: str, bounds: tuple[float, ...]) -> str:
    cases = " ".join(
        f"WHEN {micros} <= {round(b * 1_000_000)} THEN {i}" for i, b in enumerate(bounds)
    )
    return f"CASE {cases} ELSE {len(bounds)} END"


def _changes(dialect: str, r: str, sign: str) -> list[str]:
    """Statements adding (sign '+') or taking away ('-') what row ``r`` (NEW or OLD)
    counts for, each an upsert so concurrent writers never lose a count."""
    top = f"({r}.parent_run_id IS NULL)"
    cluster = f"coalesce({r}.cluster, '')"
    wait = _micros(dialect, f"{r}.queued_at", f"{r}.preparing_at")
    ran = _micros(dialect, f"{r}.running_at", ENDED.format(r=r))
    # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parsing ambiguity).
    return [
        f"INSERT INTO runcount (cluster, status, top_level, n) "
        f"SELECT {cluster}, {r}.status, {top}, {sign}1 WHERE true "
        f"ON CONFLICT (cluster, status, top_level) DO UPDATE SET n = runcount.n + excluded.n",
        f"INSERT INTO experimentruncount (experiment_id, status, top_level, n) "
        f"SELECT {r}.experiment_id, {r}.status, {top}, {sign}1 WHERE true "
        f"ON CONFLICT (experiment_id, status, top_level) "
        f"DO UPDATE SET n = experimentruncount.n + excluded.n",
        f"INSERT INTO clustercancelcount (cluster, n) SELECT {r}.cluster, {sign}1 "
        f"WHERE {r}.cluster IS NOT NULL AND {r}.canceled_at IS NOT NULL AND {top} "
        f"ON CONFLICT (cluster) DO UPDATE SET n = clustercancelcount.n + excluded.n",
        f"INSERT INTO runtimingbucket (cluster, kind, bucket, n, sum_us) "
        f"SELECT {r}.cluster, 'wait', {_bucket(wait, WAIT_BOUNDS)}, {sign}1, {sign}{wait} "
        f"WHERE {r}.cluster IS NOT NULL AND {r}.queued_at IS NOT NULL "
        f"AND {r}.preparing_at IS NOT NULL "
        f"ON CONFLICT (cluster, kind, bucket) DO UPDATE SET n = runtimingbucket.n + "
        f"excluded.n, sum_us = runtimingbucket.sum_us + excluded.sum_us",
        f"INSERT INTO runtimingbucket (cluster, kind, bucket, n, sum_us) "
        f"SELECT {r}.cluster, 'duration', {_bucket(ran, DURATION_BOUNDS)}, {sign}1, "
        f"{sign}{ran} "
        f"WHERE {r}.cluster IS NOT NULL AND {r}.running_at IS NOT NULL "
        f"AND {ENDED.format(r=r)} IS NOT NULL "
        f"ON CONFLICT (cluster, kind, bucket) DO UPDATE SET n = runtimingbucket.n + "
        f"excluded.n, sum_us = runtimingbucket.sum_us + excluded.sum_us",
    ]


# Columns whose change can move a run between counters.
COUNTED = (
    "cluster, status, parent_run_id, experiment_id, queued_at, preparing_at, running_at, "
    "completed_at, failed_at, canceled_at"
)


def _statement_changes(parts: list[tuple[str, str]]) -> list[str]:
    """PostgreSQL: statements applying what the rows of transition tables ``parts``
    (``(table, sign)``) count for, summed per counter row first, so a statement that
    inserts or moves 10,000 runs updates each counter row once (row by row, one
    transaction's updates of one row would pile up versions to walk), in key order (two
    writers lock counter rows in the same order)."""
    dialect = "postgresql"

    def union(select: str, where: str = "true") -> str:
        return " UNION ALL ".join(
            f"SELECT {select.format(r='r', sign=sign)} FROM {table} r WHERE {where.format(r='r')}"
            for table, sign in parts
        )

    top = "(r.parent_run_id IS NULL)"
    wait = _micros(dialect, "r.queued_at", "r.preparing_at")
    ran = _micros(dialect, "r.running_at", ENDED.format(r="r"))
    timing = " UNION ALL ".join(
        [
            union(
                f"r.cluster, 'wait' AS kind, {_bucket(wait, WAIT_BOUNDS)} AS bucket, "
                f"{{sign}}1 AS d, {{sign}}{wait} AS v",
                "r.cluster IS NOT NULL AND r.queued_at IS NOT NULL AND r.preparing_at IS NOT NULL",
            ),
            union(
                f"r.cluster, 'duration', {_bucket(ran, DURATION_BOUNDS)}, {{sign}}1, {{sign}}{ran}",
                f"r.cluster IS NOT NULL AND r.running_at IS NOT NULL "
                f"AND {ENDED.format(r='r')} IS NOT NULL",
            ),
        ]
    )
    return [
        "INSERT INTO runcount (cluster, status, top_level, n) "
        "SELECT cluster, status, top_level, sum(d) FROM ("
        + union(f"coalesce(r.cluster, '') AS cluster, r.status, {top} AS top_level, {{sign}}1 AS d")
        + ") t GROUP BY cluster, status, top_level HAVING sum(d) <> 0 "
        "ORDER BY cluster, status, top_level "
        "ON CONFLICT (cluster, status, top_level) DO UPDATE SET n = runcount.n + excluded.n",
        "INSERT INTO experimentruncount (experiment_id, status, top_level, n) "
        "SELECT experiment_id, status, top_level, sum(d) FROM ("
        + union(f"r.experiment_id, r.status, {top} AS top_level, {{sign}}1 AS d")
        + ") t GROUP BY experiment_id, status, top_level HAVING sum(d) <> 0 "
        "ORDER BY experiment_id, status, top_level "
        "ON CONFLICT (experiment_id, status, top_level) "
        "DO UPDATE SET n = experimentruncount.n + excluded.n",
        "INSERT INTO clustercancelcount (cluster, n) SELECT cluster, sum(d) FROM ("
        + union(
            "r.cluster, {sign}1 AS d",
            f"r.cluster IS NOT NULL AND r.canceled_at IS NOT NULL AND {top}",
        )
        + ") t GROUP BY cluster HAVING sum(d) <> 0 ORDER BY cluster "
        "ON CONFLICT (cluster) DO UPDATE SET n = clustercancelcount.n + excluded.n",
        "INSERT INTO runtimingbucket (cluster, kind, bucket, n, sum_us) "
        f"SELECT cluster, kind, bucket, sum(d), sum(v) FROM ({timing}) t "
        "GROUP BY cluster, kind, bucket HAVING sum(d) <> 0 OR sum(v) <> 0 "
        "ORDER BY cluster, kind, bucket "
        "ON CONFLICT (cluster, kind, bucket) DO UPDATE SET n = runtimingbucket.n + "
        "excluded.n, sum_us = runtimingbucket.sum_us + excluded.sum_us",
    ]


def create_triggers(dialect: str) -> None:
    """Triggers on ``run`` keeping every counter table equal to a recount of the runs:
    on PostgreSQL one per statement over its transition tables, on SQLite one per row."""
    if dialect == "postgresql":

        def block(parts: list[tuple[str, str]]) -> str:
            return ";\n    ".join(_statement_changes(parts))

        op.execute(
            f"""
CREATE OR REPLACE FUNCTION run_counters() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {block([("new_rows", "+")])};
  ELSIF TG_OP = 'DELETE' THEN
    {block([("old_rows", "-")])};
  ELSE
    {block([("old_rows", "-"), ("new_rows", "+")])};
  END IF;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
        )
        for name, event, tables in (
            ("run_counters_insert", "INSERT", "NEW TABLE AS new_rows"),
            ("run_counters_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("run_counters_delete", "DELETE", "OLD TABLE AS old_rows"),
        ):
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON run REFERENCING {tables} "
                "FOR EACH STATEMENT EXECUTE FUNCTION run_counters()"
            )
        return
    minus = ";\n  ".join(_changes(dialect, "OLD", "-"))
    plus = ";\n  ".join(_changes(dialect, "NEW", "+"))
    op.execute(f"CREATE TRIGGER run_counters_insert AFTER INSERT ON run BEGIN\n  {plus};\nEND")
    op.execute(f"CREATE TRIGGER run_counters_delete AFTER DELETE ON run BEGIN\n  {minus};\nEND")
    op.execute(
        f"CREATE TRIGGER run_counters_update AFTER UPDATE OF {COUNTED} ON run BEGIN\n"
        f"  {minus};\n  {plus};\nEND"
    )


def drop_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON run")
        op.execute("DROP FUNCTION IF EXISTS run_counters()")
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def _backfill(dialect: str) -> None:
    """The counters of the runs already stored, set-wise (one pass per table)."""
    top = "(r.parent_run_id IS NULL)"
    op.execute(
        "INSERT INTO runcount (cluster, status, top_level, n) "
        f"SELECT coalesce(r.cluster, ''), r.status, {top}, count(*) FROM run r "
        f"GROUP BY coalesce(r.cluster, ''), r.status, {top}"
    )
    op.execute(
        "INSERT INTO experimentruncount (experiment_id, status, top_level, n) "
        f"SELECT r.experiment_id, r.status, {top}, count(*) FROM run r "
        f"GROUP BY r.experiment_id, r.status, {top}"
    )
    op.execute(
        "INSERT INTO clustercancelcount (cluster, n) SELECT r.cluster, count(*) FROM run r "
        f"WHERE r.cluster IS NOT NULL AND r.canceled_at IS NOT NULL AND {top} "
        "GROUP BY r.cluster"
    )
    wait = _micros(dialect, "r.queued_at", "r.preparing_at")
    ran = _micros(dialect, "r.running_at", ENDED.format(r="r"))
    for kind, value, bounds, where in (
        ("wait", wait, WAIT_BOUNDS, "r.queued_at IS NOT NULL AND r.preparing_at IS NOT NULL"),
        (
            "duration",
            ran,
            DURATION_BOUNDS,
            f"r.running_at IS NOT NULL AND {ENDED.format(r='r')} IS NOT NULL",
        ),
    ):
        op.execute(
            "INSERT INTO runtimingbucket (cluster, kind, bucket, n, sum_us) "
            f"SELECT cluster, '{kind}', bucket, count(*), sum(v) FROM ("
            f"SELECT r.cluster AS cluster, {_bucket(value, bounds)} AS bucket, {value} AS v "
            f"FROM run r WHERE r.cluster IS NOT NULL AND {where}) AS t "
            "GROUP BY cluster, bucket"
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, columns in INDEXES.items():
        op.create_index(name, "run", columns, unique=False)
    op.create_index(
        "ix_run_cluster_ended",
        "run",
        ["cluster", sa.text("coalesce(completed_at, failed_at, canceled_at)"), "id"],
        unique=False,
    )
    op.create_table(
        "runcount",
        sa.Column("cluster", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("top_level", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "status", "top_level"),
    )
    op.create_table(
        "experimentruncount",
        sa.Column("experiment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("top_level", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "status", "top_level"),
    )
    op.create_table(
        "clustercancelcount",
        sa.Column("cluster", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("cluster"),
    )
    op.create_table(
        "runtimingbucket",
        sa.Column("cluster", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("sum_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "kind", "bucket"),
    )
    _backfill(dialect)
    create_triggers(dialect)


def downgrade() -> None:
    drop_triggers(op.get_bind().dialect.name)
    for table in ("runtimingbucket", "clustercancelcount", "experimentruncount", "runcount"):
        op.drop_table(table)
    # A later downgrade that rebuilt run on SQLite (batch mode) could not carry this
    # expression index over: it may be gone already.
    op.execute("DROP INDEX IF EXISTS ix_run_cluster_ended")
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="run")
