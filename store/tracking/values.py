"""How a logged value is stored so it reads back exactly as logged.

Numbers go in a double column and strings in a text column; ``vtype`` records the Python
type that was logged (f float, i int, b bool, s str). What a double cannot hold exactly
goes in the text column too: ints beyond 2**53, and NaN and infinities (SQLite would store
NaN as NULL).
"""

from __future__ import annotations

import math
from typing import Any


def encode_value(value: Any) -> tuple[float | None, str | None, str]:
    """``(value, text, vtype)`` columns of a logged value."""
    if isinstance(value, bool):
        return float(value), None, "b"
    if isinstance(value, int):
        return float(value), (str(value) if abs(value) > 2**53 else None), "i"
    if isinstance(value, float):
        if not math.isfinite(value):  # SQLite would store NaN as NULL: keep it as text
            return None, repr(value), "f"
        return value, None, "f"
    return None, str(value), "s"


def decode_value(value: float | None, text: str | None, vtype: str) -> Any:
    """The logged value back from its ``(value, text, vtype)`` columns."""
    if vtype == "s":
        return text
    if vtype == "b":
        return bool(value)
    if vtype == "i":
        return int(text) if text is not None else (None if value is None else int(value))
    if value is None and text is not None:
        return float(text)  # nan, inf, -inf
    return value
