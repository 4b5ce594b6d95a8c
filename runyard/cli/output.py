"""Printing for people (tables) and for scripts (``--json``), and the one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped output keeps whole lines (ids must stay copyable); a terminal gets its own width.
console = Console(width=None if sys.stdout.isatty() else 4096)
errors = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str | None = None,
    empty: str | None = None,
) -> None:
    """Rows under their column headers; with none, the ``empty`` line (``no runs``) says
    so, rather than headers over nothing."""
    if not rows and empty:
        console.print(f"{title}: {empty}" if title else empty, highlight=False)
        return
    grid = Table(title=title, show_edge=False, header_style="bold")
    for _, header in columns:
        grid.add_column(header)
    for row in rows:
        # Text, not markup: values are users' words and may hold brackets.
        grid.add_row(*(Text(cell(row.get(key))) for key, _ in columns))
    console.print(grid)


# C0 and C1 control characters and DEL. A run's name, tags and failure reason are the
# run's own words: an ESC among them would start a terminal escape sequence (recolour the
# screen, retitle the window, rewrite what was printed), so none reaches the terminal;
# line breaks and tabs become spaces, keeping one row a line.
_CONTROL: dict[int, str | None] = {
    code: None for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
}
_CONTROL.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})


def printable(text: str) -> str:
    """``text`` without control characters: safe to print on a terminal."""
    return text.translate(_CONTROL)


def cell(value: Any) -> str:
    """One value as a person reads it: ``-`` for none, yes/no, lists and mappings inline,
    times to the second; never a control character."""
    return printable(_shown(value))


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) or "-"
    if isinstance(value, dict):  # unset entries left out: an audit detail stays short
        shown = {k: v for k, v in value.items() if v not in (None, "", [], {})}
        return ", ".join(f"{k}={_shown(v)}" for k, v in shown.items()) or "-"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    return str(value)


def fail(message: str) -> None:
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
