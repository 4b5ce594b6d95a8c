"""Metric logging benchmark: Runyard side by side with MLflow, in one run of this script.

    python -m bench.tracking [--points 100000] [--mlflow-sample 2000] [--live-points 500]
    python -m bench.tracking.ingest   (the issue's method; see its --help)

Starts a private Redis, the Runyard API, scheduler and one worker as real processes (local
executor, SQLite), and a local MLflow tracking server (SQLite backend), then measures:

(a) the cost of one logging call: Runyard ``run.log()`` inside a submitted run (writing to
    the real worker channel), MLflow ``log_metric`` synchronous and asynchronous;
(b) end-to-end durable throughput: from the first call until every point is in the
    database (Runyard: ``metric-names`` count; MLflow: ``log_batch`` of 1000, synchronous);
(c) the latency from ``run.log()`` to a Server-Sent Events subscriber.

MLflow is needed for its half only (``pip install mlflow``; not a project dependency):
without it, Runyard is measured alone. Not a test: it asserts nothing about speed. Every
process it starts is stopped at the end, on error too.
"""

# The parts: runyard_side (the run script and the stack it is submitted to), mlflow_side
# (the MLflow server and client measured as the peer), report (the figures side by side)
# and __main__ (the arguments and the order of measurements). The docstring above is also
# the text of --help.

METRIC = "x"  # the metric both sides log (the run script spells it too)


def figures(**options: object) -> list[tuple[str, float, str, str]]:
    """Rows of (name, value, unit, anchor) for ``python -m bench``: ingest measured the
    issue's way beside MLflow, 1/10/50 runs at once on SQLite and PostgreSQL, and the SDK
    buffer of a run logging 10 million points. ``options`` are those of
    ``bench.tracking.ingest.measure`` (``points``, ``concurrency``, ``concurrent_points``,
    ``buffer_points``, ``postgres``, ``with_mlflow``)."""
    from bench.tracking.ingest import measure

    found = measure(**options)  # type: ignore[arg-type]
    return found.rows + [(f"warning: {w}", 0, "", "") for w in found.warnings]
