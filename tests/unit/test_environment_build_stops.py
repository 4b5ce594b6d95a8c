"""A build's waits end at its deadline or when its run is canceled: the installer's
process (and what it started) is killed, a lock wait gives up, each with its reason."""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from runyard.errors import BuildCanceled, ExecutionFailed
from worker.environments.build_log import BuildLog, Deadline, run_logged
from worker.environments.locks import host_lock

CANCELED = "environment build stopped: the run was canceled"
# Prints its pid and its child's, then waits for ever.
WAITS = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('pids', os.getpid(), child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` has died. A SIGKILL sent to a process that is not our child takes
    effect when the kernel next schedules it: on a loaded machine, a moment later."""
    stop = time.monotonic() + within
    while not _dead(pid):
        if time.monotonic() > stop:
            return False
        time.sleep(0.01)
    return True


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return status == "Z"  # a zombie of an orphan: dead, waiting for init to reap it


def test_a_canceled_run_s_installer_and_what_it_started_are_killed() -> None:
    started = threading.Event()
    pids: list[int] = []

    def note(line: str) -> None:
        if line.startswith("pids "):
            pids.extend(int(p) for p in line.split()[1:])
            started.set()

    with pytest.raises(BuildCanceled) as stopped:
        run_logged([sys.executable, "-c", WAITS], BuildLog(note), Deadline(600, started.is_set))
    assert str(stopped.value) == CANCELED
    assert len(pids) == 2 and all(gone(pid) for pid in pids)


def test_an_installer_past_the_deadline_is_killed_with_the_timeout_reason() -> None:
    with pytest.raises(ExecutionFailed) as stopped:
        run_logged([sys.executable, "-c", WAITS], BuildLog(lambda _: None), Deadline(0.5))
    assert str(stopped.value) == "environment build timed out after 0.5 s"


@pytest.mark.parametrize(
    ("deadline", "error", "reason"),
    [
        (Deadline(0.5), ExecutionFailed, "environment {} is being built by another run here, "
         "and that build did not end within 0.5 s"),
        (Deadline(600, lambda: True), BuildCanceled, CANCELED),
    ],
    ids=["deadline", "canceled"],
)  # fmt: skip
def test_a_wait_for_this_host_s_build_lock_ends(
    tmp_path: Path, deadline: Deadline, error: type[Exception], reason: str
) -> None:
    lock = tmp_path / "locks" / ("c" * 32)
    lock.parent.mkdir()
    with open(lock, "w") as building:  # another run's build holds it
        fcntl.flock(building, fcntl.LOCK_EX)
        with pytest.raises(error) as stopped, host_lock(lock, deadline):
            pass
    assert str(stopped.value) == reason.format("c" * 32)


def test_a_free_host_lock_is_taken_at_once_even_by_a_canceled_run_s_check(tmp_path: Path) -> None:
    """A lock wait checks the deadline only while it waits: a free lock is simply taken."""
    with host_lock(tmp_path / "locks" / ("d" * 32), Deadline(600)):
        assert (tmp_path / "locks" / ("d" * 32)).exists()
