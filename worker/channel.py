"""Forwarding a run's tracking channel: the JSON-lines file its SDK appends to.

The worker tails the file, numbers each line by its position (so reading it again after a
crash yields the same numbers, and the ingest recognises what it already stored), uploads
the files the script staged, and sends the events to Redis in batches, one per target run.
The run itself never holds a credential: only this forwarder talks to Redis and the API.

A ``sync`` line (``complete()``, ``tag()``, ``flush()``... in the script) is answered on the
channel's socket once everything before it is in the database: the forwarder sends a
barrier after the line's batch and waits for the ingest to pass it.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import redis

from runyard.client import Client
from runyard.errors import RunyardError
from runyard.tracking import events as ev
from scheduler import barriers
from scheduler.messages import Entry, TrackingBatch
from worker import delivery
from worker.sync_server import SyncServer

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between looks at the channel file
MAX_BATCH = 5000  # events per Redis entry
MAX_READ = 16 * 1024 * 1024  # bytes read per look, so a runaway run cannot exhaust memory


class ChannelForwarder:
    def __init__(
        self, client: redis.Redis, api: Client, run_id: str, directory: Path, attempt: int = 0
    ) -> None:
        self.redis = client
        self.api = api
        self.run_id = run_id
        self.directory = directory
        self.events_file = directory / "events.jsonl"
        # Each attempt of a run writes a fresh channel: its lines are its own producer's.
        self.producer = f"channel:{run_id}:{attempt}"
        self.offset = 0
        self.line = 0  # the next line's number (its seq)
        self.failure: str | None = None  # set when the script called run.fail()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync: SyncServer | None = None

    def listen(self) -> None:
        """Open the channel's sync socket (before the run starts: the folder is still ours)."""
        self._sync = SyncServer(self.directory, on_request=self._wake.set)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"channel-{self.run_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Forward everything the run wrote (call once its processes have exited)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.drain()
        finally:
            self.close()

    def close(self) -> None:
        """Close the sync socket (idempotent; waiting clients hear that forwarding ended)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.drain()
            except Exception:
                log.exception("forwarding the channel of %s failed; retrying", self.run_id)

    def drain(self) -> None:
        lines = self._read_new_lines()
        batches: dict[str, list[list[Any]]] = {}
        syncs: list[str] = []
        for seq, raw in lines:
            event = self._accept(raw)
            if event is None:
                continue
            target = event["r"]
            if event.get("k") == ev.FILE:
                self._upload(target, event)
                continue
            if event.get("k") == ev.SYNC:
                syncs.append(event["v"])
                continue
            batches.setdefault(target, []).append([seq, event])
        entries: list[Entry] = [
            TrackingBatch(
                run_id=target,
                origin=self.run_id,
                producer=self.producer,
                events=events[i : i + MAX_BATCH],
            )
            for target, events in batches.items()
            for i in range(0, len(events), MAX_BATCH)
        ]
        barrier = barriers.new() if syncs and self._sync is not None else None
        if barrier is not None:
            entries.append(barrier)
        if entries:
            delivery.send(self.redis, entries)
        if barrier is not None and self._sync is not None:
            stored = barriers.wait(self.redis, barrier)
            self._sync.answer(syncs, "ok" if stored else "not stored yet: the service is behind")

    def _read_new_lines(self) -> list[tuple[int, bytes]]:
        try:
            with open(self.events_file, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(MAX_READ)
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1  # a half-written last line waits for the next look
        if complete == 0 and len(data) == MAX_READ:
            # A "line" longer than anything the SDK writes: skip it whole (counted as one).
            self.offset += len(data)
            return []
        lines = []
        for raw in data[:complete].split(b"\n")[:-1]:
            lines.append((self.line, raw))
            self.line += 1
        self.offset += complete
        return lines

    def _accept(self, raw: bytes) -> dict[str, Any] | None:
        try:
            event = json.loads(raw)
        except ValueError:
            log.warning("run %s wrote a line that is not JSON; skipped", self.run_id)
            return None
        if not ev.well_formed(event):
            log.warning("run %s wrote a malformed event; skipped", self.run_id)
            return None
        if not ev.is_descendant(event["r"], self.run_id):
            log.warning("run %s tried to write to %s; refused", self.run_id, event["r"])
            return None
        if event.get("k") == ev.STATUS and event["r"] == self.run_id and event.get("v") == "Failed":
            self.failure = str(event.get("e") or "failed by script")
        return event

    def _upload(self, target: str, event: dict[str, Any]) -> None:
        staged = self.directory / "files" / str(event.get("f", ""))
        name = str(event.get("n", ""))
        if staged.parent != self.directory / "files":
            log.warning("run %s: staged file for %r is not in its folder", self.run_id, name)
            return
        try:
            delivery.upload(self.api, target, name, staged)
        except (RunyardError, OSError) as exc:  # missing, a link, a bad name
            log.warning("run %s: could not store %r: %s", self.run_id, name, exc)
            return
        staged.unlink(missing_ok=True)
