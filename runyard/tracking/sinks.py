"""Where a run's events go: a channel file the worker tails, the API, or the console.

``emit`` only appends to an in-memory buffer (a few microseconds); a background thread
writes the buffer out, and ``flush`` / ``close`` (at exit, on SIGTERM) push what is left.
``sync`` is what Azure's synchronous calls (``complete()``, ``tag()``, ``flush()``...) use:
it returns once everything emitted so far is in the database, visible to every reader. A
slow or absent service never kills training: the HTTP sink keeps retrying in the
background, and a sync that cannot be confirmed says so on stderr.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
import uuid
import weakref
from typing import IO, Any, Deque, Dict, List, Union

from runyard.errors import RefusedBatch, RetryBatch, RunyardError, ServiceUnavailable
from runyard.tracking import events as ev
from runyard.tracking.contract import CHANNEL_FILE, STAGING_DIR, SYNC_SOCKET

FLUSH_INTERVAL = 0.1  # seconds between background flushes
BATCH = 5_000  # events per write (one POST for the HTTP sink)
MAX_BUFFERED = 2_000_000  # events held in memory while the service is unreachable
# Events held while the service takes them: past this, log() waits for the flusher (a
# loop logging faster than the service stores would otherwise grow the buffer without end).
MAX_PENDING = 50_000
SYNC_TIMEOUT = 120.0  # how long a synchronous write waits for the service to confirm


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
        self._room = threading.Event()  # set each time a batch left the buffer
        self._flowing = True  # the last write went through (False while the service is away)
        self._closed = False
        self._pid = os.getpid()  # a forked child inherits the sink but not its flusher
        self._thread = threading.Thread(target=self._loop, name="runyard-flush", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _after_fork_in_child(self) -> None:
        """A forked child inherits this sink without its flusher thread and possibly with
        the lock held by a thread that no longer exists: give it fresh ones. The events
        already buffered belong to the parent, which sends them; the child drops its copy
        so nothing is stored twice."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._room = threading.Event()
        self._buffer.clear()
        self._pid = os.getpid()
        if self._closed:
            return
        self._thread = threading.Thread(target=self._loop, name="runyard-flush", daemon=True)
        self._thread.start()

    def emit(self, event: Dict[str, Any]) -> None:
        self._buffer.append(event)
        if len(self._buffer) >= MAX_PENDING:
            self._wait_for_room()

    def buffered(self) -> int:
        """Events emitted and not yet written out of this process."""
        return len(self._buffer)

    def _wait_for_room(self) -> None:
        """Backpressure: while the service takes what is sent, a full buffer makes the
        logging call wait for the flusher, so memory stays bounded however long the run
        logs. While the service is away nothing waits (training goes on; the oldest events
        are dropped past MAX_BUFFERED)."""
        if threading.current_thread() is self._thread:
            return
        while len(self._buffer) >= MAX_PENDING and self._flowing and not self._closed:
            if self._pid != os.getpid() or not self._thread.is_alive():
                return  # nobody would ever make room: never wait on a flusher that is gone
            self._room.clear()
            self._wake.set()
            self._room.wait(0.05)

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
        """Push everything buffered out of this process (without waiting for storage)."""
        with self._lock:
            self._write_out(wait=False, strict=False)

    def sync(self, strict: bool = False, timeout: float = SYNC_TIMEOUT) -> bool:
        """Return once everything emitted so far is stored and visible to every reader.

        An unreachable service is retried for ``timeout`` seconds, then reported on stderr
        (False). With ``strict`` a batch the service refuses raises its error: the caller
        asked for exactly that write (``add_properties`` changing a property)."""
        if self._closed and not self._buffer:
            return True  # closing confirmed everything; the run has ended
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._lock:
                    self._write_out(wait=True, strict=strict)
                return True
            except RefusedBatch as exc:  # the service will never take it (the run ended)
                warn(f"could not confirm that what was logged is stored: {exc}")
                return False
            except RunyardError as exc:
                if not isinstance(exc, RetryBatch):
                    raise  # what a strict sync asked to store was refused
                problem: Exception = exc
            except Exception as exc:
                problem = exc
            if time.monotonic() > deadline:
                warn(f"could not confirm that what was logged is stored: {problem}")
                return False
            time.sleep(0.5)

    def _write_out(self, wait: bool, strict: bool) -> None:
        """Write the buffer in batches; with ``wait`` the last write returns only once the
        service has stored it and everything before it (an empty one if need be)."""
        while True:
            batch = []
            while self._buffer and len(batch) < BATCH:
                batch.append(self._buffer.popleft())
            last = not self._buffer
            if not batch and not (wait and last):
                return
            try:
                self.write(batch, wait and last)
                self._flowing = True
                self._room.set()
            except RefusedBatch as exc:
                if strict:
                    raise exc.error from None
                if not batch:
                    raise
                warn(f"dropped {len(batch)} event(s) the service refused: {exc}")
                if wait and last:
                    self.write([], True)  # still wait for everything sent before
            except Exception:
                self._buffer.extendleft(reversed(batch))
                self._flowing = False
                raise
            if last:
                return

    def write(self, events: List[Dict[str, Any]], wait: bool = False) -> None:
        """Send ``events``; with ``wait``, return once they are stored."""
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


_LIVE: "weakref.WeakSet[Sink]" = weakref.WeakSet()


def _reset_sinks_in_child() -> None:
    for sink in list(_LIVE):
        sink._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_sinks_in_child)


class ChannelSink(Sink):
    """Inside a submitted run: append JSON lines to the file the worker tails.

    The run never holds service credentials; the worker forwards what appears here. Files
    are copied next to it and referenced by the event. A sync appends a ``sync`` line and
    asks the worker, over the channel folder's socket, to answer once everything up to
    that line is stored.
    """

    def __init__(self, directory: str, run_id: str = "") -> None:
        self.directory = directory
        self.run_id = run_id
        self.files = os.path.join(directory, STAGING_DIR)
        os.makedirs(self.files, exist_ok=True)
        # O_APPEND: lines from several processes of one run never interleave mid-line.
        self._fd = os.open(
            os.path.join(directory, CHANNEL_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self._confirmable = True  # False once the worker turned out not to answer syncs
        super().__init__()

    def write(self, events: List[Dict[str, Any]], wait: bool = False) -> None:
        nonce = secrets.token_hex(16) if wait and self._confirmable else None
        lines = [json.dumps(e, separators=(",", ":")) + "\n" for e in events]
        if nonce is not None:
            sync = {"r": self.run_id, "k": ev.SYNC, "v": nonce}
            lines.append(json.dumps(sync, separators=(",", ":")) + "\n")
        view = memoryview("".join(lines).encode())
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if nonce is not None:
            self._confirm(nonce)

    def _confirm(self, nonce: str) -> None:
        """Wait for the worker's answer to our sync line. Never raises into the script."""
        try:
            answer = _ask_socket(self.directory, SYNC_SOCKET, nonce, SYNC_TIMEOUT)
        except (FileNotFoundError, ConnectionRefusedError):
            self._confirmable = False  # a worker that does not confirm: say so once
            warn("this worker does not confirm writes; they are stored shortly after")
            return
        except OSError as exc:
            warn(f"could not confirm that what was logged is stored: {exc}")
            return
        if answer != "ok":
            warn(f"could not confirm that what was logged is stored: {answer}")

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        staged = f"{uuid.uuid4().hex}"
        target = os.path.join(self.files, staged)
        if isinstance(source, str):
            shutil.copyfile(source, target)
        else:
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        self.emit({"r": run_id, "k": ev.FILE, "n": name, "f": staged, "t": time.time()})

    def close(self, timeout: float = 10.0) -> None:
        super().close(timeout)
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _ask_socket(directory: str, name: str, line: str, timeout: float) -> str:
    """Send one line to the Unix socket ``directory/name`` and read one line back. The
    folder is reached through a descriptor, so a long path never meets the 108-byte limit
    of socket addresses."""
    folder = os.open(directory, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
    try:
        address = f"/proc/self/fd/{folder}/{name}"
        if not os.path.isdir(f"/proc/self/fd/{folder}"):  # not Linux
            address = os.path.join(directory, name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(address)
            conn.sendall(line.encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 1024:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                answer += chunk
    finally:
        os.close(folder)
    return answer.decode("utf-8", errors="replace").strip() or "no answer from the worker"


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

    def _after_fork_in_child(self) -> None:
        """A forked child is a producer of its own: numbering on from the parent's seq
        under the parent's id, its events and the parent's would pass for redeliveries of
        each other (the ingest skips what is at or below a producer's last stored seq)."""
        self.producer = uuid.uuid4().hex[:16]
        self._seq = 0
        super()._after_fork_in_child()

    def write(self, events: List[Dict[str, Any]], wait: bool = False) -> None:
        payload: Dict[str, Any] = {"producer": self.producer, "first_seq": self._seq}
        payload["events"] = events
        if wait:
            payload["wait"] = True
        try:
            self.client.send_events(self.root, payload, timeout=SYNC_TIMEOUT if wait else 30)
        except RunyardError as exc:
            if exc.http_status >= 500 or isinstance(exc, ServiceUnavailable):
                raise RetryBatch(exc.message) from exc  # the service is away: keep the batch
            self._seq += len(events)
            raise RefusedBatch(exc) from exc
        self._seq += len(events)
        if self._warned:
            warn("metrics are flowing again")
            self._warned = False

    def _write_out(self, wait: bool, strict: bool) -> None:
        try:
            super()._write_out(wait, strict)
        except RetryBatch:
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
        ev.SCALAR: "scalar metric",
        ev.LIST: "list metric",
        ev.ROW: "row metric",
        ev.TABLE: "table metric",
        ev.IMAGE: "image",
        ev.TAG: "tag",
        ev.PROPERTY: "properties",
        ev.FILE: "file",
        ev.CHILD: "child run",
        ev.STATUS: "status",
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

    def write(self, events: List[Dict[str, Any]], wait: bool = False) -> None:
        pass

    def sync(self, strict: bool = False, timeout: float = SYNC_TIMEOUT) -> bool:
        return True

    def store_file(self, run_id: str, name: str, source: Union[str, IO[bytes]]) -> None:
        print(f"Attempted to upload file {name}", flush=True)

    def close(self, timeout: float = 10.0) -> None:
        pass
