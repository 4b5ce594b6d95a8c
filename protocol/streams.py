"""Appending entries to Redis streams: the ingest stream and each run's live stream."""

from __future__ import annotations

from typing import Any

from protocol import keys
from protocol.messages import Entry, LogChunk, StateChanged, TrackingBatch


def append(pipe: Any, entries: list[Entry], *, ingest: bool = True) -> None:
    """Queue XADDs on a Redis pipeline (the caller executes it).

    Run entries also go to the run's capped live stream, which log followers tail.
    """
    live_runs: dict[str, int] = {}
    for entry in entries:
        fields = entry.encode()
        if ingest:
            pipe.xadd(keys.INGEST_STREAM, fields)
        if isinstance(entry, LogChunk | StateChanged | TrackingBatch):
            stream = keys.run_live(entry.run_id)
            pipe.xadd(stream, fields, maxlen=keys.LIVE_STREAM_MAXLEN, approximate=True)
            ended = isinstance(entry, StateChanged) and entry.status.is_terminal
            live_runs[stream] = keys.LIVE_AFTER_END_TTL if ended else keys.RUN_KEY_TTL
    for stream, ttl in live_runs.items():
        pipe.expire(stream, ttl)


def publish_live(client: Any, entries: list[Entry]) -> None:
    """For state changes decided by the API or the scheduler itself (already in the database)."""
    pipe = client.pipeline(transaction=False)
    append(pipe, entries, ingest=False)
    pipe.execute()


def send_to_ingest(client: Any, entries: list[Entry]) -> None:
    pipe = client.pipeline(transaction=True)
    append(pipe, entries)
    pipe.execute()
