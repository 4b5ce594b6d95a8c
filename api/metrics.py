"""Prometheus metrics, computed from the database and Redis at scrape time.

Everything here is derived from the source of truth on each scrape (queue depth, runs by
status, waits and durations, workers and slots, ingest lag), so several API replicas
report the same numbers and nothing is lost when one restarts. The database's part is read
from the counter rows it maintains (``store.counters``), never by scanning runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlmodel import Session

from protocol import keys
from protocol.replies import as_text
from protocol.streams import ingest_shards
from protocol.workers import live_workers, workers_serving
from runyard.status import WAITING
from store import statistics
from store.counters import DURATION_BUCKETS, WAIT_BUCKETS


class RunyardCollector(Collector):
    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        with Session(self.services.engine) as session:
            clusters = statistics.cluster_names(session)
            yield from self._runs(session, clusters)
            waits = statistics.wait_buckets(session)
            durations = statistics.duration_buckets(session)
        yield _histogram(
            "runyard_queue_wait_seconds",
            "Time from submit until a node took the run",
            waits,
            WAIT_BUCKETS,
        )
        yield _histogram(
            "runyard_run_duration_seconds",
            "Time a run spent running",
            durations,
            DURATION_BUCKETS,
        )
        yield from self._workers(clusters)
        yield from self._ingest_lag()

    def _runs(self, session: Session, clusters: list[str]) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "runyard_runs", "Runs by cluster and status", labels=["cluster", "status"]
        )
        depth = GaugeMetricFamily(
            "runyard_queue_depth", "Runs waiting in a cluster's queue", labels=["cluster"]
        )
        submitted = CounterMetricFamily(
            "runyard_submissions", "Runs submitted to a cluster", labels=["cluster"]
        )
        canceled = CounterMetricFamily("runyard_cancels", "Runs cancelled", labels=["cluster"])
        waiting: dict[str, int] = defaultdict(int)
        totals: dict[str, int] = defaultdict(int)
        for cluster, status, count in statistics.runs_by_status(session):
            by_status.add_metric([cluster, status.value], count)
            totals[cluster] += count
            if status in WAITING:
                waiting[cluster] += count
        canceled_by = statistics.cancels_by_cluster(session)
        for name in clusters:
            depth.add_metric([name], waiting.get(name, 0))
            submitted.add_metric([name], totals.get(name, 0))
            canceled.add_metric([name], canceled_by.get(name, 0))
        yield from (by_status, depth, submitted, canceled)

    def _workers(self, clusters: list[str]) -> Iterator[Metric]:
        online = GaugeMetricFamily(
            "runyard_workers_online", "Live workers serving a cluster", labels=["cluster"]
        )
        slots = GaugeMetricFamily(
            "runyard_slots", "Worker slots of a cluster by state", labels=["cluster", "state"]
        )
        # As the workers report them (heartbeats): the slots they offer and the runs they
        # hold. Admission's count of runs holding a slot is store.queue.holding_a_slot.
        workers = live_workers(self.services.redis)
        for name in clusters:
            serving = workers_serving(workers, name)
            online.add_metric([name], len(serving))
            busy = sum(w.busy for w in serving)
            total = sum(w.slots for w in serving)
            slots.add_metric([name, "busy"], busy)
            slots.add_metric([name, "free"], max(total - busy, 0))
        yield from (online, slots)

    def _ingest_lag(self) -> Iterator[Metric]:
        """Entries on the ingest streams not yet written to the database: in all (what to
        alert on) and per stream (a shard whose holder is stuck stands out). One round trip."""
        lag = GaugeMetricFamily(
            "runyard_ingest_lag", "Ingest stream entries not yet in the database"
        )
        per_stream = GaugeMetricFamily(
            "runyard_ingest_stream_lag",
            "Ingest entries not yet in the database, per stream (shard, wakes, old stream)",
            labels=["stream"],
        )
        # The count this process's producers append with (``RUNYARD_INGEST_SHARDS``).
        streams = keys.ingest_streams(ingest_shards())
        pipe = self.services.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
        try:
            answers = pipe.execute(raise_on_error=False)
        except Exception:
            yield lag
            return
        total = 0
        for stream, groups in zip(streams, answers, strict=True):
            if isinstance(groups, Exception):  # no such stream yet: nothing waits there
                continue
            for group in groups:
                if as_text(group["name"]) == keys.INGEST_GROUP:
                    waiting = int(group.get("lag") or 0) + int(group.get("pending") or 0)
                    total += waiting
                    per_stream.add_metric([stream], waiting)
        lag.add_metric([], total)
        yield lag
        yield per_stream


def _histogram(
    name: str,
    help_text: str,
    found: dict[str, tuple[list[int], int]],
    buckets: tuple[float, ...],
) -> Metric:
    """A histogram from counter rows: per cluster, the count in each bucket (not
    cumulative, the last one +Inf) and the sum in microseconds."""
    family = HistogramMetricFamily(name, help_text, labels=["cluster"])
    for cluster, (per_bucket, sum_us) in sorted(found.items()):
        cumulative, counts = 0, []
        for bound, n in zip((*map(str, buckets), "+Inf"), per_bucket, strict=True):
            cumulative += n
            counts.append((bound, cumulative))
        family.add_metric([cluster], counts, sum_value=sum_us / 1_000_000)
    return family
