"""The process's own run (``Run.get_context()``) and the flush of every sink at exit.

State that belongs to the process, not to one ``Run`` object: the context run is made once
and shared by every caller (a script and the libraries it calls log to the same run), and
every sink a run logs through is flushed at interpreter exit and on SIGTERM (a cancel), so
nothing logged is lost.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import uuid
from typing import TYPE_CHECKING, Any, List, Optional

from runyard.errors import InvalidInput
from runyard.tracking import contract
from runyard.tracking.sinks import ChannelSink, OfflineSink, Sink

if TYPE_CHECKING:
    from runyard.core.run import Run

_context: Optional[Run] = None
_context_lock = threading.Lock()


def context_run(allow_offline: bool = True) -> Run:
    """The run this process executes in (made on first call), or an offline run outside
    Runyard; with ``allow_offline=False`` outside Runyard, ``InvalidInput``."""
    global _context
    with _context_lock:
        if _context is None:
            _context = _make_context(allow_offline)
        return _context


def _make_context(allow_offline: bool) -> Run:
    """From the variables the worker sets (``runyard.tracking.contract``)."""
    from runyard.core.experiment import Experiment
    from runyard.core.run import Run
    from runyard.core.workspace import Workspace

    run_id = os.environ.get(contract.RUN_ID)
    channel = os.environ.get(contract.TRACKING_DIR)
    if run_id and channel:
        workspace = Workspace(url=os.environ.get(contract.URL, ""))
        experiment = Experiment(workspace, os.environ.get(contract.EXPERIMENT, "default"))
        sink = ChannelSink(channel, run_id)
        close_at_exit(sink)
        return Run(
            experiment,
            run_id,
            _sink=sink,
            _attempt=_attempt(os.environ.get(contract.ATTEMPT)),
            _previous_attempt_preempted=os.environ.get(contract.PREVIOUS_ATTEMPT_PREEMPTED) == "1",
        )
    if not allow_offline:
        raise InvalidInput(f"not inside a Runyard run ({contract.RUN_ID} is not set)")
    return _offline_run()


def _attempt(value: Optional[str]) -> Optional[int]:
    """The attempt the worker set; None (read from the run's record) if it set none."""
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _offline_run() -> Run:
    from runyard.core.experiment import Experiment
    from runyard.core.run import Run
    from runyard.core.workspace import Workspace

    workspace = Workspace(url="", token="", workspace_name="offline")
    run = Run(Experiment(workspace, "offline"), f"OfflineRun_{uuid.uuid4()}", _sink=OfflineSink())
    return run


_sinks: List[Sink] = []


def close_at_exit(sink: Sink) -> None:
    """Flush at interpreter exit and on SIGTERM (a cancel), so nothing logged is lost."""
    if not _sinks:
        atexit.register(_close_all)
        _flush_on_sigterm()
    _sinks.append(sink)


def _close_all() -> None:
    for sink in _sinks:
        sink.close()


def _flush_on_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the script handles SIGTERM itself; atexit still flushes on a clean exit

    def handler(signum: int, frame: Any) -> None:
        _close_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
