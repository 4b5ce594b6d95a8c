"""A build's log: each line of the installer's output goes into the run's log as it comes
(``request.note``), and the whole is kept for the run file ``logs/environment_build.log``.
Installers run here under the build's deadline: past it, or once the run is canceled,
their process group is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from runyard.errors import BuildCanceled, ExecutionFailed, RunyardError

RUN_FILE = "logs/environment_build.log"
MAX_KEPT = 20_000  # lines kept for the run file (the first ones and the last ones count)
CANCEL_POLL = 0.5  # seconds between looks at the run's cancel mark while a build waits
CANCELED = "environment build stopped: the run was canceled"


def never() -> bool:
    return False


class Deadline:
    """When the build must stop: ``seconds`` after it started, or as soon as its run is
    canceled (``canceled``, the run's cancel mark, is looked at while the build waits)."""

    def __init__(self, seconds: float, canceled: Callable[[], bool] = never) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.canceled = canceled

    def left(self) -> float:
        return self.ends - time.monotonic()

    def reached(self, late: str | None = None) -> RunyardError | None:
        """Why the build must stop now, if it must (``late``: what to say past the
        deadline, instead of the build's timeout)."""
        if self.canceled():
            return BuildCanceled(CANCELED)
        if self.left() <= 0:
            return ExecutionFailed(late) if late else self.error()
        return None

    def check(self, late: str | None = None) -> None:
        reason = self.reached(late)
        if reason is not None:
            raise reason

    def error(self) -> ExecutionFailed:
        """The build ran past RUNYARD_ENV_BUILD_TIMEOUT_SECONDS and was stopped."""
        return ExecutionFailed(f"environment build timed out after {self.seconds:g} s")

    def pause(self) -> float:
        """How long a wait may block before it looks again (the cancel mark, the time)."""
        return max(min(CANCEL_POLL, self.left()), 0.0)

    @contextlib.contextmanager
    def watch(self, cut: Callable[[], None]) -> Iterator[Watch]:
        """While inside, a thread calls ``cut`` once (it kills the process, severs the
        connection...) when the build must stop; ``Watch.reason`` then says why."""
        watch = Watch(self, cut)
        watch.start()
        try:
            yield watch
        finally:
            watch.stop()


class Watch(threading.Thread):
    """Looks at a deadline every ``CANCEL_POLL`` seconds, and cuts the wait once it is
    reached (a blocking read cannot look by itself)."""

    def __init__(self, deadline: Deadline, cut: Callable[[], None]) -> None:
        super().__init__(name="build-watch", daemon=True)
        self.deadline, self.cut = deadline, cut
        self.reason: RunyardError | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.deadline.pause()):
            try:
                reason = self.deadline.reached()
            except Exception:  # the cancel mark unreadable now (a Redis outage): look again
                continue
            if reason is not None:
                self.reason = reason
                self.cut()
                return

    def stop(self) -> None:
        """No more cuts once it returns (a cut in progress is over)."""
        self._done.set()
        self.join()


class BuildLog:
    def __init__(self, note: Callable[[str], None], canceled: Callable[[], bool] = never) -> None:
        self._note = note
        self.canceled = canceled  # the run's cancel mark: its build stops when it is set
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
    ``log`` as it comes; its exit code. Past ``deadline`` (or once the run is canceled) it
    and what it started are killed and the reason is raised."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,  # the build's own folder: no project file of the worker's cwd applies
        start_new_session=True,  # its own group: a timeout kills the builds it started too
    )

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    try:
        with deadline.watch(kill) as watch:
            assert process.stdout is not None
            for raw in process.stdout:
                log.line(prefix + raw.decode("utf-8", errors="replace"))
            code = process.wait()
    finally:
        if process.poll() is None:
            kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if watch.reason is not None:
        raise watch.reason
    return code
