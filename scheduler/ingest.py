"""The ingest consumer: Redis stream entries from workers and the API into the database.

A consumer group reads the ingest stream; a batch is written in one transaction and only
then acknowledged, so a crash replays it. Replays are harmless: log chunks are unique per
(run, seq) and reporting a status a run already has changes nothing. Entries left pending
by a consumer that died are reclaimed after ``min_idle``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import redis
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from protocol import barriers, keys
from protocol.environment_used import check_environment_used
from protocol.limits import TrackingLimits
from protocol.messages import (
    Barrier,
    Entry,
    LogChunk,
    MessageError,
    StateChanged,
    TrackingBatch,
    Wake,
    decode,
)
from protocol.replies import as_text
from runyard.errors import IllegalTransition, RunNotFound
from runyard.status import UNSUCCESSFUL, WAITING, RunStatus
from store.db import insert_ignoring, session_scope
from store.lifecycle import end_children, transition
from store.models import Run, RunLog
from store.runs import record_environment_used
from store.tracking import collector
from store.tracking.writes import apply_batch

log = logging.getLogger(__name__)

RawEntry = tuple[str, dict[Any, Any]]


@dataclass
class Applied:
    """What a batch changed that the scheduler must react to."""

    clusters: set[str] = field(default_factory=set)
    wake_all: bool = False
    barriers: list[str] = field(default_factory=list)  # waiters to release after the commit


class Ingest:
    def __init__(
        self,
        engine: Any,
        client: redis.Redis,
        consumer: str,
        batch: int = 500,
        limits: TrackingLimits | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or TrackingLimits()
        self.redis = client
        self.consumer = consumer
        self.batch = batch
        # After a database outage, this consumer's pending entries go first, so a run's
        # terminal state can never be applied before the log lines that preceded it.
        self.backlog = False

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(keys.INGEST_STREAM, keys.INGEST_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, block_ms: int) -> list[RawEntry]:
        if self.backlog:
            pending = self._read("0", None)
            if pending:
                return pending
            self.backlog = False
        return self._read(">", block_ms)

    def _read(self, start: str, block_ms: int | None) -> list[RawEntry]:
        try:
            response = self.redis.xreadgroup(
                keys.INGEST_GROUP,
                self.consumer,
                {keys.INGEST_STREAM: start},
                count=self.batch,
                block=block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        return [(as_text(i), f) for _, entries in response or [] for i, f in entries]

    def reclaim(self, min_idle_ms: int) -> list[RawEntry]:
        """Take over entries another consumer read but never acknowledged."""
        _, claimed, *_ = self.redis.xautoclaim(
            keys.INGEST_STREAM,
            keys.INGEST_GROUP,
            self.consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=self.batch,
        )
        return [(as_text(i), f) for i, f in claimed if f]

    def take_over(self) -> None:
        """At start: entries an earlier consumer read but never acknowledged (it was killed)
        are older than anything still undelivered, so apply them first and every run's
        points and log lines keep their order. (One scheduler runs at a time.)"""
        while True:
            entries = self.reclaim(0)
            if not entries:
                return
            self.process(entries)

    def trim(self) -> None:
        """Drop entries every consumer has acknowledged, so the stream does not grow forever."""
        summary = self.redis.xpending(keys.INGEST_STREAM, keys.INGEST_GROUP)
        if summary and summary.get("pending"):
            oldest = as_text(summary["min"])
        else:
            groups = self.redis.xinfo_groups(keys.INGEST_STREAM)
            delivered = [
                g["last-delivered-id"] for g in groups if as_text(g["name"]) == keys.INGEST_GROUP
            ]
            if not delivered:
                return
            oldest = as_text(delivered[0])
        self.redis.xtrim(keys.INGEST_STREAM, minid=oldest)

    def process(self, raw: list[RawEntry]) -> Applied:
        """Apply and acknowledge a batch; on a database outage leave it pending for a retry."""
        applied = Applied()
        if not raw:
            return applied
        entries: list[tuple[str, Entry]] = []
        with collector.held_off():
            for entry_id, fields in raw:
                try:
                    entries.append((entry_id, decode(fields)))
                except MessageError as exc:
                    log.warning("dropping ingest entry %s: %s", entry_id, exc)
        try:
            with session_scope(self.engine) as session, collector.held_off():
                for entry in joined(entries):
                    self._apply(session, entry, applied)
        except OperationalError:
            log.exception("database unavailable; %d entries stay pending", len(raw))
            self.backlog = True
            return Applied()
        except Exception:
            # One bad entry must not block the stream: apply them one by one, drop the bad.
            applied = self._apply_one_by_one(entries)
        self.redis.xack(keys.INGEST_STREAM, keys.INGEST_GROUP, *[i for i, _ in raw])
        if applied.barriers:
            barriers.release(self.redis, applied.barriers)
        return applied

    def _apply_one_by_one(self, entries: list[tuple[str, Entry]]) -> Applied:
        applied = Applied()
        for entry_id, entry in entries:
            try:
                with session_scope(self.engine) as session:
                    self._apply(session, entry, applied)
            except OperationalError:
                raise
            except Exception as exc:
                log.warning("dropping ingest entry %s (%s): %s", entry_id, entry.type, exc)
        return applied

    def _apply(self, session: Session, entry: Entry, applied: Applied) -> None:
        if isinstance(entry, LogChunk):
            insert_log(session, entry)
        elif isinstance(entry, StateChanged):
            apply_state(session, entry, applied)
        elif isinstance(entry, TrackingBatch):
            apply_batch(session, entry, self.limits)
        elif isinstance(entry, Barrier):
            applied.barriers.append(entry.waiter)
        elif isinstance(entry, Wake):
            if entry.cluster:
                applied.clusters.add(entry.cluster)
            else:
                applied.wake_all = True


def joined(entries: list[tuple[str, Entry]]) -> list[Entry]:
    """The batch's entries with each run's tracking batches joined into one per producer,
    so a batch of hundreds of small entries costs a few queries per run, not per entry.

    A batch is joined into an earlier one of the same (run, origin, producer) only while
    nothing else about that run tree came between them (another producer's batch, a state
    report): every run's events keep their order, and those of different runs never
    depended on each other. Log chunks, wakes and barriers (released after the commit)
    order nothing here. A redelivered batch joined to its first delivery is skipped like
    one applied after it (``store.tracking.writes._not_yet_stored``)."""
    out: list[Entry] = []
    made: list[tuple[int, list[TrackingBatch]]] = []  # (its slot in out, its parts)
    open_: dict[str, list[TrackingBatch]] = {}  # by origin: the group still taking parts
    for _, entry in entries:
        if isinstance(entry, TrackingBatch):
            parts = open_.get(entry.origin)
            if parts is not None and (parts[0].run_id, parts[0].producer) == (
                entry.run_id,
                entry.producer,
            ):
                parts.append(entry)
                continue
            open_[entry.origin] = parts = [entry]
            made.append((len(out), parts))
        elif isinstance(entry, StateChanged):
            for origin in [o for o, p in open_.items() if entry.run_id in (o, p[0].run_id)]:
                del open_[origin]
        out.append(entry)
    for slot, parts in made:
        if len(parts) > 1:
            first = parts[0]
            out[slot] = TrackingBatch(
                run_id=first.run_id,
                origin=first.origin,
                producer=first.producer,
                events=[pair for part in parts for pair in part.events],
                # Checked and in order only if every part is and they follow each other
                # (a redelivery joined to its first delivery is not in order).
                checked=all(part.checked for part in parts)
                and all(
                    a.events[-1][0] < b.events[0][0]
                    for a, b in pairwise(parts)
                    if a.events and b.events
                ),
            )
    return out


def insert_log(session: Session, chunk: LogChunk) -> None:
    statement = (
        insert_ignoring(session, RunLog)
        .values(run_id=chunk.run_id, seq=chunk.seq, text=chunk.text)
        .on_conflict_do_nothing(index_elements=["run_id", "seq"])
    )
    session.execute(statement)


def apply_state(session: Session, entry: StateChanged, applied: Applied) -> None:
    values: dict[str, Any] = {}
    if entry.worker_id:
        values["worker_id"] = entry.worker_id
    if entry.exit_code is not None:
        values["exit_code"] = entry.exit_code
    if entry.reason and entry.status in UNSUCCESSFUL:
        values["failure_reason"] = entry.reason
    current = session.get(Run, entry.run_id)
    if current is not None and entry.attempt and stale_attempt(current, entry.attempt):
        log.info("ignoring report for %s: attempt %d was superseded", entry.run_id, entry.attempt)
        return
    try:
        # transition() checks before it writes, so a refused report leaves nothing behind.
        run = transition(session, entry.run_id, entry.status, at=entry.at, **values)
    except (IllegalTransition, RunNotFound) as exc:
        log.info("ignoring report for %s: %s", entry.run_id, exc)
        return
    if entry.status == RunStatus.STARTING and run.status == RunStatus.STARTING:
        # Only once the run has started with it: a report the lifecycle refused (the run
        # ended, or went on without this worker) says nothing of what the run ran with. A
        # later attempt's report replaces this one; a requeue clears it (lifecycle.requeue).
        environment = environment_reported(entry)
        if environment is not None:
            record_environment_used(session, entry.run_id, environment)
    if run.status.is_terminal:
        end_children(session, run.id, run.status)
        if run.cluster:
            applied.clusters.add(run.cluster)


def stale_attempt(run: Run, attempt: int) -> bool:
    """A report of an attempt the run is no longer on: a later one was handed out, or the
    run went back to its queue (requeued after its node was lost, or after its worker
    vanished before starting it) and no attempt is handed out now. A late report of the
    lost attempt (its worker cut off, not dead) must never move the waiting run."""
    return attempt < run.attempt or (run.status in WAITING and run.dispatched_at is None)


def environment_reported(entry: StateChanged) -> dict[str, Any] | None:
    """The environment the report carries, checked whole: a malformed one is left out (and
    said so in the log), the state it came with still applies."""
    if entry.environment is None:
        return None
    try:
        return check_environment_used(entry.environment)
    except MessageError as exc:
        log.warning("dropping the environment reported for %s: %s", entry.run_id, exc)
        return None
