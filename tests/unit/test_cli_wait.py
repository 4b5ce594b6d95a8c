"""``runyard wait`` and ``--follow`` against a service whose live stream closes before the
run ends (an API restart, a proxy's idle timeout): the CLI reads on until the run has ended,
and never takes a run it lost sight of for a failed one."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runyard.cli import main as cli
from runyard.cli import outcome


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def status(value: str) -> bytes:
    return sse("status", {"run_id": "r1", "status": value})


def log(seq: int, text: str) -> bytes:
    return sse("log", {"seq": seq, "text": text})


@dataclass
class Stream:
    """One opening of ``GET /runs/r1/events``: what it sends, and whether it then breaks
    off mid-response (a dropped connection) rather than ending cleanly."""

    body: list[bytes]
    abrupt: bool = False


@dataclass
class Service:
    """What the stub service answers, in order: each opening of the stream takes the next
    Stream; each read of the run the next status (the last one repeats). None: HTTP 503."""

    streams: list[Stream]
    statuses: list[str | None]
    opened: list[str] = field(default_factory=list)

    def next_status(self) -> str | None:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked responses, so a stream can break off mid-way
    service: Service

    def do_GET(self) -> None:  # the stdlib names it so
        path = self.path.split("?")[0]
        if path == "/api/v1/runs/r1/events":
            self.service.opened.append(self.path)
            self._stream(self.service.streams.pop(0))
        elif path == "/api/v1/runs/r1":
            value = self.service.next_status()
            if value is None:
                self._json(503, {"error": "ServiceUnavailable", "detail": "restarting"})
            else:
                self._json(200, {"id": "r1", "status": value, "exit_code": 0})
        else:
            self._json(404, {"error": "NotFound", "detail": self.path})

    def _json(self, code: int, data: dict[str, Any]) -> None:
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
        if not stream.abrupt:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(service: Service) -> str:
        handler = type("ScriptedHandler", (Handler,), {"service": service})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def runyard(
    url: str, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``runyard ARGS`` as typed, in this process: its exit code, stdout and stderr."""
    monkeypatch.setenv("RUNYARD_URL", url)
    monkeypatch.setenv("RUNYARD_TOKEN", "ryt_x")
    monkeypatch.setattr(sys, "argv", ["runyard", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_wait_goes_on_past_a_stream_closed_while_the_run_runs_and_exits_0_if_it_completed(
    serve: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = Service(
        [Stream([status("Running")]), Stream([status("Running"), status("Completed")])],
        ["Running", "Completed"],  # read after each close: still running, then ended
    )
    code, _, err = runyard(serve(service), "wait", "r1", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, err.strip()) == (0, "run r1 Completed")
    assert len(service.opened) == 2


@pytest.mark.parametrize("abrupt", [False, True], ids=["closed", "dropped"])
def test_follow_opens_the_stream_again_and_prints_each_line_once(
    serve: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    abrupt: bool,
) -> None:
    service = Service(
        [
            Stream([status("Running"), log(0, "one\n")], abrupt=abrupt),
            Stream([status("Running"), log(0, "one\n"), log(1, "two\n"), status("Completed")]),
        ],
        ["Running", "Running", "Completed"],  # logs --follow reads the run before following
    )
    code, out, err = runyard(
        serve(service), "logs", "r1", "--follow", monkeypatch=monkeypatch, capsys=capsys
    )
    assert (code, out) == (0, "one\ntwo\n"), err
    assert err.strip().splitlines()[-1] == "run r1 Completed"
    assert len(service.opened) == 2


def test_wait_that_loses_the_service_says_the_run_is_still_running_and_exits_6(
    serve: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(outcome, "PATIENCE", 0)  # give up at the first unanswered read
    service = Service([Stream([status("Running")])], [None])
    code, _, err = runyard(serve(service), "wait", "r1", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 6
    assert err.strip().splitlines()[-1] == (
        "error: lost the stream; run r1 is still Running (restarting)"
    )
