"""A run as Azure's readers return it: ``get_details()`` and ``get_metrics()`` shapes built
from the API's answers (``GET /runs/{id}``, ``GET /runs/{id}/metrics``)."""

from __future__ import annotations

from typing import Any, Dict

from runyard.tracking.shapes import shape


def details_from(data: Dict[str, Any]) -> Dict[str, Any]:
    """The Azure ``get_details()`` shape, with Runyard's queue fields added, and
    ``environmentUsed``: what the run ran with (name, version, content hash, resolved
    packages), beside ``runDefinition.environment``, what it asked for."""
    details: Dict[str, Any] = {
        "runId": data["id"],
        "experiment": data.get("experiment"),
        "target": data.get("cluster"),
        "status": data["status"],
        "submittedTimeUtc": data.get("created_at"),
        "startTimeUtc": data.get("running_at") or data.get("starting_at"),
        "endTimeUtc": data.get("ended_at"),
        "runDefinition": {
            "script": data.get("script"),
            "arguments": data.get("arguments") or [],
            "environment": data.get("environment") or {},
            "priority": data.get("priority", 0),
        },
        "properties": {"snapshotId": data.get("snapshot_digest")},
        "exitCode": data.get("exit_code"),
        "worker": data.get("worker_id"),
        "environmentUsed": data.get("environment_used"),
    }
    if data.get("position") is not None or data.get("pending_reason"):
        details["queuePosition"] = data.get("position")
        details["pendingReason"] = data.get("pending_reason")
    if data.get("failure_reason"):
        details["error"] = {"message": data["failure_reason"]}
    return details


def metrics_from(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """``{name: {"kind": k, "points": [[idx, column, value], ...]}}`` to Azure's shapes."""
    return {name: shape(m["kind"], [tuple(p) for p in m["points"]]) for name, m in metrics.items()}
