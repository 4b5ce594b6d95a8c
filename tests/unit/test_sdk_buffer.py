"""The SDK's buffer stays bounded however fast a loop logs: while the service takes what
is sent, ``log()`` waits for the flusher past ``MAX_PENDING``; while it is away, nothing
waits (training goes on) and nothing is lost up to ``MAX_BUFFERED``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import pytest

from runyard.errors import RetryBatch
from runyard.tracking import sinks
from runyard.tracking.sinks import HttpSink


class Slow:
    """A client whose every batch waits until the test lets it through."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = threading.Semaphore(0)

    def send_events(self, run_id: str, batch: dict, timeout: float | None = None) -> Any:
        self.gate.acquire()
        self.sent.extend(batch["events"])
        return {"accepted": len(batch["events"]), "stored": False}


class Away:
    def send_events(self, run_id: str, batch: dict, timeout: float | None = None) -> Any:
        raise RetryBatch("cannot reach Runyard")


def event(i: int) -> dict[str, Any]:
    return {"r": "run-1", "k": "m", "n": "x", "v": float(i), "t": 0.0}


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "MAX_PENDING", 50)
    monkeypatch.setattr(sinks, "BATCH", 10)


@pytest.mark.usefixtures("small")
def test_a_loop_faster_than_the_service_never_holds_more_than_max_pending() -> None:
    client = Slow()
    sink = HttpSink(client, "run-1")
    released = threading.Thread(target=lambda: [client.gate.release() for _ in range(10_000)])
    peak = 0
    try:
        released.start()
        for i in range(2_000):
            sink.emit(event(i))
            peak = max(peak, sink.buffered())
        released.join()
        sink.close()
    finally:
        for _ in range(1_000):
            client.gate.release()
    assert peak < sinks.MAX_PENDING
    assert [e["v"] for e in client.sent] == [float(i) for i in range(2_000)]  # none lost


@pytest.mark.usefixtures("small")
def test_while_the_service_is_away_logging_does_not_wait_and_keeps_what_it_logged() -> None:
    sink = HttpSink(Away(), "run-1")
    try:
        for i in range(200):  # four times MAX_PENDING: returns, not blocked on the flusher
            sink.emit(event(i))
        assert sink.buffered() + 10 >= 200  # at most the batch in flight is out of the deque
    finally:
        sink.close(timeout=0)


class Fast:
    """A client that takes every batch at once."""

    def __init__(self) -> None:
        self.sent = 0

    def send_events(self, run_id: str, batch: dict, timeout: float | None = None) -> Any:
        self.sent += len(batch["events"])
        return {"accepted": len(batch["events"]), "stored": False}


@pytest.mark.usefixtures("small")
def test_a_forked_child_logging_past_max_pending_does_not_hang() -> None:
    """The child inherits the sink but not its flusher thread: it must still log freely."""
    sink = HttpSink(Fast(), "run-1")
    try:
        pid = os.fork()
        if pid == 0:  # the child: any exception or hang must end in a non-zero exit
            code = 1
            try:
                signal.alarm(30)  # failure guard only: a hang is killed, never a pass
                for i in range(sinks.MAX_PENDING + 10):
                    sink.emit(event(i))
                sink.close(timeout=0)
                code = 0
            except BaseException as exc:  # the parent's assertion shows the exit code
                sys.stderr.write(f"child failed: {exc!r}\n")
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        sink.close(timeout=0)


class Recording:
    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def send_events(self, run_id: str, batch: dict, timeout: float | None = None) -> Any:
        self.batches.append(dict(batch))
        return {"accepted": len(batch["events"]), "stored": False}


def test_a_forked_child_numbers_its_events_as_a_producer_of_its_own() -> None:
    """The ingest skips what is at or below a producer's last stored seq: a child numbering
    on under its parent's id would have its points (or the parent's) taken for replays."""
    import json

    client = Recording()
    sink = HttpSink(client, "run-1")
    try:
        sink.emit(event(0))
        sink.flush()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: any exception or hang must end in a non-zero exit
            code = 1
            try:
                signal.alarm(30)  # failure guard only: a hang is killed, never a pass
                sink.emit(event(1))
                sink.flush()
                sent = client.batches[-1]
                os.write(write, json.dumps([sent["producer"], sent["first_seq"]]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        answer = os.read(read, 1000)
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        producer, first_seq = json.loads(answer)
        assert (producer != sink.producer, first_seq) == (True, 0)
        assert [(b["producer"], b["first_seq"]) for b in client.batches] == [(sink.producer, 0)]
    finally:
        sink.close(timeout=0)
