"""The worker's half of a synchronous write made inside a run: a Unix socket in its channel.

The SDK appends a ``sync`` line with a nonce to the channel file, connects here and sends
the nonce; the forwarder answers ``ok`` once everything up to that line is stored
(``worker.channel``). Whoever connects is the run, so it is treated as hostile: one line of
at most ``MAX_LINE`` bytes within ``LINE_TIMEOUT`` seconds, at most ``MAX_CONNECTIONS`` held
at once, and the socket is bound before the run starts and never looked up by path again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable

from runyard.tracking import events as ev
from runyard.tracking.contract import SYNC_SOCKET

log = logging.getLogger(__name__)

MAX_LINE = 65  # a nonce of at most 64 characters and its newline
LINE_TIMEOUT = 5.0  # seconds a connection has to send its line
MAX_CONNECTIONS = 64  # held at once per run; more are closed at once
REMEMBERED = 1024  # answered nonces kept for a client that connects after its answer


class SyncServer:
    def __init__(self, folder_fd: int, on_request: Callable[[], None]) -> None:
        self._listener = _bind(folder_fd)
        self._on_request = on_request
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._reading: dict[socket.socket, tuple[bytes, float]] = {}  # line so far, deadline
        self._waiting: dict[str, list[socket.socket]] = {}
        self._answered: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sync-socket", daemon=True)
        self._thread.start()

    def answer(self, nonces: Iterable[str], text: str) -> None:
        """Tell the clients waiting on these nonces (now, or when they connect)."""
        with self._lock:
            for nonce in nonces:
                self._answered[nonce] = text
                while len(self._answered) > REMEMBERED:
                    self._answered.popitem(last=False)
                for conn in self._waiting.pop(nonce, []):
                    _reply(conn, text)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        with self._lock:
            for conns in self._waiting.values():
                for conn in conns:
                    _reply(conn, "the run's worker stopped forwarding")
            self._waiting.clear()
        for conn in list(self._reading):
            conn.close()
        self._selector.close()
        self._listener.close()

    def _held(self) -> int:
        return len(self._reading) + sum(len(c) for c in self._waiting.values())

    def _serve(self) -> None:
        while not self._closed.is_set():
            for key, _ in self._selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._read(sock)
            now = time.monotonic()
            for conn, (_, deadline) in list(self._reading.items()):
                if now > deadline:
                    self._drop(conn, "no request line in time")

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            held = self._held()
        if held >= MAX_CONNECTIONS:
            _reply(conn, f"busy: {MAX_CONNECTIONS} requests are waiting already")
            return
        conn.setblocking(False)
        self._reading[conn] = (b"", time.monotonic() + LINE_TIMEOUT)
        self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        so_far, deadline = self._reading[conn]
        try:
            chunk = conn.recv(MAX_LINE)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn, None)
            return
        so_far += chunk
        if b"\n" not in so_far:
            if len(so_far) >= MAX_LINE:
                self._drop(conn, "request line too long")
            else:
                self._reading[conn] = (so_far, deadline)
            return
        self._selector.unregister(conn)
        del self._reading[conn]
        nonce = so_far.split(b"\n", 1)[0].decode("ascii", errors="replace")
        if not ev.well_formed({"r": "", "k": ev.SYNC, "v": nonce}):
            _reply(conn, "bad request")
            return
        with self._lock:
            answered = self._answered.get(nonce)
            if answered is None:
                self._waiting.setdefault(nonce, []).append(conn)
        if answered is not None:
            _reply(conn, answered)
        else:
            self._on_request()  # forward now rather than at the next look

    def _drop(self, conn: socket.socket, why: str | None) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        self._reading.pop(conn, None)
        if why:
            _reply(conn, why)
        else:
            conn.close()


def _bind(folder: int) -> socket.socket:
    """Bind ``sync.sock`` in the folder open as ``folder`` (a descriptor the worker took
    before the run started; a long path never meets the 108-byte address limit either)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(f"/proc/self/fd/{folder}/{SYNC_SOCKET}")
        os.chmod(SYNC_SOCKET, 0o666, dir_fd=folder)  # the run may be another uid
        listener.listen(MAX_CONNECTIONS)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def _reply(conn: socket.socket, text: str) -> None:
    """One short line, never blocking: a client that does not read loses its answer."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(text.encode()[:200] + b"\n")
    conn.close()
