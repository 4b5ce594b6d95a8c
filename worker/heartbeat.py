"""The worker's heartbeat: announces the worker, its clusters, its slots and its runs.

It is what tells the scheduler a node is alive, so it must keep beating while the node's
runs saturate its CPUs, and stop the moment the worker process dies. It is therefore a
thread of the worker process (it dies with it; a separate process could outlive a hung
worker and vouch for it), which does nothing but one Redis round trip per beat:

- on its own Redis connection, with socket timeouts, so no other thread's slow call and no
  half-open connection (a network that was cut, then restored) can hold a beat up;
- on a fixed schedule (monotonic clock), so a slow beat does not push every later one back;
- at a raised scheduling priority where the worker may set one (root, or CAP_SYS_NICE): the
  runs' processes, started by other threads, keep the default and yield to it under load.

The alive keys it writes live ``ttl`` (``not_responding_after``) seconds by Redis' clock;
Settings makes that at least two beats, five with the defaults, so a few late or failed
beats never turn a healthy run NotResponding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

import redis

from protocol.workers import WorkerInfo, publish_heartbeat, remove_worker

log = logging.getLogger(__name__)

# The heartbeat thread's nice value when the worker may raise it (lower is more CPU).
HEARTBEAT_NICE = -10


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        clusters: list[str],
        slots: int,
        interval: float,
        ttl: float,
        gpus: int = 0,
    ) -> None:
        self.redis = own_connection(client, timeout=max(interval, min(ttl / 2, 5.0)))
        self.worker_id = worker_id
        self.clusters = clusters
        self.slots = slots
        self.gpus = gpus
        self.interval = interval
        self.ttl = ttl
        self._runs: set[str] = set()
        self.draining = False
        self.on_drain: list[Callable[[], object]] = []  # run once when an operator drains
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat: float | None = None  # monotonic time of the last beat Redis took

    def add_run(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)
        self.beat()

    def remove_run(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)
        self.beat()

    @property
    def runs(self) -> list[str]:
        with self._lock:
            return sorted(self._runs)

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.worker_id,
            hostname=socket.gethostname(),
            clusters=self.clusters,
            slots=self.slots,
            runs=self.runs,
            draining=self.draining,
            gpus=self.gpus,
        )

    def beat(self) -> None:
        try:
            # Asked to drain, the worker is announced draining (its slots withdrawn) by this
            # same beat: Redis checks the request before it writes (``publish_heartbeat``).
            drain = publish_heartbeat(self.redis, self._info(), self.ttl)
        except Exception as exc:  # any failure of the connection: the next beat tries again
            log.warning("heartbeat failed: %s", exc)
            return
        if drain and not self.draining:
            self.draining = True
            log.info("draining: finishing %d run(s), taking no new ones", len(self.runs))
            for callback in self.on_drain:
                callback()
        now = time.monotonic()
        if self.last_beat is not None and now - self.last_beat > self.ttl / 2:
            log.warning(
                "heartbeat: %.1fs since the last beat Redis took (runs are NotResponding "
                "after %.1fs of silence)",
                now - self.last_beat,
                self.ttl,
            )
        self.last_beat = now

    def start(self) -> None:
        def loop() -> None:
            raise_priority()
            due = time.monotonic()
            while True:
                due += self.interval
                # Fixed schedule: a late beat is followed by the next one on time, and
                # beats missed entirely (a stopped process) are not caught up in a burst.
                due = max(due, time.monotonic())
                if self._stop.wait(due - time.monotonic()):
                    return
                self.beat()

        self.beat()
        self._thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(redis.RedisError):
            remove_worker(self.redis, self.worker_id)


def own_connection(client: redis.Redis, timeout: float) -> redis.Redis:
    """A client of the same server as ``client`` (same address, password, TLS) with a pool
    of its own whose calls give up after ``timeout`` seconds. TCP connections also get
    keepalive; a unix socket has no such option (its connection class refuses it)."""
    pool = client.connection_pool
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if issubclass(pool.connection_class, redis.Connection):  # TCP, and TLS over it
        kwargs["socket_keepalive"] = True
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def raise_priority() -> None:
    """Give the calling thread (the heartbeat) more CPU share than the runs' processes, where
    allowed; elsewhere it keeps the default share, which the TTL's slack covers."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEARTBEAT_NICE)
    except OSError as exc:
        log.debug("heartbeat keeps the default priority: %s", exc)
