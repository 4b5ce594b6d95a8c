"""A run's own words (its display name, tags, failure reason) reach the terminal as text:
no escape sequence in them can recolour the screen, retitle the window or rewrite lines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.stub_api import Stream, StubApi, run_cli, serving, sse

# Clear the screen, retitle the window, then a C1 CSI (0x9b) and a bell.
HOSTILE = "evil\x1b[2J\x1b]0;owned\x07name\x9b31m\x07"
SEEN = "evil[2J]0;ownedname31m"


def hostile_run(status: str = "Failed") -> dict[str, Any]:
    return {
        "id": "r1",
        "display_name": HOSTILE,
        "experiment": "e",
        "cluster": "cpu",
        "status": status,
        "failure_reason": f"script said {HOSTILE}\nand more",
        "exit_code": 1,
        "tags": {"note": HOSTILE},
    }


def control_characters(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]


@pytest.mark.parametrize(
    "args",
    [("show", "r1"), ("runs",), ("wait", "r1")],
    ids=["show", "runs", "wait"],
)
def test_a_runs_own_words_reach_the_terminal_without_control_characters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    api = StubApi(
        {
            "/api/v1/runs/r1": [hostile_run()],
            "/api/v1/runs": [{"data": [hostile_run()]}],
            "/api/v1/runs/r1/events": [Stream([sse("status", {"status": "Failed"})])],
        }
    )
    with serving(api) as url:
        _, out, err = run_cli(url, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert control_characters(out + err) == []
    assert SEEN in out + err


def test_the_final_line_keeps_the_reason_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = StubApi(
        {
            "/api/v1/runs/r1": [hostile_run()],
            "/api/v1/runs/r1/events": [Stream([sse("status", {"status": "Failed"})])],
        }
    )
    with serving(api) as url:
        code, _, err = run_cli(url, "wait", "r1", monkeypatch=monkeypatch, capsys=capsys)
    assert (code, err) == (8, f"run r1 Failed: script said {SEEN} and more\n")
