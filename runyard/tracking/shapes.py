"""The shapes ``Run.get_metrics()`` returns, as Azure ML returns them.

A name logged once is its value; logged repeatedly, or with ``log_list``, the list in
order; ``log_row`` / ``log_table`` give a dict of column -> list; images give their file
reference (a list when there are several).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Dict, List, Sequence, Tuple

from runyard.tracking import events as ev

_BY_INDEX = itemgetter(0, 1)  # (idx, column)

# (kind, idx, column, value) for one metric, in any order.
Point = Tuple[str, int, str, Any]


def shape(kind: str, points: Sequence[Tuple[int, str, Any]]) -> Any:
    """``points`` are (idx, column, value) of one metric."""
    ordered = sorted(points, key=_BY_INDEX)  # C-level key: reads may hold millions
    if kind in ev.COLUMN_KINDS:
        columns: Dict[str, List[Any]] = {}
        for _, column, value in ordered:
            columns.setdefault(column, []).append(value)
        return columns
    values = [value for _, _, value in ordered]
    if kind in (ev.KIND_NAMES[ev.SCALAR], ev.KIND_NAMES[ev.IMAGE]) and len(values) == 1:
        return values[0]
    return values
