"""Where a run's events go: a channel file the worker tails, the API, or the console.

``emit`` only appends to an in-memory buffer (a few microseconds); a background thread
writes the buffer out, and ``flush`` / ``close`` (at exit, on ``complete()``, on SIGTERM)
push what is left. A slow or absent service never blocks or kills training: the HTTP sink
keeps retrying in the background and says so on stderr.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from typing import IO, Any, Deque, Dict, List, Union

from runyard.errors import RunyardError, ServiceUnavailable

FLUSH_INTERVAL = 0.1  # seconds between background flushes
BATCH = 5_000  # events per write (one POST for the HTTP sink)
MAX_BUFFERED = 2_000_000  # events held in memory while the service is unreachable


class RefusedBatch(Exception):
    """The service answered that this batch can never be accepted (a 4xx): retrying is
    pointless, and must not hold back what comes after it (complete(), say)."""


def warn(message: str) -> None:
    sys.stderr.write(f"runyard: {message}\n")
    sys.stderr.flush()


class Sink:
    """Buffers events and writes them out from a background thread."""

    def __init__(self) -> None:
        self._buffer: Deque[Dict[str, Any]] = collections.deque()
        # One writer at a time; re-entrant because the SIGTERM handler may flush on the very
        # thread that was flushing when the signal came.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="runyard-flush", daemon=True)
        self._thread.start()

    def emit(self, event: Dict[str, Any]) -> None:
        self._buffer.append(event)

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:
                warn(f"could not send metrics yet ({exc}); will retry")
                time.sleep(1.0)

    def flush(self) -> None:
        with self._lock:
            while self._buffer:
                batch = []
                while self._buffer and len(batch) < BATCH:
                    batch.append(self._buffer.popleft())
                try:
                    self.write(batch)
                except RefusedBatch as exc:
                    warn(f"dropped {len(batch)} event(s) the service refused: {exc}")
                except Exception:
                    self._buffer.extendleft(reversed(batch))
                    raise

    def write(self, events: List[Dict[str, Any]]) -> None:
        raise NotImplementedError

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is left, retrying for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.flush()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    warn(f"gave up sending {len(self._buffer)} event(s): {exc}")
                    break
                time.sleep(0.5)
        self._closed = True
        self._wake.set()


class ChannelSink(Sink):
    """Inside a submitted run: append JSON lines to the file the worker tails.

    The run never holds service credentials; the worker forwards what appears here. Files
    are copied next to it and referenced by the event.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files = os.path.join(directory, "files")
        os.makedirs(self.files, exist_ok=True)
        # O_APPEND: lines from several processes of one run never interleave mid-line.
        self._fd = os.open(
            os.path.join(directory, "events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        super().__init__()

    def write(self, events: List[Dict[str, Any]]) -> None:
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        staged = f"{uuid.uuid4().hex}"
        target = os.path.join(self.files, staged)
        if isinstance(source, str):
            shutil.copyfile(source, target)
        else:
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        self.emit({"r": run_id, "k": "file", "n": name, "f": staged, "t": time.time()})

    def close(self, timeout: float = 10.0) -> None:
        super().close(timeout)
        with contextlib.suppress(OSError):
            os.close(self._fd)


class HttpSink(Sink):
    """Interactive runs (``start_logging``) and fetched runs: batches to the API."""

    def __init__(self, client: Any, root_run_id: str) -> None:
        self.client = client
        self.root = root_run_id
        # Numbers this producer's events; with the producer id it makes replays harmless.
        self.producer = uuid.uuid4().hex[:16]
        self._seq = 0
        self._warned = False
        super().__init__()

    def write(self, events: List[Dict[str, Any]]) -> None:
        payload = {"producer": self.producer, "first_seq": self._seq, "events": events}
        try:
            self.client.json(
                "POST",
                f"/runs/{self.root}/events",
                content=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        except RunyardError as exc:
            if exc.http_status >= 500 or isinstance(exc, ServiceUnavailable):
                raise  # the service is away: keep the batch and retry
            self._seq += len(events)
            raise RefusedBatch(exc.message) from exc
        self._seq += len(events)
        if self._warned:
            warn("metrics are flowing again")
            self._warned = False

    def flush(self) -> None:
        try:
            super().flush()
        except Exception:
            if len(self._buffer) > MAX_BUFFERED:
                dropped = len(self._buffer) - MAX_BUFFERED
                for _ in range(dropped):
                    self._buffer.popleft()
                warn(f"dropped the {dropped} oldest event(s): the service is unreachable")
            if not self._warned:
                self._warned = True
            raise

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        self.flush()
        if isinstance(source, str):
            with open(source, "rb") as content:
                self.client.upload_file(run_id, name, content)
        else:
            self.client.upload_file(run_id, name, source.read())


class OfflineSink(Sink):
    """Outside Runyard (``Run.get_context()`` in a plain python session): print, like Azure.
    Nothing is buffered, so no flushing thread either."""

    def __init__(self) -> None:
        self._buffer = collections.deque()
        self._lock = threading.Lock()

    LABELS = {
        "m": "scalar metric",
        "l": "list metric",
        "w": "row metric",
        "b": "table metric",
        "i": "image",
        "tag": "tag",
        "prop": "properties",
        "file": "file",
        "child": "child run",
        "status": "status",
    }

    def emit(self, event: Dict[str, Any]) -> None:
        label = self.LABELS.get(event.get("k", ""), "event")
        name = event.get("n")
        value = event.get("v")
        print(
            f"Attempted to log {label} {name}:\n{value}"
            if name is not None
            else f"Attempted to log {label}:\n{value}",
            flush=True,
        )

    def write(self, events: List[Dict[str, Any]]) -> None:
        pass

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        print(f"Attempted to upload file {name}", flush=True)

    def close(self, timeout: float = 10.0) -> None:
        pass
