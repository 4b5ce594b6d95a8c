"""How a worker stops: in bounded time, and never leaving a run it holds unrecorded.

The first SIGTERM (or Ctrl+C) asks for a stop: every run in hand gets its cluster's cancel
grace period (SIGTERM, grace, SIGKILL), is recorded (Failed "service stopped", or left to
be requeued where the cluster asks for it) and the worker exits. Celery's own warm shutdown
would wait for the runs to end by themselves, which is unbounded; here it only waits for
runs that are being stopped.

Past the largest grace period of the runs in hand plus ``STOP_MARGIN`` (something is stuck:
an API that does not answer an upload, an image pull), or on a second signal (or SIGQUIT),
the worker stops at once: it kills every run it holds (process groups, containers), records
them and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The worker exits by (largest grace of its runs) + STOP_MARGIN + FORCE_SECONDS at most, which
# keeps it inside the "grace + 10 s" that `runyard up` and operators are promised.
STOP_MARGIN = 6.0
FORCE_SECONDS = 2.0  # what stopping at once may take (kill, record) before the process exits
EXIT_FORCED = 1  # exit code of a worker that had to stop at once


class WorkerStop:
    """The worker-wide stop: an event runs check, and the runs it must answer for."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[float, Any]] = {}  # run id -> (grace seconds, its handle)
        self._forcing = threading.Lock()
        self.on_force: Callable[[list[Any]], None] = lambda _runs: None

    def is_set(self) -> bool:
        return self.requested.is_set()

    # --- the runs in hand -------------------------------------------------------------------

    def hold(self, run_id: str, grace: float, handle: Any) -> None:
        with self._lock:
            self._runs[run_id] = (grace, handle)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def held(self) -> list[Any]:
        with self._lock:
            return [handle for _, handle in self._runs.values()]

    def deadline_in(self) -> float:
        """Seconds from now the stop may take: the longest grace period in hand, plus margin."""
        with self._lock:
            grace = max((g for g, _ in self._runs.values()), default=0.0)
        return grace + STOP_MARGIN

    # --- stopping ---------------------------------------------------------------------------

    def begin(self) -> bool:
        """Ask for the stop; True the first time. Past its deadline the stop is forced."""
        if self.requested.is_set():
            return False
        self.requested.set()
        allowed = self.deadline_in()
        log.info(
            "stopping: %d run(s) get their grace period; exiting within %.0f s",
            len(self.held()),
            allowed,
        )
        threading.Thread(
            target=self._force_at, args=(time.monotonic() + allowed,), name="stop", daemon=True
        ).start()
        return True

    def _force_at(self, deadline: float) -> None:
        time.sleep(max(deadline - time.monotonic(), 0))
        self.force("the stop took longer than its deadline")

    def force(self, why: str) -> None:
        """Kill and record every run in hand, then exit the process (never returns)."""
        if not self._forcing.acquire(blocking=False):
            return  # already under way (the signal handler and the deadline may meet)
        self.requested.set()
        runs = self.held()
        log.warning("stopping at once (%s): %d run(s) killed", why, len(runs))
        # Killing and recording talk to the engine and Redis: bounded, whatever they do.
        worker = threading.Thread(target=self.on_force, args=(runs,), name="force", daemon=True)
        worker.start()
        worker.join(FORCE_SECONDS)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_FORCED)
