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
from protocol.workers import WorkerInfo, live_workers, workers_serving
from runyard.status import WAITING
from store import statistics, team_status
from store.counters import DURATION_BUCKETS, WAIT_BUCKETS
from store.models import Cluster, utcnow

# Per cluster and team (``store.models.TeamUsagePublic`` field, metric, help).
TEAM_GAUGES = (
    ("quota_slots", "runyard_team_quota_slots", "A team's nominal quota of a cluster's slots"),
    ("used_slots", "runyard_team_used_slots", "Slots a team's runs hold"),
    ("borrowed_slots", "runyard_team_borrowed_slots", "Slots a team holds beyond its quota"),
    ("lent_slots", "runyard_team_lent_slots", "Slots of a team's idle quota others hold"),
    ("waiting", "runyard_team_waiting_runs", "A team's runs waiting in a cluster's queue"),
)
TEAM_GPU_GAUGES = (
    ("quota_gpus", "runyard_team_quota_gpus", "A team's nominal quota of a cluster's GPUs"),
    ("used_gpus", "runyard_team_used_gpus", "GPUs a team's runs hold"),
)


class RunyardCollector(Collector):
    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        workers = live_workers(self.services.redis)
        with Session(self.services.engine) as session:
            clusters = statistics.cluster_names(session)
            yield from self._runs(session, clusters)
            yield from self._teams(session, workers)
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
        yield from self._workers(clusters, workers)
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

    def _teams(self, session: Session, workers: list[WorkerInfo]) -> Iterator[Metric]:
        """Per cluster with quotas and team (``store.team_status``, as the cluster's page
        shows it): quota, use, borrowing and lending, waiting runs, fair share, preemptions.
        Runs of no team are labelled team="" ."""
        labels = ["cluster", "team"]
        gauges = {
            field: GaugeMetricFamily(name, help_text, labels=labels)
            for field, name, help_text in TEAM_GAUGES
        }
        gpu_gauges = {
            field: GaugeMetricFamily(name, help_text, labels=labels)
            for field, name, help_text in TEAM_GPU_GAUGES
        }
        ratio = GaugeMetricFamily(
            "runyard_team_fair_share_ratio",
            "A team's share of recent (decayed) usage over its share of the nominal quotas",
            labels=labels,
        )
        preemptions = CounterMetricFamily(
            "runyard_preemptions", "Runs of a team preempted on a cluster", labels=labels
        )
        now = utcnow()
        for name in sorted(team_status.clusters_with_quotas(session)):
            cluster = session.get(Cluster, name)
            if cluster is None:
                continue
            for team in team_status.team_status(session, cluster, workers, now):
                values = [name, team.team]
                for field, gauge in gauges.items():
                    gauge.add_metric(values, getattr(team, field))
                for field, gauge in gpu_gauges.items():
                    if getattr(team, field):
                        gauge.add_metric(values, getattr(team, field))
                if team.fair_share_ratio is not None:
                    ratio.add_metric(values, team.fair_share_ratio)
                preemptions.add_metric(values, team.preemptions)
        yield from (*gauges.values(), *gpu_gauges.values(), ratio, preemptions)

    def _workers(self, clusters: list[str], workers: list[WorkerInfo]) -> Iterator[Metric]:
        online = GaugeMetricFamily(
            "runyard_workers_online", "Live workers serving a cluster", labels=["cluster"]
        )
        slots = GaugeMetricFamily(
            "runyard_slots", "Worker slots of a cluster by state", labels=["cluster", "state"]
        )
        # As the workers report them (heartbeats): the slots they offer and the runs they
        # hold. Admission's count of runs holding a slot is store.queue.holding_a_slot.
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
