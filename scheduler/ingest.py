"""The ingest consumer: Redis stream entries from workers and the API into the database.

A consumer group reads the ingest streams (one per shard of run ids, the wakes, and the
stream from before sharding); a batch of one stream is written in one transaction and only
then acknowledged, so a crash replays it. Replays are harmless: log chunks are unique per
(run, seq) and reporting a status a run already has changes nothing. Entries left pending
by a consumer that died are reclaimed after ``min_idle``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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
from protocol.streams import ingest_shards
from runyard.errors import IllegalTransition, RunNotFound
from runyard.status import ACTIVE, UNSUCCESSFUL, WAITING, RunStatus
from store import attempts
from store.db import insert_ignoring, session_scope
from store.lifecycle import end_children, requeue_preempted, transition
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


_FORGET_IDLE = """
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending
  for i = 1, #consumer, 2 do
    if consumer[i] == 'name' then name = consumer[i + 1] end
    if consumer[i] == 'pending' then pending = consumer[i + 1] end
  end
  if name ~= ARGV[2] and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
  end
end
return 0
"""


class Batch(list[RawEntry]):
    """Entries read from one stream (ids are only unique within it): what ``process``
    applies and acknowledges there."""

    def __init__(self, stream: str, entries: Iterable[RawEntry] = ()) -> None:
        super().__init__(entries)
        self.stream = stream


class Reads(list[RawEntry]):
    """What one read returned from several streams: ``parts``, one batch per stream, each
    in its stream's order (as a list, every entry). ``process`` applies part by part."""

    def __init__(self, parts: Iterable[Batch] = ()) -> None:
        self.parts = [part for part in parts if part]
        super().__init__(entry for part in self.parts for entry in part)

    def only(self, streams: Iterable[str]) -> Reads:
        """The parts read from these streams (the others stay pending for their holder)."""
        keep = set(streams)
        return Reads(part for part in self.parts if part.stream in keep)


def merge(results: Iterable[Applied]) -> Applied:
    """What several batches changed, as one."""
    total = Applied()
    for applied in results:
        total.clusters |= applied.clusters
        total.wake_all = total.wake_all or applied.wake_all
        total.barriers += applied.barriers
    return total


class Ingest:
    """One consumer of the ingest group on the streams it is given (``streams``; all of
    them unless the scheduler narrows it to the shards it holds)."""

    def __init__(
        self,
        engine: Any,
        client: redis.Redis,
        consumer: str,
        batch: int = 500,
        limits: TrackingLimits | None = None,
        shards: int = 0,
    ) -> None:
        self.engine = engine
        self.limits = limits or TrackingLimits()
        self.redis = client
        self.consumer = consumer
        self.batch = batch
        self.shards = shards or ingest_shards()
        self.streams: list[str] = keys.ingest_streams(self.shards)
        # After a database outage, this consumer's pending entries go first, so a run's
        # terminal state can never be applied before the log lines that preceded it.
        self.backlog = False

    def ensure_group(self) -> None:
        for stream in keys.ingest_streams(self.shards):
            try:
                self.redis.xgroup_create(stream, keys.INGEST_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_from(self, streams: list[str]) -> None:
        """Read these streams from now on (a shard taken or let go); what was read from
        the others and not applied stays pending for their new holder."""
        self.streams = list(streams)

    def read(self, block_ms: int) -> Reads:
        """New entries of this consumer's streams, blocking up to ``block_ms`` for any of
        them; after a database outage, its own pending entries first."""
        if self.backlog:
            pending = self._read("0", None)
            if pending:
                return pending
            self.backlog = False
        return self._with_strays(self._read(">", block_ms))

    def _with_strays(self, reads: Reads) -> Reads:
        """Each stream's new entries, or, where another consumer holds entries read there
        and not applied (an old holder paused between its lease check and its read took
        them after this one took the stream), every entry pending there, oldest first:
        applied after newer ones, a producer's mark would skip them as replays."""
        if not reads.parts:
            return reads
        pipe = self.redis.pipeline(transaction=False)
        for part in reads.parts:
            pipe.xpending(part.stream, keys.INGEST_GROUP)
        parts = []
        for part, summary in zip(reads.parts, pipe.execute(), strict=True):
            holders = [as_text(c["name"]) for c in (summary or {}).get("consumers") or []]
            strays = any(name != self.consumer for name in holders)
            parts.append(self._all_pending(part.stream) if strays else part)
        return Reads(parts)

    def _all_pending(self, stream: str) -> Batch:
        """Every entry read on ``stream`` and not acknowledged, whoever read it, claimed by
        this consumer in stream order."""
        entries: list[RawEntry] = []
        start = "0-0"
        while True:
            after, claimed, *_ = self.redis.xautoclaim(
                stream, keys.INGEST_GROUP, self.consumer, min_idle_time=0,
                start_id=start, count=self.batch,
            )  # fmt: skip
            entries += [(as_text(i), f) for i, f in claimed if f]
            start = as_text(after)
            if start == "0-0":
                return Batch(stream, entries)

    def _read(self, start: str, block_ms: int | None) -> Reads:
        if not self.streams:
            return Reads()
        try:
            response = self.redis.xreadgroup(
                keys.INGEST_GROUP,
                self.consumer,
                dict.fromkeys(self.streams, start),
                count=self.batch,
                block=block_ms,
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return Reads()
        return Reads(
            Batch(as_text(stream), ((as_text(i), f) for i, f in entries))
            for stream, entries in response or []
        )

    def reclaim(self, min_idle_ms: int, stream: str | None = None) -> Batch:
        """Take over entries another consumer read but never acknowledged, oldest first:
        on ``stream``, or the first of this consumer's streams that has any."""
        for name in [stream] if stream else self.streams:
            _, claimed, *_ = self.redis.xautoclaim(
                name,
                keys.INGEST_GROUP,
                self.consumer,
                min_idle_time=min_idle_ms,
                start_id="0-0",
                count=self.batch,
            )
            found = Batch(name, ((as_text(i), f) for i, f in claimed if f))
            if found:
                return found
        return Batch(stream or "")

    def take_over(self, streams: list[str] | None = None) -> None:
        """On taking streams (a shard, the wakes, the old stream): entries an earlier holder
        read but never acknowledged (it was killed, or paused and replaced) are older than
        anything still undelivered there, so apply them first and every run's points, log
        lines and reports keep their order; then forget the consumers with nothing left."""
        for stream in streams if streams is not None else self.streams:
            while True:
                entries = self.reclaim(0, stream)
                if not entries:
                    break
                self.process(entries)
                if self.backlog:
                    return  # the database is away: read("0") applies them when it is back
            self._forget_idle_consumers(stream)

    def claim_strays(self, stream: str, min_idle_ms: int) -> None:
        """On a stream this consumer holds: apply at once what another consumer read (one
        paused between its lease check and its read takes a batch after it lost the
        stream), and what this one left pending for ``min_idle_ms`` (an acknowledgement
        that never reached Redis)."""
        summary = self.redis.xpending(stream, keys.INGEST_GROUP)
        if not summary or not summary.get("pending"):
            return
        consumers = [as_text(c["name"]) for c in summary.get("consumers") or []]
        if any(name != self.consumer for name in consumers):
            self.take_over([stream])
        elif not self.backlog:  # after an outage, read("0") applies them in order
            self.process(self.reclaim(min_idle_ms, stream))

    def _forget_idle_consumers(self, stream: str) -> None:
        """Drop the other consumers with nothing pending, checked and dropped in one script:
        an old holder that wakes and reads in between keeps what it read (dropping a
        consumer drops its pending entries)."""
        self.redis.register_script(_FORGET_IDLE)(
            keys=[stream], args=[keys.INGEST_GROUP, self.consumer]
        )

    def trim(self, streams: list[str] | None = None) -> None:
        """Drop entries every consumer has acknowledged, so the streams do not grow forever."""
        for stream in streams if streams is not None else self.streams:
            summary = self.redis.xpending(stream, keys.INGEST_GROUP)
            if summary and summary.get("pending"):
                oldest = as_text(summary["min"])
            else:
                groups = self.redis.xinfo_groups(stream)
                delivered = [
                    g["last-delivered-id"]
                    for g in groups
                    if as_text(g["name"]) == keys.INGEST_GROUP
                ]
                if not delivered:
                    continue
                oldest = as_text(delivered[0])
            self.redis.xtrim(stream, minid=oldest)

    def process(self, raw: list[RawEntry]) -> Applied:
        """Apply and acknowledge a batch; on a database outage leave it pending for a retry."""
        if isinstance(raw, Reads):  # several streams' entries: each stream's on its own
            return merge(self.process(part) for part in raw.parts)
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
            try:
                applied = self._apply_one_by_one(entries)
            except OperationalError:
                # The database went away meanwhile: as above, these go first once it is
                # back (read past, the producer's mark would skip them as replays).
                log.exception("database unavailable; %d entries stay pending", len(raw))
                self.backlog = True
                return Applied()
        stream = getattr(raw, "stream", keys.INGEST_STREAM)  # a Batch says where it was read
        self.redis.xack(stream, keys.INGEST_GROUP, *[i for i, _ in raw])
        if applied.barriers:
            barriers.release(self.redis, applied.barriers, stream)
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
            # Another channel's batch for a run closes the groups of that run it is not
            # part of: what comes after it must not be joined ahead of it.
            for origin in [o for o, p in open_.items() if o != entry.origin
                           and p[0].run_id == entry.run_id]:  # fmt: skip
                del open_[origin]
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
    if entry.status == RunStatus.QUEUED:
        apply_preempted(session, entry, applied)
        return
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
    before = current.status if current is not None else None
    try:
        # transition() checks before it writes, so a refused report leaves nothing behind.
        run = transition(session, entry.run_id, entry.status, at=entry.at, **values)
    except (IllegalTransition, RunNotFound) as exc:
        log.info("ignoring report for %s: %s", entry.run_id, exc)
        return
    if run.status != before:
        record_attempt(session, run, entry)
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


def apply_preempted(session: Session, entry: StateChanged, applied: Applied) -> None:
    """A worker's only report of Queued: it stopped the run's current attempt because the
    scheduler preempted it (``store.preemption``). The run waits again for its next
    attempt, and its cluster's admission is woken. A cancel that came meanwhile wins: the
    run ends Canceled. Any other report of Queued (not preempted, of another attempt, of
    a run nobody preempted) is refused: only the scheduler requeues runs otherwise."""
    run = session.get(Run, entry.run_id)
    if run is None or not entry.preempted:
        log.info("ignoring report for %s: a worker reports Queued only as preempted", entry.run_id)
        return
    if entry.attempt != run.attempt or stale_attempt(run, entry.attempt):
        log.info("ignoring preemption of %s: attempt %d is over", run.id, entry.attempt)
        return
    requeued = None
    if run.status != RunStatus.CANCEL_REQUESTED:
        with contextlib.suppress(IllegalTransition):  # it changed meanwhile: read again
            requeued = requeue_preempted(session, run.id, entry.at)
    if requeued is None:
        run = session.get(Run, entry.run_id, populate_existing=True) or run
        if run.status == RunStatus.CANCEL_REQUESTED:  # the cancel wins: the attempt is over
            reason = "canceled by request"
            apply_state(session, replace(entry, status=RunStatus.CANCELED, reason=reason), applied)
        else:
            log.info("ignoring preemption of %s: none is asked of it (%s)", run.id, run.status)
        return
    attempts.attempt_ended(
        session, run.id, entry.attempt, entry.at, attempts.PREEMPTED, requeued.preempted_by
    )
    if requeued.cluster:
        applied.clusters.add(requeued.cluster)


# A run its worker reports in one of these holds a slot of its node.
ON_A_NODE = ACTIVE - {RunStatus.NOT_RESPONDING}
# The attempt that ended with a terminal report, by the status it reported.
_OUTCOMES = {
    RunStatus.COMPLETED: attempts.COMPLETED,
    RunStatus.FAILED: attempts.FAILED,
    RunStatus.CANCELED: attempts.CANCELED,
}


def record_attempt(session: Session, run: Run, entry: StateChanged) -> None:
    """The attempt's row follows the run its worker moved: opened by the first report that
    puts the run on a node (straight to an end, too: a script that ended before it was
    seen running held its slot all the same), closed by the report that ends it. Replays
    change nothing (``store.attempts`` is idempotent). A preempted attempt's requeue
    (``StateChanged.preempted``) closes it with ``attempts.PREEMPTED``, where the ingest
    applies it."""
    attempt = entry.attempt or run.attempt
    if run.status in ON_A_NODE or run.status.is_terminal:
        attempts.attempt_started(session, run, attempt, entry.at, gpus=entry.gpus)
    if run.status.is_terminal:
        attempts.attempt_ended(session, run.id, attempt, entry.at, _OUTCOMES[run.status])


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
