"""``runyard wait`` and ``--follow`` against a service whose live stream closes before the
run ends (an API restart, a proxy's idle timeout): the CLI reads on until the run has ended,
and never takes a run it lost sight of for a failed one."""

from __future__ import annotations

from typing import Any

import pytest

from runyard.cli import outcome
from tests.support.stub_api import Stream, StubApi, run_cli, serving, sse

EVENTS = "/api/v1/runs/r1/events"
RUN = "/api/v1/runs/r1"


def status(value: str) -> bytes:
    return sse("status", {"run_id": "r1", "status": value})


def log(seq: int, text: str) -> bytes:
    return sse("log", {"seq": seq, "text": text})


def run(value: str) -> dict[str, Any]:
    return {"id": "r1", "status": value, "exit_code": 0}


def test_wait_goes_on_past_a_stream_closed_while_the_run_runs_and_exits_0_if_it_completed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = StubApi(
        {
            EVENTS: [Stream([status("Running")]), Stream([status("Running"), status("Completed")])],
            RUN: [run("Running"), run("Completed")],  # read after each close
        }
    )
    with serving(api) as url:
        code, _, err = run_cli(url, "wait", "r1", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, err.strip()) == (0, "run r1 Completed")
    assert api.opened(EVENTS) == 2


@pytest.mark.parametrize("abrupt", [False, True], ids=["closed", "dropped"])
def test_follow_opens_the_stream_again_and_prints_each_line_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], abrupt: bool
) -> None:
    api = StubApi(
        {
            EVENTS: [
                Stream([status("Running"), log(0, "one\n")], abrupt=abrupt),
                Stream([status("Running"), log(0, "one\n"), log(1, "two\n"), status("Completed")]),
            ],
            # logs --follow reads the run first, then once after each close
            RUN: [run("Running"), run("Running"), run("Completed")],
        }
    )
    with serving(api) as url:
        code, out, err = run_cli(
            url, "logs", "r1", "--follow", monkeypatch=monkeypatch, capsys=capsys
        )
    assert (code, out) == (0, "one\ntwo\n"), err
    assert err.strip().splitlines()[-1] == "run r1 Completed"
    assert api.opened(EVENTS) == 2


def test_wait_that_loses_the_service_says_the_run_is_still_running_and_exits_6(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(outcome, "PATIENCE", 0)  # give up at the first unanswered read
    api = StubApi({EVENTS: [Stream([status("Running")])], RUN: [None]})
    with serving(api) as url:
        code, _, err = run_cli(url, "wait", "r1", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 6
    assert err.strip().splitlines()[-1] == (
        "error: lost the stream; run r1 is still Running (restarting)"
    )
