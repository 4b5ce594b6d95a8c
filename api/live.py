"""A run's live events: stored log chunks, then its Redis live stream, until it ends.

One generator serves ``GET /runs/{id}/logs?follow`` (plain text) and the Server-Sent Events
of ``GET /runs/{id}/events``. Log chunks carry the worker's sequence numbers, so stored
and live chunks join without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from api.deps import Services
from protocol import keys
from protocol.messages import LogChunk, MessageError, StateChanged, TrackingBatch, decode
from protocol.replies import as_text
from runyard.errors import RateLimited
from runyard.status import TERMINAL
from runyard.tracking.events import METRIC_KINDS
from store import run_output
from store import runs as run_service
from store.models import RunLog
from store.tokens import Actor

IDLE_CHECK = 1.0  # seconds of silence after which the run's record is looked at again
STREAM_SLOTS_TTL = 3600  # a count left by a process that died heals itself after this


@dataclass(frozen=True)
class LiveEvent:
    kind: str  # "log" | "status" | "metrics"
    data: Any
    id: str = ""


def stored_logs(services: Services, run_id: str, after_seq: int = -1) -> list[RunLog]:
    with Session(services.engine) as session:
        run_service.get_run(session, run_id)
        return run_output.logs_after(session, run_id, after_seq)


def current_status(services: Services, run_id: str) -> str:
    with Session(services.engine) as session:
        return run_service.get_run(session, run_id).status.value


async def run_events(
    services: Services, run_id: str, *, logs_from_start: bool = True
) -> AsyncIterator[LiveEvent]:
    status = await asyncio.to_thread(current_status, services, run_id)
    yield LiveEvent("status", {"run_id": run_id, "status": status})
    last_seq = -1
    if logs_from_start:
        for chunk in await asyncio.to_thread(stored_logs, services, run_id):
            last_seq = chunk.seq
            yield LiveEvent("log", {"seq": chunk.seq, "text": chunk.text})
    stream = keys.run_live(run_id)
    live_from = await _stream_end(services, stream)
    position = "0" if logs_from_start else live_from
    while True:
        status = await asyncio.to_thread(current_status, services, run_id)
        if status in TERMINAL:
            # Its last lines reached the database before its end was recorded.
            for chunk in await asyncio.to_thread(stored_logs, services, run_id, last_seq):
                yield LiveEvent("log", {"seq": chunk.seq, "text": chunk.text})
            yield LiveEvent("status", {"run_id": run_id, "status": status})
            return
        response = await services.aredis.xread(
            {stream: position}, count=500, block=int(IDLE_CHECK * 1000)
        )
        for _, entries in response or []:
            for raw_id, fields in entries:
                position = as_text(raw_id)
                if _is_stored_batch(fields, position, live_from):
                    continue  # not even decoded: a batch can hold a million values
                try:
                    entry = decode(fields)
                except MessageError:
                    continue
                if isinstance(entry, LogChunk) and entry.seq > last_seq:
                    if entry.seq > last_seq + 1 and logs_from_start:
                        # Trimmed from the capped live stream: take the gap from the store.
                        for chunk in await asyncio.to_thread(
                            stored_logs, services, run_id, last_seq
                        ):
                            if chunk.seq < entry.seq:
                                yield LiveEvent("log", {"seq": chunk.seq, "text": chunk.text})
                    last_seq = entry.seq
                    yield LiveEvent("log", {"seq": entry.seq, "text": entry.text}, position)
                elif isinstance(entry, StateChanged):
                    data = {"run_id": run_id, "status": entry.status.value}
                    yield LiveEvent("status", data, position)
                    if entry.status.is_terminal:
                        return
                elif isinstance(entry, TrackingBatch):
                    data = {"run_id": entry.run_id, "events": [e for _, e in entry.events]}
                    yield LiveEvent("metrics", data, position)


def _is_stored_batch(fields: dict[Any, Any], position: str, live_from: str) -> bool:
    """Tracking batches from before the subscription are read from the history endpoints,
    not again here."""
    kind = fields.get(b"type", fields.get("type"))
    return as_text(kind) == TrackingBatch.type and not _after(position, live_from)


def _after(position: str, mark: str) -> bool:
    """Whether stream entry id ``position`` comes after ``mark`` ("ms-seq" ids)."""
    if mark == "0":
        return True
    ms, _, seq = position.partition("-")
    mark_ms, _, mark_seq = mark.partition("-")
    return (int(ms), int(seq or 0)) > (int(mark_ms), int(mark_seq or 0))


async def _stream_end(services: Services, stream: str) -> str:
    last = await services.aredis.xrevrange(stream, count=1)
    if not last:
        return "0"
    return as_text(last[0][0])


def json_safe(value: Any) -> Any:
    """Browsers' JSON has no NaN or Infinity: send those as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def names_only(batch: dict[str, Any]) -> dict[str, Any]:
    """A tracking batch as a chart needs it: which series to read again, and whether the
    run's other records (tags, properties, children, files) changed."""
    events = batch["events"]
    series = sorted({str(e["n"]) for e in events if e.get("k") in METRIC_KINDS and "n" in e})
    other = any(e.get("k") not in METRIC_KINDS for e in events)
    return {"run_id": batch["run_id"], "names": series, "other": other}


def sse_payload(event: LiveEvent) -> dict[str, str]:
    payload = {"event": event.kind, "data": json.dumps(json_safe(event.data))}
    if event.id:
        payload["id"] = event.id
    return payload


async def stream_slot(services: Services, actor: Actor) -> str:
    """Count one more live stream open with ``actor``'s token, refusing one past the
    limit (a run's own token is a token too); returns the key to release."""
    key = keys.live_streams(actor.token_id or actor.name)
    limit = services.settings.live_streams_per_token
    pipe = services.aredis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, STREAM_SLOTS_TTL)
    opened, _ = await pipe.execute()
    if opened > limit:
        await services.aredis.decr(key)
        raise RateLimited(
            f"{actor.name} has {limit} live streams open, the most one token may hold "
            "(RUNYARD_LIVE_STREAMS_PER_TOKEN); close one first"
        )
    return key


async def holding(services: Services, key: str, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``stream``, giving its slot back however it ends (finished, or the client left)."""
    try:
        async for item in stream:
            yield item
    finally:
        await services.aredis.decr(key)
