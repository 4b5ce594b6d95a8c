"""Figures every benchmark prints, and the one row shape `python -m bench` tabulates."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


def quantile(values: list[float], q: float) -> float:
    """The value below which a fraction ``q`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


@dataclass(frozen=True)
class Figure:
    """One measured figure: what `figures()` in every bench module returns a list of.

    ``anchor``/``anchor_value`` name what the figure is compared with where one exists
    (MLflow, bare ``docker run``, the previous figure), in the same unit. ``goal`` is the
    issue's target as text (e.g. ``"<= 20"``, ``">= 100000"``); ``note`` says what limits
    or qualifies the figure (sizes, load). ``value`` is NaN when it could not be measured.
    """

    name: str
    value: float
    unit: str
    anchor: str | None = None
    anchor_value: float | None = None
    goal: str | None = None
    note: str = ""

    def met(self) -> bool | None:
        """Whether ``value`` meets ``goal`` ("<= x" / ">= x"); None without a goal."""
        if not self.goal or math.isnan(self.value):
            return None if not self.goal else False
        op, _, number = self.goal.partition(" ")
        limit = float(number.replace(",", "").replace("_", ""))
        return self.value <= limit if op == "<=" else self.value >= limit


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Iterable[Figure]) -> str:
    """One plain-text table of figures, the anchor and the goal beside each."""
    head = ("figure", "value", "unit", "anchor", "goal", "met", "note")
    lines = []
    for r in rows:
        anchor = f"{r.anchor} {_number(r.anchor_value)}".strip() if r.anchor else ""
        met = {True: "yes", False: "NO", None: ""}[r.met()]
        lines.append((r.name, _number(r.value), r.unit, anchor, r.goal or "", met, r.note))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]  # fmt: skip
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        cells = [c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in
                 enumerate(zip(line, widths, strict=True))]  # fmt: skip
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
