"""Logging calls checked in the run's own process: values, shapes and limits."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.errors import Conflict, InvalidInput
from runyard.tracking import events as ev
from runyard.tracking.shapes import shape

LIMITS = ev.Limits()


def test_numbers_strings_and_non_finite_values_are_kept_as_logged() -> None:
    for value in (1, 2.5, "text", True, math.inf, -math.inf):
        assert ev.scalar_value(value, LIMITS) == value
    assert math.isnan(ev.scalar_value(math.nan, LIMITS))


def test_numpy_like_scalars_are_unwrapped() -> None:
    class Scalar:
        def item(self) -> float:
            return 0.5

    assert ev.scalar_value(Scalar(), LIMITS) == 0.5


def test_objects_that_are_not_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot log a dict"):
        ev.scalar_value({"a": 1}, LIMITS)


def test_a_generator_logs_as_a_list() -> None:
    assert ev.list_values((i for i in range(3)), LIMITS) == [0, 1, 2]


def test_a_string_is_not_a_list() -> None:
    with pytest.raises(InvalidInput):
        ev.list_values("abc", LIMITS)


def test_a_dataframe_like_table_is_read_by_columns() -> None:
    class Frame:
        def to_dict(self, orient: str) -> dict[str, list[int]]:
            assert orient == "list"
            return {"a": [1, 2], "b": [3, 4]}

    assert ev.table_values(Frame(), LIMITS) == {"a": [1, 2], "b": [3, 4]}


def test_table_columns_must_be_the_same_length() -> None:
    with pytest.raises(InvalidInput, match="differ in length"):
        ev.table_values({"a": [1], "b": [1, 2]}, LIMITS)


def test_too_many_columns_is_a_limit_error() -> None:
    with pytest.raises(ev.LimitExceeded):
        ev.row_values({f"c{i}": i for i in range(LIMITS.columns + 1)}, LIMITS)


def test_distinct_metric_names_are_limited_per_run() -> None:
    used = ev.RunLimits(ev.Limits(metric_names=2))
    used.metric("a", ev.SCALAR)
    used.metric("b", ev.SCALAR)
    used.metric("a", ev.LIST)  # the same name again is fine, as a vector
    with pytest.raises(ev.LimitExceeded, match="the limit is 2"):
        used.metric("c", ev.SCALAR)


def test_a_metric_keeps_its_kind() -> None:
    used = ev.RunLimits()
    used.metric("curve", ev.ROW)
    with pytest.raises(InvalidInput, match="logged as a row"):
        used.metric("curve", ev.SCALAR)


def test_properties_cannot_change_but_may_be_repeated() -> None:
    used = ev.RunLimits()
    used.properties_({"owner": "me"})
    used.properties_({"owner": "me"})
    with pytest.raises(Conflict, match="cannot change"):
        used.properties_({"owner": "you"})


def test_tags_are_limited_per_run() -> None:
    used = ev.RunLimits(ev.Limits(tags=1))
    assert used.tag("a", None) is None  # Azure keeps a valueless tag as None
    assert used.tag("a", 5) == "5"
    with pytest.raises(ev.LimitExceeded):
        used.tag("b", "x")


def test_limits_can_be_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_LIMIT_TAGS", "7")
    assert ev.Limits.from_env().tags == 7


def test_children_are_descendants_by_id() -> None:
    child = ev.child_id("run_1", 3)
    assert ev.is_descendant(child, "run_1") and ev.is_descendant(ev.child_id(child, 1), "run_1")
    assert not ev.is_descendant("run_10", "run_1")
    assert not ev.is_descendant("other", "run_1")


@pytest.mark.parametrize(
    ("kind", "points", "expected"),
    [
        ("scalar", [(0, "", 0.5)], 0.5),
        ("scalar", [(1, "", 2), (0, "", 1)], [1, 2]),
        ("list", [(0, "", 7)], [7]),
        ("row", [(0, "x", 1), (0, "y", 2), (1, "x", 3), (1, "y", 4)], {"x": [1, 3], "y": [2, 4]}),
        ("image", [(0, "", "images/a/1.png")], "images/a/1.png"),
    ],
)
def test_metrics_come_back_in_azures_shapes(kind: str, points: list, expected: object) -> None:
    assert shape(kind, points) == expected


def test_logging_returns_at_once_when_the_service_is_unreachable(tmp_path: Path) -> None:
    """A slow or absent service never blocks or kills training."""
    script = (
        "import time\n"
        "from runyard.core import Experiment, Run, Workspace\n"
        "from runyard.tracking.sinks import HttpSink\n"
        "from runyard.client import Client\n"
        "client = Client('http://127.0.0.1:9')\n"
        "sink = HttpSink(client, 'r1')\n"
        "run = Run(Experiment(Workspace(url='http://127.0.0.1:9'), 'e'), 'r1', _sink=sink)\n"
        "for i in range(100000):\n"
        "    run.log('x', i)\n"
        "sink.close(timeout=1)\n"
        "print('trained on')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "trained on" in result.stdout
    assert "gave up sending" in result.stderr
