"""The run lifecycle: one enum shared by the database, the REST API, the worker and the SDK.

Names are Azure Machine Learning's, so scripts and dashboards that compare status strings
keep working unchanged.
"""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    NOT_RESPONDING = "NotResponding"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    def can_become(self, new: RunStatus) -> bool:
        return new in TRANSITIONS[self]


# Every status is in exactly one of these three sets. Being a ``str`` enum, a status's
# value string ("Queued", as JSON and the REST API carry it) is found in them too.

# Not yet on a node: waiting for a slot, or handed to the broker and not yet claimed.
WAITING = frozenset({RunStatus.NOT_STARTED, RunStatus.QUEUED})

TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
# Ended without completing: these carry the reason why (``failure_reason``).
UNSUCCESSFUL = frozenset({RunStatus.FAILED, RunStatus.CANCELED})

ACTIVE = frozenset(
    {
        RunStatus.PREPARING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.FINALIZING,
        RunStatus.CANCEL_REQUESTED,
        RunStatus.NOT_RESPONDING,
    }
)

_ON_A_NODE = ACTIVE - {RunStatus.NOT_RESPONDING}

# Every allowed move, next to the enum. Anything else is refused.
# A run may skip intermediate states (a fast script can end before Running is reported),
# but never goes backwards, except NotResponding recovering when its worker is heard again,
# and a run back to Queued: its node lost (from NotResponding), or its attempt preempted
# (from Preparing, Starting or Running: only the ingest makes that move, on its worker's
# report, ``store.lifecycle.requeue_preempted``).
_PREEMPTED = frozenset({RunStatus.QUEUED})
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.NOT_STARTED: frozenset({RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELED}),
    RunStatus.QUEUED: frozenset(
        {
            RunStatus.PREPARING,
            RunStatus.STARTING,
            RunStatus.RUNNING,
            RunStatus.CANCEL_REQUESTED,
            RunStatus.FAILED,
            RunStatus.CANCELED,
        }
    ),
    RunStatus.PREPARING: frozenset(
        {
            RunStatus.STARTING,
            RunStatus.RUNNING,
            RunStatus.FINALIZING,
            RunStatus.CANCEL_REQUESTED,
            RunStatus.NOT_RESPONDING,
        }
        | TERMINAL
        | _PREEMPTED
    ),
    RunStatus.STARTING: frozenset(
        {
            RunStatus.RUNNING,
            RunStatus.FINALIZING,
            RunStatus.CANCEL_REQUESTED,
            RunStatus.NOT_RESPONDING,
        }
        | TERMINAL
        | _PREEMPTED
    ),
    RunStatus.RUNNING: frozenset(
        {RunStatus.FINALIZING, RunStatus.CANCEL_REQUESTED, RunStatus.NOT_RESPONDING}
        | TERMINAL
        | _PREEMPTED
    ),
    RunStatus.FINALIZING: frozenset(
        {RunStatus.CANCEL_REQUESTED, RunStatus.NOT_RESPONDING} | TERMINAL
    ),
    RunStatus.CANCEL_REQUESTED: frozenset(
        {RunStatus.FINALIZING, RunStatus.NOT_RESPONDING} | TERMINAL
    ),
    RunStatus.NOT_RESPONDING: frozenset(_ON_A_NODE | {RunStatus.QUEUED} | TERMINAL),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
}

# States a run can come back to; their timestamp records the latest arrival (the watchdog
# measures silence from it). Every other state keeps the time it was first reached.
REENTRANT = frozenset({RunStatus.QUEUED, RunStatus.NOT_RESPONDING})

# Column on the run record that remembers when each state was reached.
TIMESTAMP_FIELD: dict[RunStatus, str] = {s: f"{s.name.lower()}_at" for s in RunStatus}
