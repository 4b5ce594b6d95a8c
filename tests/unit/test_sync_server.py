"""The channel's sync socket, attacked as a run would: it answers only well-formed requests,
holds a bounded number of them, and never blocks on a client."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.tracking.sinks import SYNC_SOCKET, _ask_socket
from worker import sync_server
from worker.sync_server import MAX_CONNECTIONS, SyncServer


def serve(folder: Path, on_request=lambda: None) -> SyncServer:  # type: ignore[no-untyped-def]
    """A server on ``folder``, as the worker binds it: through the folder's descriptor."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return SyncServer(fd, on_request=on_request)
    finally:
        os.close(fd)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[SyncServer, Path, threading.Event]]:
    woken = threading.Event()
    served = serve(tmp_path, woken.set)
    try:
        yield served, tmp_path, woken
    finally:
        served.close()


def connect(folder: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(folder / SYNC_SOCKET))
    return conn


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def test_a_request_is_answered_when_its_nonce_is_confirmed(server) -> None:  # type: ignore[no-untyped-def]
    served, folder, woken = server
    conn = connect(folder)
    conn.sendall(b"abc123\n")
    assert woken.wait(5)  # the forwarder is asked to look at the channel now
    served.answer(["abc123"], "ok")
    assert read_line(conn) == b"ok\n"


def test_an_answer_given_before_the_client_asks_is_kept(server) -> None:  # type: ignore[no-untyped-def]
    served, folder, _ = server
    served.answer(["early1"], "ok")
    assert _ask_socket(str(folder), SYNC_SOCKET, "early1", 5) == "ok"


def test_a_long_folder_path_is_reached_through_a_descriptor(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)  # past the 108-byte limit of a socket address
    deep.mkdir()
    served = serve(deep)
    try:
        served.answer(["n1"], "ok")
        assert _ask_socket(str(deep), SYNC_SOCKET, "n1", 5) == "ok"
    finally:
        served.close()


def test_malformed_requests_are_refused_without_waiting(server) -> None:  # type: ignore[no-untyped-def]
    _, folder, _ = server
    for line in (b"../../etc\n", b"\n", b"x" * 10 + b"\xff\n"):
        conn = connect(folder)
        conn.sendall(line)
        assert read_line(conn) == b"bad request\n"
    conn = connect(folder)
    conn.sendall(b"y" * 500)  # no newline, ever
    assert read_line(conn) == b"request line too long\n"


def test_a_silent_client_is_dropped_after_the_line_timeout(
    server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _, folder, _ = server
    monkeypatch.setattr(sync_server, "LINE_TIMEOUT", 0.2)
    conn = connect(folder)  # accepted after the patch: its deadline is 0.2 s away
    assert read_line(conn) == b"no request line in time\n"


def test_a_flood_of_connections_is_bounded_and_the_server_goes_on(server) -> None:  # type: ignore[no-untyped-def]
    served, folder, _ = server
    held = []
    for _ in range(MAX_CONNECTIONS):
        conn = connect(folder)
        conn.sendall(b"held\n")
        held.append(conn)
    extra = connect(folder)
    assert read_line(extra) == f"busy: {MAX_CONNECTIONS} requests are waiting already\n".encode()
    served.answer(["held"], "ok")
    assert all(read_line(c) == b"ok\n" for c in held)
    conn = connect(folder)
    conn.sendall(b"after\n")
    served.answer(["after"], "ok")
    assert read_line(conn) == b"ok\n"


def test_closing_tells_the_waiting_clients(tmp_path: Path) -> None:
    waiting = threading.Event()
    served = serve(tmp_path, waiting.set)
    conn = connect(tmp_path)
    conn.sendall(b"pending\n")
    assert waiting.wait(5)
    served.close()
    assert read_line(conn) == b"the run's worker stopped forwarding\n"
