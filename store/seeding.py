"""Loading benchmark and test data in bulk: FOR bench/ AND tests ONLY, never the API's or the
scheduler's path.

``bench/scale.py`` needs a million runs with realistic histories; submitting them one by one
through ``store.runs.submit`` would take hours and could not give them past timestamps or
ended states. These helpers insert many rows per statement through the models' tables (so
column types, JSON encoding, enums and constraints are the models'), after checking each run
obeys the lifecycle's rules the services keep (a timestamp for every state it claims, no
dispatch for a waiting run, a reason for an unsuccessful end). Like every store service they
never commit: the caller commits each batch.

Anything the store maintains beside the rows (counters, summaries) is brought up to date by
``refresh_derived`` once the load is done.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from runyard.status import TERMINAL, TIMESTAMP_FIELD, UNSUCCESSFUL, WAITING, RunStatus
from store.models import Run, RunTag

# Store modules that keep derived rows (counters, summaries) and a function each that
# recomputes them from the runs; called if present (they may not exist on this schema yet).
# Issue 16's run counters are kept by triggers, which count bulk inserts too; the rebuild
# after a load is a cheap guarantee that they match, whatever keeps them.
DERIVED: tuple[tuple[str, str], ...] = (("store.counters", "rebuild"),)


class BadSeed(ValueError):
    """A run the lifecycle could not have produced."""


def check_run(row: Mapping[str, Any]) -> None:
    """Refuse a run no sequence of legal transitions leads to (see runyard.status)."""
    status = RunStatus(row["status"])
    for required in ("id", "experiment_id", "created_at"):
        if row.get(required) is None:
            raise BadSeed(f"run {row.get('id')!r}: {required} is required")
    if row.get(TIMESTAMP_FIELD[status]) is None:
        raise BadSeed(f"run {row['id']}: {status} without {TIMESTAMP_FIELD[status]}")
    if status in WAITING and row.get("dispatched_at") is not None and row.get("worker_id"):
        raise BadSeed(f"run {row['id']}: waiting but held by a worker")
    if status in UNSUCCESSFUL and not row.get("failure_reason"):
        raise BadSeed(f"run {row['id']}: {status} without a failure_reason")
    if status not in TERMINAL:
        ended = [s for s in TERMINAL if row.get(TIMESTAMP_FIELD[s]) is not None]
        if ended:
            raise BadSeed(f"run {row['id']}: {status} but has ended ({ended[0]})")


def seed_runs(
    session: Session, runs: Sequence[Mapping[str, Any]], tags: Sequence[Mapping[str, Any]] = ()
) -> None:
    """Insert ``runs`` (column → value, as ``Run`` has them) and their ``tags`` (run_id, key,
    value) in one multi-row statement per table. Experiments and clusters they name must
    exist (made through store.runs / store.clusters)."""
    for row in runs:
        check_run(row)
    if runs:
        # One statement needs every row to name the same columns: the model's defaults fill in.
        defaults = _defaults(Run)
        rows = [{**defaults, **row} for row in runs]
        session.execute(insert(Run.__table__), rows)  # type: ignore[attr-defined]
    if tags:
        rows = [{"value": None, **tag} for tag in tags]
        session.execute(insert(RunTag.__table__), rows)  # type: ignore[attr-defined]


def _defaults(model: Any) -> dict[str, Any]:
    columns = set(model.__table__.columns.keys())
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if name in columns and not info.is_required()
    }


def refresh_derived(session: Session) -> list[str]:
    """Recompute what the store maintains beside the rows after a bulk load; returns the
    names of the refreshers it ran (none on a schema without derived rows)."""
    ran = []
    for module_name, function in DERIVED:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        refresher = getattr(module, function, None)
        if refresher is not None:
            refresher(session)
            ran.append(f"{module_name}.{function}")
    return ran
