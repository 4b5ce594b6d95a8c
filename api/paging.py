"""The query parameters every list endpoint takes: a page size and the cursor of the page
to read (``store.paging``); ``offset`` stays for clients written before cursors."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Query

from runyard.errors import InvalidInput
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

KeyFilter = Annotated[
    str | None,
    Query(
        description='JSON object of keys and values, e.g. {"quality": "great", "reviewed": '
        "null}: each key must be set, to the value unless it is null"
    ),
]


def key_filter(name: str, raw: str | None) -> dict[str, str | None] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    ):
        raise InvalidInput(
            f"{name} must be a JSON object of string keys and string (or null) values",
            field=name,
        )
    return value


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Cursor", "KeyFilter", "Limit", "Offset", "key_filter"]
