"""Redis replies as text. A client made with ``decode_responses`` answers str, one made
without it (the worker's, the scheduler's) answers bytes; ids, names and fields read back
are the same text either way."""

from __future__ import annotations

from typing import Any


def as_text(value: Any) -> str:
    """Bytes decoded as UTF-8; anything else through ``str()``."""
    return value.decode() if isinstance(value, bytes) else str(value)
