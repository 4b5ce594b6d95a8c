"""The limits the service enforces, each defined once. Where the run-side SDK checks the
same limit before anything leaves the run, the value is the SDK's own (``runyard.tracking
.events``, ``runyard.snapshot``) and is imported from there: the SDK imports no service code.
"""

from __future__ import annotations

from dataclasses import dataclass

from runyard.snapshot import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES
from runyard.tracking import events as ev

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "MAX_ARRAY_STORED_BYTES",
    "MAX_DISPLAY_NAME",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "NAME_LENGTH",
    "TAG_KEY_LENGTH",
    "TAG_VALUE_LENGTH",
    "TrackingLimits",
]

# A run's priority on its cluster (higher starts first); moving one to the front raises it
# above the others, up to the cap.
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000

# A run's display name, and a tag given at submit: what the SDK lets a script set.
MAX_DISPLAY_NAME = ev.MAX_DISPLAY_NAME
NAME_LENGTH = ev.Limits.name_length  # of a metric name, a tag or property key
TAG_KEY_LENGTH = NAME_LENGTH
TAG_VALUE_LENGTH = ev.Limits.string_length

# A job array copies its environment, its tags and an argument list into every run it
# stores: count x (environment JSON + tags JSON + longest argument list JSON) may be at most
# this many bytes, or a 1 MiB spec times 10,000 runs would write gigabytes.
MAX_ARRAY_STORED_BYTES = 64 * 1024 * 1024

# A snapshot's defaults (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES) are runyard.snapshot's: the
# client checks a folder against them before packing it, the API again on upload.


@dataclass(frozen=True)
class TrackingLimits:
    """Per-run tracking limits enforced at ingest: how many metric names, tags and
    properties one run may have. The defaults are the SDK's own, so a script learns of a
    limit before its batch ever leaves the run."""

    metric_names: int = ev.Limits.metric_names
    tags: int = ev.Limits.tags
    properties: int = ev.Limits.properties
