"""Versioned, immutable messages shared by the API, the scheduler and the workers.

Stream entries travel through Redis as ``{"v": "1", "type": ..., "data": <json>}``; the task
payload travels through Celery as a JSON dict. Decoding checks the version and the fields and
raises ``MessageError`` rather than letting a malformed entry reach the database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from protocol.environments import Executor
from protocol.replies import as_text
from runyard.errors import MessageError
from runyard.status import RunStatus

VERSION = "1"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Entry:
    """Base of the stream entries; subclasses set ``type``."""

    type: ClassVar[str] = ""

    def encode(self) -> dict[str, str]:
        # Shallow, not dataclasses.asdict: a tracking batch holds thousands of event dicts
        # and asdict would deep-copy every one of them.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"v": VERSION, "type": self.type, "data": json.dumps(data, default=_json_default)}


@dataclass(frozen=True)
class StateChanged(Entry):
    """A worker reports that a run reached a status."""

    type: ClassVar[str] = "state"
    run_id: str
    status: RunStatus
    at: datetime = field(default_factory=now)
    worker_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    attempt: int = 0  # which hand-over of the run this report is about (0: not known)
    # With STARTING: the environment the run got (``protocol.build_specs.EnvironmentUsed``).
    environment: dict[str, Any] | None = None


LOG_SEQ_STRIDE = 10_000_000  # chunk numbers reserved per attempt of a run
SERVICE_PREFIX = "[runyard] "  # starts each line the service itself writes into a run's log


@dataclass(frozen=True)
class LogChunk(Entry):
    """Lines of a run's output; ``seq`` counts chunks per run so replays are not doubled
    (attempt ``n`` numbers its chunks from ``n * LOG_SEQ_STRIDE``)."""

    type: ClassVar[str] = "log"
    run_id: str
    seq: int
    text: str


@dataclass(frozen=True)
class TrackingBatch(Entry):
    """What a run logged (metrics, tags, properties, children, statuses) for one run.

    ``origin`` is the run whose channel (or interactive client) produced it: the ingest
    accepts only ``run_id`` equal to it or one of its descendants. ``events`` are
    ``[seq, event]`` pairs numbered by ``producer``, so a replay is recognised.
    """

    type: ClassVar[str] = "track"
    run_id: str
    origin: str
    producer: str
    events: list[list[Any]]


@dataclass(frozen=True)
class Wake(Entry):
    """Asks the scheduler to look at a cluster now (a run was submitted, a worker came up)."""

    type: ClassVar[str] = "wake"
    cluster: str | None = None


@dataclass(frozen=True)
class Barrier(Entry):
    """Asks the ingest to say when every entry before it is in the database. A write that
    Azure makes synchronous returns only then (see ``protocol.barriers``)."""

    type: ClassVar[str] = "barrier"
    waiter: str


ENTRY_TYPES: dict[str, type[Entry]] = {
    t.type: t for t in (StateChanged, LogChunk, TrackingBatch, Wake, Barrier)
}


def decode(raw: dict[Any, Any]) -> Entry:
    fields_ = {as_text(k): as_text(v) for k, v in raw.items()}
    if fields_.get("v") != VERSION:
        raise MessageError(f"unsupported entry version {fields_.get('v')!r}")
    cls = ENTRY_TYPES.get(fields_.get("type", ""))
    if cls is None:
        raise MessageError(f"unknown entry type {fields_.get('type')!r}")
    try:
        data = json.loads(fields_["data"])
        return _build(cls, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed {cls.type} entry: {exc}") from exc


@dataclass(frozen=True)
class RunAssignment:
    """The Celery task payload: everything a worker needs to execute one run."""

    run_id: str
    cluster: str
    experiment: str
    script: str
    arguments: list[str]
    environment: dict[str, Any]
    snapshot_digest: str | None
    executor: str = Executor.LOCAL
    cancel_grace_seconds: float = 10.0
    container: dict[str, Any] = field(default_factory=dict)  # the cluster's ContainerPolicy
    attempt: int = 1
    requeue_on_node_loss: bool = False
    max_run_duration_seconds: float | None = None  # the worker ends it (Failed) past this
    budgets: dict[str, Any] = field(default_factory=dict)  # the cluster's (RunBudgets)
    build_only: bool = False  # build the run's environment, then end: no script runs
    v: str = VERSION

    def encode(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, payload: dict[str, Any]) -> RunAssignment:
        if payload.get("v") != VERSION:
            raise MessageError(f"unsupported task payload version {payload.get('v')!r}")
        try:
            return _build(cls, payload)
        except (TypeError, ValueError) as exc:
            raise MessageError(f"malformed task payload: {exc}") from exc


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    values = dict(data)
    if "status" in values:
        values["status"] = RunStatus(values["status"])
    if isinstance(values.get("at"), str):
        values["at"] = datetime.fromisoformat(values["at"])
    return cls(**values)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
