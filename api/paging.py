"""The query parameters every list endpoint takes: a page size and the cursor of the page
to read (``store.paging``); ``offset`` stays for clients written before cursors."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from store.paging import DEFAULT_PAGE, MAX_PAGE

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size (at most {MAX_PAGE})")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=4096,
        description="next_cursor of the previous page (opaque); none for the first page",
    ),
]
Offset = Annotated[
    int,
    Query(ge=0, description="Rows to skip (older clients; ignored with a cursor). Prefer cursor"),
]

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Cursor", "Limit", "Offset"]
