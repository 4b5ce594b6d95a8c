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

import orjson

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
    # With QUEUED: the attempt stopped because it was preempted; the run waits again.
    preempted: bool = False
    gpus: int = 0  # the GPUs the attempt's slot holds (usage accounting's GPU-seconds)


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

    ``body`` (API side only): the client's ``EventBatch`` JSON exactly as it arrived, once
    the API has checked it and every event targets ``run_id`` (the usual case). It goes on
    the stream as it is, so the API neither builds the pairs nor encodes thousands of
    events again; ``decode`` numbers them from ``first_seq``. Such a batch was checked
    event by event by the API (``checked``), so the ingest does not walk it again.
    """

    type: ClassVar[str] = "track"
    run_id: str
    origin: str
    producer: str
    events: list[list[Any]]
    body: bytes | None = field(default=None, repr=False, compare=False)
    checked: bool = field(default=False, repr=False, compare=False)

    def encode(self) -> dict[str, Any]:
        if self.body is not None:
            return {
                "v": VERSION,
                "type": self.type,
                "run_id": self.run_id,
                "origin": self.origin,
                "body": self.body,
            }
        data = {
            "run_id": self.run_id,
            "origin": self.origin,
            "producer": self.producer,
            "events": self.events,
        }
        return {"v": VERSION, "type": self.type, "data": dumps(data)}

    @classmethod
    def from_body(cls, fields_: dict[str, Any]) -> TrackingBatch:
        """The batch a ``body`` entry carries, its events numbered as the API numbered them
        before (``first_seq + offset``)."""
        batch = loads(fields_["body"])
        if not isinstance(batch, dict):
            raise ValueError("the body is not an event batch")
        producer, first, events = batch["producer"], batch["first_seq"], batch["events"]
        if type(producer) is not str or type(first) is not int or type(events) is not list:
            raise ValueError("the body is not an event batch")
        return cls(
            run_id=as_text(fields_["run_id"]),
            origin=as_text(fields_["origin"]),
            producer=producer,
            events=[[first + offset, e] for offset, e in enumerate(events)],
            checked=True,
        )


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
    # Field values stay bytes: a tracking body of thousands of events is parsed from its
    # bytes once, never decoded to a str first.
    fields_ = {as_text(k): v for k, v in raw.items()}
    version, kind = as_text(fields_.get("v", "")), as_text(fields_.get("type", ""))
    if version != VERSION:
        raise MessageError(f"unsupported entry version {version!r}")
    cls = ENTRY_TYPES.get(kind)
    if cls is None:
        raise MessageError(f"unknown entry type {kind!r}")
    try:
        if cls is TrackingBatch and "body" in fields_:
            return TrackingBatch.from_body(fields_)
        return _build(cls, loads(fields_["data"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed {cls.type} entry: {exc}") from exc


def loads(data: str | bytes) -> Any:
    """JSON as ``json.loads`` reads it, at orjson's speed. orjson refuses what Python's
    reader takes (NaN and infinities, integers past 64 bits, lone surrogates): those
    entries are read again by ``json``, so every value comes back exactly as logged."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(data: Any) -> str:
    """JSON for the stream. Python's encoder, because orjson writes NaN and infinities as
    null and a metric must read back as logged; a body the API passes through (see
    ``TrackingBatch.body``) skips encoding altogether."""
    return json.dumps(data, default=_json_default, separators=(",", ":"))


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
    # Teams: the team charged, and whether the attempt before this one was preempted (the
    # worker puts that attempt's outputs/ and checkpoints/ back before the script starts).
    team: str | None = None
    previous_attempt_preempted: bool = False
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
