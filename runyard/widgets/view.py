"""What a run widget shows, as plain data: the run's status and reason, the latest value of
each metric, and the points of each chart.

Built only from the API's answers (``GET /runs/{id}``, ``/metric-names``, a series'
``/history``), so the same view serves the live ipywidgets panel, the static HTML and the
text fallback. A view is immutable: each change makes a new one, so the feed thread can hand
it to the panel without sharing anything that changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Any, Callable, Dict, Generator, Mapping, Optional, Tuple

from runyard import api_paths as paths
from runyard.status import RunStatus
from runyard.tracking import events as ev

MAX_POINTS = 300  # per chart: the API keeps each bucket's extremes, so spikes still show
CHARTED_KINDS = ev.SINGLE_VALUE_KINDS  # series of single numbers; rows and tables show in the table

Point = Tuple[float, float]


@dataclass(frozen=True)
class Metric:
    """One logged series as the table lists it."""

    name: str
    kind: str
    count: int
    last: Any = None  # the latest value of a single-number series (None for rows, tables)

    @property
    def charted(self) -> bool:
        return self.kind in CHARTED_KINDS and self.count >= 2


@dataclass(frozen=True)
class RunView:
    run_id: str
    url: str  # the run's Studio page
    status: str = ""
    reason: Optional[str] = None  # why it failed, or why it waits
    display_name: Optional[str] = None
    metrics: Tuple[Metric, ...] = ()
    charts: Mapping[str, Tuple[Point, ...]] = field(default_factory=dict)
    problem: Optional[str] = None  # why the view may be out of date (the stream was lost)

    @property
    def ended(self) -> bool:
        return self.status in {s.value for s in RunStatus if s.is_terminal}

    @property
    def charted(self) -> Tuple[str, ...]:
        """The series drawn as charts, in the table's order."""
        return tuple(m.name for m in self.metrics if m.charted)

    def with_run(self, data: Mapping[str, Any]) -> RunView:
        """From ``GET /runs/{id}``."""
        status = str(data.get("status") or "")
        if status == RunStatus.QUEUED.value:
            reason = data.get("pending_reason")
        else:
            reason = data.get("failure_reason")
        return replace(
            self, status=status, reason=reason or None, display_name=data.get("display_name")
        )

    def with_names(self, data: Mapping[str, Any]) -> RunView:
        """From ``GET /runs/{id}/metric-names``; charts of series gone are dropped."""
        metrics = tuple(
            Metric(str(m["name"]), str(m["kind"]), int(m.get("count") or 0), m.get("last"))
            for m in data.get("data", [])
        )
        names = {m.name for m in metrics if m.charted}
        charts = {name: points for name, points in self.charts.items() if name in names}
        return replace(self, metrics=metrics, charts=charts)

    def with_history(self, name: str, data: Mapping[str, Any]) -> RunView:
        """From one series' ``/history``: its finite numeric points, in step order."""
        points = tuple(
            (float(x), float(y)) for x, y in data.get("points", []) if _finite(x) and _finite(y)
        )
        return replace(self, charts={**self.charts, name: points})

    def with_problem(self, problem: Optional[str]) -> RunView:
        return replace(self, problem=problem)

    def summary(self) -> dict[str, Any]:
        """``get_widget_data()``: what the widget shows, as a dict."""
        return {
            "run_id": self.run_id,
            "url": self.url,
            "status": self.status,
            "reason": self.reason,
            "metrics": {m.name: m.last for m in self.metrics if m.last is not None},
        }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Read:
    """One GET a view needs: its API path and query."""

    path: str
    params: Optional[Dict[str, Any]] = None


Reads = Generator[Read, Any, RunView]


def reads(view: RunView, names: Optional[AbstractSet[str]] = None) -> Reads:
    """The reads that bring ``view`` up to date, one at a time, each answer sent back in:
    the run, its series, and the charts of ``names`` (all of them when None) and of series
    new to the view. One plan for the blocking read (``RunDetails.read``) and the live
    feed's asynchronous one, so the two never drift apart."""
    run_id = view.run_id
    # ``fresh``: answered once every event sent before is stored, so the reads that follow
    # see what the stream announced.
    view = view.with_run((yield Read(paths.run(run_id), {"fresh": "true"})))
    view = view.with_names((yield Read(paths.run_metric_names(run_id))))
    for name in view.charted:
        if names is None or name in names or name not in view.charts:
            answer = yield Read(paths.metric_history(run_id, name), {"max_points": MAX_POINTS})
            view = view.with_history(name, answer)
    return view.with_problem(None)


def read_blocking(plan: Reads, get: Callable[[Read], Any]) -> RunView:
    """Carry out ``plan`` with ``get``, which answers one read."""
    try:
        read = next(plan)
        while True:
            read = plan.send(get(read))
    except StopIteration as done:
        return done.value
