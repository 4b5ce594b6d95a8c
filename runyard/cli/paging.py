"""The paging options of list commands that print every page unless asked for one
(``runyard token list``, ``runyard env list``), and the line naming the next page."""

from __future__ import annotations

from typing import Annotated, Any, Dict, Optional

import typer

from runyard.cli import output

PageLimit = Annotated[
    Optional[int],
    typer.Option("--limit", "-n", min=1, max=500, help="One page of this many (default: all)"),
]
PageCursor = Annotated[
    Optional[str], typer.Option(help="Show the page after this one (the cursor printed)")
]


def next_page_hint(page: Dict[str, Any]) -> None:
    """Say how to see the page after ``page``, if there is one."""
    if not page.get("next_cursor"):
        return
    total = f" of {page['count']}" if page.get("count") is not None else ""
    output.console.print(
        f"showing {len(page['data'])}{total}; next page: --cursor {page['next_cursor']}",
        highlight=False,
        soft_wrap=True,
    )
