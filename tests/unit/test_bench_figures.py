"""The bench table's row shape, and the bulk loader's refusal of runs the lifecycle could
not have produced (bench data goes through the store's rules, not around them)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from bench.__main__ import as_figure, pick, with_previous
from bench.figures import Figure, table
from store.seeding import BadSeed, check_run


def test_a_table_shows_the_anchor_the_goal_and_whether_it_is_met() -> None:
    text = table([
        Figure("list p95", 12.5, "ms", "issue 16, 200k runs", 421.0, "<= 20"),
        Figure("ingest", 27185.0, "points/s", "MLflow log_batch", 7313.0, ">= 100000"),
        Figure("broken", math.nan, "ms", goal="<= 50", note="HTTP 500"),
    ])  # fmt: skip
    lines = text.splitlines()
    assert lines[0].split() == ["figure", "value", "unit", "anchor", "goal", "met", "note"]
    assert "issue 16, 200k runs 421" in lines[2] and lines[2].split()[-1] == "yes"
    assert "MLflow log_batch 7,313" in lines[3] and " NO" in lines[3]
    assert "n/a" in lines[4] and "HTTP 500" in lines[4]


def test_rows_from_other_modules_may_be_dicts_and_get_the_previous_figure() -> None:
    row = as_figure({"name": "admission", "value": 612, "unit": "decisions/s", "goal": ">= 500"})
    assert row == Figure("admission", 612.0, "decisions/s", goal=">= 500")
    [anchored] = with_previous([row], {"admission": 480.0})
    assert (anchored.anchor, anchored.anchor_value) == ("previous", 480.0)


def test_an_unknown_benchmark_name_is_refused_in_one_line() -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        pick("scale,nope", None)
    assert [name for name, _, _ in pick("scale,core", "core")] == ["scale"]


NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = {"id": "r1", "experiment_id": 1, "created_at": NOW, "queued_at": NOW}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**GOOD, "status": "Completed"}, "without completed_at"),
        ({**GOOD, "status": "Failed", "failed_at": NOW}, "without a failure_reason"),
        ({**GOOD, "status": "Running", "running_at": NOW, "failed_at": NOW}, "has ended"),
        ({**GOOD, "status": "Queued", "dispatched_at": NOW, "worker_id": "w"}, "held by"),
        ({"id": "r2", "status": "Queued", "queued_at": NOW, "created_at": NOW}, "experiment_id"),
    ],
)
def test_the_bulk_loader_refuses_a_run_the_lifecycle_cannot_produce(row: dict, reason: str) -> None:
    with pytest.raises(BadSeed, match=reason):
        check_run(row)


def test_the_bulk_loader_takes_a_run_that_could_have_happened() -> None:
    check_run({**GOOD, "status": "Completed", "running_at": NOW, "completed_at": NOW})
