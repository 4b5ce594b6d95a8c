"""The worker hides its own credentials from the runs that share its uid."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import ctypes
from worker.app import hide_credentials
libc = ctypes.CDLL(None)
before = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
hide_credentials()
print(before, libc.prctl(3, 0, 0, 0, 0))
"""


def test_the_worker_process_is_not_dumpable() -> None:
    """Non-dumpable: its /proc/<pid>/environ and memory are root's, not the uid's, so a
    local-executor script cannot read the worker token or the Redis password there."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "0"]
