"""Azure's run filters (``Experiment.get_runs``, ``Run.get_children``) as the query
parameters of ``GET /runs``."""

from __future__ import annotations

import json
from typing import Any, Dict

from runyard.errors import InvalidInput, NotSupported
from runyard.status import RunStatus


def run_filters(tags: Any, properties: Any, type: Any, status: Any) -> Dict[str, Any]:
    """``get_runs`` / ``get_children`` filters as REST query parameters. As Azure: ``tags``
    (and ``properties``) is a key the run must have, or a dict of keys and values."""
    if type is not None:
        raise NotSupported(
            f"filtering by run type ({type!r}) is not supported: Runyard runs have no type"
        )
    filters: Dict[str, Any] = {}
    for name, given in (("tags", tags), ("properties", properties)):
        if given is None:
            continue
        if isinstance(given, str):
            given = {given: None}
        if not isinstance(given, dict):
            raise InvalidInput(f"{name} must be a key (str) or a dict of keys and values")
        filters[name] = _json({str(k): None if v is None else str(v) for k, v in given.items()})
    if status is not None:
        filters["status"] = [str(status)] if isinstance(status, (str, RunStatus)) else status
    return filters


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
