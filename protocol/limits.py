"""Per-run tracking limits the service enforces: how many metric names, tags and properties
one run may have. The defaults are the SDK's own (``runyard.tracking.events.Limits``), so a
script learns of a limit before its batch ever leaves the run."""

from __future__ import annotations

from dataclasses import dataclass

from runyard.tracking import events as ev


@dataclass(frozen=True)
class TrackingLimits:
    metric_names: int = ev.Limits.metric_names
    tags: int = ev.Limits.tags
    properties: int = ev.Limits.properties
