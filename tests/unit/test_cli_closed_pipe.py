"""A reader that stops early (``| head -1``) ends the CLI quietly, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_output_into_a_closed_pipe_exits_1_saying_nothing() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the CLI starts: its first write meets EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runyard", "submit", "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1  # click's answer to EPIPE, as the README's table says
    assert done.stderr == ""
