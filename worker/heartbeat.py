"""The worker's heartbeat: announces the worker, its clusters, its slots and its runs."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

import redis

from protocol.workers import WorkerInfo, drain_requested, publish_heartbeat, remove_worker

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        clusters: list[str],
        slots: int,
        interval: float,
        ttl: float,
    ) -> None:
        self.redis = client
        self.worker_id = worker_id
        self.clusters = clusters
        self.slots = slots
        self.interval = interval
        self.ttl = ttl
        self._runs: set[str] = set()
        self.draining = False
        self.on_drain: list = []  # callbacks, run once when an operator drains the worker
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def beat(self) -> None:
        try:
            if not self.draining and drain_requested(self.redis, self.worker_id):
                self.draining = True
                log.info("draining: finishing %d run(s), taking no new ones", len(self.runs))
                for callback in self.on_drain:
                    callback()
            info = WorkerInfo(
                id=self.worker_id,
                hostname=socket.gethostname(),
                clusters=self.clusters,
                slots=self.slots,
                runs=self.runs,
                draining=self.draining,
            )
            publish_heartbeat(self.redis, info, self.ttl)
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval):
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
