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
import time
from collections.abc import Callable
from typing import Any

import redis

from protocol import barriers
from protocol.budgets import RunBudgets, over
from protocol.messages import Entry, TrackingBatch
from runyard.client import Client
from runyard.errors import RunyardError
from runyard.status import RunStatus
from runyard.tracking import events as ev
from worker import delivery
from worker.run_folder import RunFolder
from worker.sync_server import SyncServer

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between looks at the channel file
MAX_BATCH = 5000  # events per Redis entry
MAX_ENTRY_BYTES = 1024 * 1024  # channel bytes per Redis entry (a run's live stream holds 2,000)
MAX_LINE = 1024 * 1024  # a longer line is no event the SDK writes: dropped
MAX_READ = 16 * 1024 * 1024  # bytes read per look, so a runaway run cannot exhaust memory


class ChannelForwarder:
    def __init__(
        self,
        client: redis.Redis,
        api: Client,
        run_id: str,
        folder: RunFolder,
        attempt: int = 0,
        budgets: RunBudgets | None = None,
        note: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.redis = client
        self.api = api
        self.run_id = run_id
        self.folder = folder  # read through descriptors only (worker.run_folder)
        self.budgets = budgets or RunBudgets()
        self.note = note  # a line of the service's own in the run's log (RunReporter.note)
        # Each attempt of a run writes a fresh channel: its lines are its own producer's.
        self.producer = f"channel:{run_id}:{attempt}"
        self.offset = 0
        self.line = 0  # the next line's number (its seq)
        self.forwarded = 0  # channel bytes taken in (the tracking_bytes budget)
        self.failure: str | None = None  # set when the script called run.fail()
        self.over_budget: str | None = None  # why the run must be stopped
        rate = self.budgets.tracking_bytes_per_second
        self._allowance, self._refilled = float(rate), time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync: SyncServer | None = None

    def listen(self) -> None:
        """Open the channel's sync socket (before the run starts: the folder is still ours)."""
        assert self.folder.tracking is not None
        self._sync = SyncServer(self.folder.tracking, on_request=self._wake.set)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"channel-{self.run_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Forward everything the run wrote (call once its processes have exited), at the
        run's rate: what it wrote last is not dropped, nor let in faster."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            while self.drain():
                time.sleep(max(-self._allowance, 0.0) / self.budgets.tracking_bytes_per_second)
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
                while self.drain() and self._allowance > 0 and not self._stop.is_set():
                    pass  # a backlog within the rate: take it now
            except Exception:
                log.exception("forwarding the channel of %s failed; retrying", self.run_id)

    def drain(self) -> bool:
        """Forward the complete lines written since the last look, as far as the run's rate
        allows; True while more is waiting in the channel."""
        lines, more = self._read_new_lines()
        batches: dict[str, list[list[Any]]] = {}
        sizes: dict[str, int] = {}
        entries: list[Entry] = []
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
            batch = batches.setdefault(target, [])
            batch.append([seq, event])
            sizes[target] = sizes.get(target, 0) + len(raw)
            if len(batch) >= MAX_BATCH or sizes[target] >= MAX_ENTRY_BYTES:
                entries.append(self._entry(target, batches.pop(target)))
                sizes[target] = 0
        entries += [self._entry(target, events) for target, events in batches.items()]
        barrier = barriers.new() if syncs and self._sync is not None else None
        if barrier is not None:
            entries.append(barrier)
        if entries:
            delivery.send(self.redis, entries)
        if barrier is not None and self._sync is not None:
            stored = barriers.wait(self.redis, barrier)
            answer = "ok" if stored else "not stored yet: the service is behind"
            self._sync.answer(syncs, self.over_budget or answer)
        return more

    def _entry(self, target: str, events: list[list[Any]]) -> TrackingBatch:
        return TrackingBatch(
            run_id=target, origin=self.run_id, producer=self.producer, events=events
        )

    def _read_new_lines(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Complete lines from the channel within the rate, numbered by position; and
        whether more is waiting. Over the total budget, lines are read and dropped."""
        now = time.monotonic()
        rate = self.budgets.tracking_bytes_per_second
        self._allowance = min(self._allowance + (now - self._refilled) * rate, float(rate))
        self._refilled = now
        if self._allowance <= 0:
            return [], True  # throttled: it waits in the run's own channel file
        data = self.folder.read_channel(self.offset, MAX_READ)
        complete = data.rfind(b"\n") + 1  # a half-written last line waits for the next look
        if complete == 0 and len(data) == MAX_READ:
            # A "line" longer than anything the SDK writes: skip it whole (counted as one).
            self.offset += len(data)
            self._take(len(data), dropped=True)
            return [], True
        lines = []
        start = 0
        while start < complete and self._allowance > 0:
            end = data.index(b"\n", start) + 1
            raw = data[start : end - 1]
            dropped = len(raw) > MAX_LINE or self.over_budget is not None
            self._take(end - start, dropped)
            if len(raw) > MAX_LINE:
                log.warning("run %s wrote a line of %d bytes; skipped", self.run_id, len(raw))
            elif not dropped:
                lines.append((self.line, raw))
            self.line += 1
            start = end
        self.offset += start
        # More waits when the rate stopped us short, or the read was cut at MAX_READ (a
        # half-written last line, at the end of what the run wrote, does not count).
        return lines, start < complete or len(data) == MAX_READ

    def _take(self, size: int, dropped: bool = False) -> None:
        """Count ``size`` channel bytes against the total; against the rate only what goes
        on to Redis (what is dropped costs the service nothing)."""
        if not dropped:
            self._allowance -= size
        self.forwarded += size
        if self.forwarded > self.budgets.tracking_bytes and self.over_budget is None:
            self.over_budget = over(self.budgets, "tracking_bytes")
            self.note(f"stopping the run: it is {self.over_budget}")

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
        failed = event.get("v") == RunStatus.FAILED
        if event.get("k") == ev.STATUS and event["r"] == self.run_id and failed:
            self.failure = str(event.get("e") or "failed by script")
        return event

    def _upload(self, target: str, event: dict[str, Any]) -> None:
        staged, name = str(event.get("f", "")), str(event.get("n", ""))
        try:
            with self.folder.staged(staged) as content:
                delivery.upload(self.api, target, name, content)
        except (RunyardError, OSError) as exc:  # missing, a link, a FIFO, over budget
            log.warning("run %s: could not store %r: %s", self.run_id, name, exc)
            self.note(f"{name} not stored: {exc}")
            return
        self.folder.remove_staged(staged)
