"""A stand-in for the Runyard API in unit tests of the CLI: each path answers from a
script, so a test can make the service do what a real one does only by bad luck (a live
stream closing before the run ends, a restart between two reads) and run the CLI against it
in-process, as typed."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event as the API writes it."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class Stream:
    """One answer of an event stream: what it sends, and whether it then breaks off
    mid-event (a dropped connection) rather than ending cleanly."""

    body: list[bytes]
    abrupt: bool = False


@dataclass
class StubApi:
    """What each path (``/api/v1/...``, no query) answers, in order; the last answer
    repeats. A dict or list is sent as JSON, a Stream as an event stream, None as HTTP 503
    (the service restarting). ``asked`` records every request (path and query)."""

    answers: dict[str, list[Any]]
    asked: list[str] = field(default_factory=list)

    def next_answer(self, path: str) -> Any:
        queue = self.answers[path]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def opened(self, path: str) -> int:
        """How many times ``path`` was asked for."""
        return sum(1 for asked in self.asked if asked.split("?")[0] == path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked responses, so a stream can break off mid-way
    api: StubApi

    def do_GET(self) -> None:  # the stdlib names it so
        self.api.asked.append(self.path)
        path = self.path.split("?")[0]
        if path not in self.api.answers:
            self._json(404, {"error": "NotFound", "detail": f"no {path} here"})
            return
        answer = self.api.next_answer(path)
        if answer is None:
            self._json(503, {"error": "ServiceUnavailable", "detail": "restarting"})
        elif isinstance(answer, Stream):
            self._stream(answer)
        else:
            self._json(200, answer)

    def _json(self, code: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, stream: Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in stream.body:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        if stream.abrupt:  # a chunk cut short: the connection dropped mid-event
            self.wfile.write(b"100\r\nevent: log\ndata: {")
        else:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def serving(api: StubApi) -> Iterator[str]:
    """The stub listening on a free local port, as its base URL."""
    with serve(type("StubHandler", (_Handler,), {"api": api})) as url:
        yield url


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server answering with ``handler`` on a free local port, as its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_cli(
    url: str, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``runyard ARGS`` as typed, in this process (so a test may lower a limit first): its
    exit code, stdout and stderr."""
    from runyard.cli import context
    from runyard.cli import main as cli

    monkeypatch.setenv("RUNYARD_URL", url)
    monkeypatch.setenv("RUNYARD_TOKEN", "ryt_x")
    monkeypatch.setattr(sys, "argv", ["runyard", *args])
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        context.set_url(None)  # the URL the command was given is this process's until reset
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err
