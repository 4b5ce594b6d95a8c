"""What a worker tells the scheduler about one run, over Redis streams.

Log output is batched into numbered chunks (one XADD per flush, not per line); states are
sent after every log chunk before them, so the database always has a run's last lines
before its terminal state. A Redis outage is waited out with retries: nothing is dropped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from protocol.budgets import RunBudgets, over
from protocol.messages import LOG_SEQ_STRIDE, SERVICE_PREFIX, LogChunk, StateChanged
from runyard.status import RunStatus
from worker import delivery

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds between log flushes while output keeps coming
MAX_CHUNK = 64 * 1024  # characters per log chunk


class RunReporter:
    def __init__(
        self,
        client: redis.Redis,
        run_id: str,
        worker_id: str,
        attempt: int = 0,
        budgets: RunBudgets | None = None,
    ) -> None:
        self.redis = client
        self.run_id = run_id
        self.worker_id = worker_id
        self.attempt = attempt
        self.budgets = budgets or RunBudgets()
        self.gpus = 0  # of the slot the run holds, once it has one (every report says so)
        self.written = 0  # bytes of output taken in (the log_bytes budget)
        self.over_budget: str | None = None  # why the run must be stopped
        # A requeued run logs again from its next attempt: its chunks number on from there.
        self._seq = attempt * LOG_SEQ_STRIDE
        self._buffer: list[str] = []
        self._buffered = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # --- logs -------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Output of the run; past its log budget the rest is dropped, with one line."""
        if self.over_budget is not None:
            return
        self.written += len(text.encode("utf-8", errors="replace"))
        if self.written > self.budgets.log_bytes:
            self.over_budget = over(self.budgets, "log_bytes")
            text = f"\n{SERVICE_PREFIX}stopping the run: it is {self.over_budget}\n"
        with self._lock:
            self._buffer.append(text)
            self._buffered += len(text)
            full = self._buffered >= MAX_CHUNK
        if full:
            self.flush()

    def note(self, line: str) -> None:
        """A line of the service's own in the run's log (Preparing, the image, the
        interpreter, why it failed), marked so it reads as Runyard's, not the script's.
        Sent at once, not with the next flush: such lines are few, and most say what the
        worker does now, before any flusher runs (pulling an image may take minutes, and a
        worker that dies during the pull has said so)."""
        self.write(f"{SERVICE_PREFIX}{line}\n")
        self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                text, self._buffer, self._buffered = "".join(self._buffer), [], 0
            chunks = []
            for start in range(0, len(text), MAX_CHUNK):
                chunks.append(
                    LogChunk(
                        run_id=self.run_id, seq=self._seq, text=text[start : start + MAX_CHUNK]
                    )
                )
                self._seq += 1
            if chunks:
                delivery.send(self.redis, list(chunks))

    def start_flushing(self) -> None:
        def loop() -> None:
            while not self._stop.wait(FLUSH_INTERVAL):
                self.flush()

        self._flusher = threading.Thread(target=loop, name=f"flush-{self.run_id}", daemon=True)
        self._flusher.start()

    def stop_flushing(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()

    # --- states -----------------------------------------------------------------------------

    def state(
        self,
        status: RunStatus,
        *,
        exit_code: int | None = None,
        reason: str | None = None,
        environment: dict[str, Any] | None = None,
        preempted: bool = False,
    ) -> None:
        """Flush pending output, then report the state (in that order, on one stream).
        ``environment``: with STARTING, what the run got (``worker.environments.used``);
        ``preempted``: with QUEUED, the attempt was preempted (``worker.preemption``)."""
        self.flush()
        with self._send_lock:
            delivery.send(
                self.redis,
                [
                    StateChanged(
                        run_id=self.run_id,
                        status=status,
                        worker_id=self.worker_id,
                        exit_code=exit_code,
                        reason=reason,
                        attempt=self.attempt,
                        environment=environment,
                        preempted=preempted,
                        gpus=self.gpus,
                    )
                ],
            )
