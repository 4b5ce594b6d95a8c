"""A build's log: each line of the installer's output goes into the run's log as it comes
(``request.note``), and the whole is kept for the run file ``logs/environment_build.log``.
Installers run here under the build's deadline: past it, their process group is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from runyard.errors import ExecutionFailed

RUN_FILE = "logs/environment_build.log"
MAX_KEPT = 20_000  # lines kept for the run file (the first ones and the last ones count)


class Deadline:
    """When the build must be over, started when it is."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise self.error()

    def error(self) -> ExecutionFailed:
        """The build ran past RUNYARD_ENV_BUILD_TIMEOUT_SECONDS and was stopped."""
        return ExecutionFailed(f"environment build timed out after {self.seconds:g} s")


class BuildLog:
    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        """One line, into the run's log now and into the kept log."""
        text = text.rstrip("\r\n")
        if len(self.lines) < MAX_KEPT:
            self.lines.append(text)
        else:
            self.lines[-1] = text
        self._note(text)

    def tail(self, count: int, since: int = 0) -> list[str]:
        """The last ``count`` non-blank lines, of those from line ``since`` on."""
        return [line for line in self.lines[since:] if line.strip()][-count:]

    def content(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def run_logged(
    command: list[str],
    log: BuildLog,
    deadline: Deadline,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    prefix: str = "",
) -> int:
    """Run ``command`` (a list: no shell ever sees a requirement), each output line into
    ``log`` as it comes; its exit code. Past ``deadline`` it and what it started are
    killed and the deadline's error is raised."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,  # the build's own folder: no project file of the worker's cwd applies
        start_new_session=True,  # its own group: a timeout kills the builds it started too
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(max(deadline.left(), 0.0), kill)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            log.line(prefix + raw.decode("utf-8", errors="replace"))
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if killed.is_set():
        raise deadline.error()
    return code
