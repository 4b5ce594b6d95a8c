"""Appending entries to Redis streams: the ingest shards, the wake stream, each run's live
stream.

The ingest is sharded by run id: every entry about a run goes to the shard its id hashes
to (what a run logged, to the shard of the run whose channel sent it: ``ordered_by``), and
one scheduler at a time consumes a shard, so a run's entries are applied in the order they
were sent. Wakes go to the stream only the leader reads. A barrier is copied to every shard
behind the entries sent before it (in one MULTI), and its waiter is released once every
shard has passed its copy (``protocol.barriers``): a barrier promises "everything sent
before me", whatever runs that was about.
"""

from __future__ import annotations

import functools
import os
import zlib
from typing import Any

from protocol import keys
from protocol.messages import Barrier, Entry, LogChunk, StateChanged, TrackingBatch, Wake
from runyard.errors import ConfigurationError

SHARDS_VARIABLE = "RUNYARD_INGEST_SHARDS"  # Settings.ingest_shards reads the same


@functools.cache
def ingest_shards() -> int:
    """The shard count producers use: ``RUNYARD_INGEST_SHARDS`` (``Settings.ingest_shards``)."""
    raw = os.environ.get(SHARDS_VARIABLE, "")
    count = int(raw) if raw.strip() else keys.DEFAULT_INGEST_SHARDS
    if not 1 <= count <= 1024:
        raise ValueError(f"{SHARDS_VARIABLE} must be between 1 and 1024, not {count}")
    return count


def agree_on_shards(client: Any, shards: int = 0) -> None:
    """Refuse to start with another shard count than the rest of this Runyard: a run's
    entries would go to shards nobody reads, and every barrier would wait for copies that
    never pass. The first process to start records its count in Redis."""
    shards = shards or ingest_shards()
    client.set(keys.INGEST_SHARD_COUNT, shards, nx=True)
    recorded = int(client.get(keys.INGEST_SHARD_COUNT))
    if recorded != shards:
        raise ConfigurationError(
            f"{SHARDS_VARIABLE} is {shards} here but this Runyard's ingest has {recorded} "
            "shards: give the API, every scheduler and every worker the same value (to "
            "change it, stop them all, let the ingest drain, then delete the Redis key "
            f"{keys.INGEST_SHARD_COUNT})"
        )


def shard_of(run_id: str, shards: int) -> int:
    """The shard a run's entries go to: CRC-32 of its id (stable across processes and
    versions, unlike ``hash()``), modulo the shard count."""
    return zlib.crc32(run_id.encode()) % shards


def ordered_by(entry: LogChunk | StateChanged | TrackingBatch) -> str:
    """The run whose shard an entry goes to. What a run logged goes with the run whose
    channel sent it (``origin``): a parent's batch that creates a child and the batches
    with the child's own events after it are split per run by the API, and must still be
    applied in the order they were sent, so they share the parent's shard. A submitted
    run's reports and logs are its own, and its channel is the origin of what it logs."""
    return entry.origin if isinstance(entry, TrackingBatch) else entry.run_id


def append(pipe: Any, entries: list[Entry], *, ingest: bool = True, shards: int = 0) -> None:
    """Queue XADDs on a Redis pipeline (the caller executes it; a MULTI one keeps a
    barrier's copies behind the entries before it on every shard).

    Run entries also go to the run's capped live stream, which log followers tail.
    """
    shards = shards or ingest_shards()
    live_runs: dict[str, int] = {}
    for entry in entries:
        fields = entry.encode()
        if ingest:
            if isinstance(entry, Barrier):
                _barrier(pipe, entry, fields, shards)
            elif isinstance(entry, Wake):
                pipe.xadd(keys.INGEST_WAKE_STREAM, fields)
            elif isinstance(entry, LogChunk | StateChanged | TrackingBatch):
                pipe.xadd(keys.ingest_shard(shard_of(ordered_by(entry), shards)), fields)
            else:  # an entry type about no run: shard 0 keeps it in order with itself
                pipe.xadd(keys.ingest_shard(0), fields)
        if isinstance(entry, LogChunk | StateChanged | TrackingBatch):
            stream = keys.run_live(entry.run_id)
            pipe.xadd(stream, fields, maxlen=keys.LIVE_STREAM_MAXLEN, approximate=True)
            ended = isinstance(entry, StateChanged) and entry.status.is_terminal
            live_runs[stream] = keys.LIVE_AFTER_END_TTL if ended else keys.RUN_KEY_TTL
    for stream, ttl in live_runs.items():
        pipe.expire(stream, ttl)


def _barrier(pipe: Any, barrier: Barrier, fields: dict[str, str], shards: int) -> None:
    """A copy on every shard; the count first, so no copy is passed before it is known."""
    pipe.set(keys.barrier_parts(barrier.waiter), shards, ex=keys.BARRIER_TTL)
    for shard in range(shards):
        pipe.xadd(keys.ingest_shard(shard), fields)


def publish_live(client: Any, entries: list[Entry]) -> None:
    """For state changes decided by the API or the scheduler itself (already in the database)."""
    pipe = client.pipeline(transaction=False)
    append(pipe, entries, ingest=False)
    pipe.execute()


def send_to_ingest(client: Any, entries: list[Entry], *, shards: int = 0) -> None:
    """Append entries to the ingest in one MULTI (``shards``: the count, 0 for
    ``RUNYARD_INGEST_SHARDS``)."""
    pipe = client.pipeline(transaction=True)
    append(pipe, entries, shards=shards)
    pipe.execute()
