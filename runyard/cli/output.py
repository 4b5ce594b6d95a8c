"""Printing for people (tables) and for scripts (``--json``), and the one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output keeps whole lines (ids must stay copyable); a terminal gets its own width.
console = Console(width=None if sys.stdout.isatty() else 4096)
errors = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None
) -> None:
    grid = Table(title=title, show_edge=False, header_style="bold")
    for _, header in columns:
        grid.add_column(header)
    for row in rows:
        grid.add_row(*(cell(row.get(key)) for key, _ in columns))
    console.print(grid)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    return str(value)


def fail(message: str) -> None:
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
