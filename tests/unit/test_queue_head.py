"""The head of a queue a decision sees (``scheduler.queue_head``): the first runs in the
order ``policy.decide`` ranks them (priority raised by the wait, then submit time), read
one priority at a time and no further than a run could still rank; and the simulator's
queue (``bench.scheduling.Queue``) read by the same rule, requeued runs in submit order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.scheduling import Job, Queue
from scheduler.admission import HEAD_SPARE
from scheduler.policy import (
    ClusterState,
    Pending,
    Resources,
    Running,
    TeamQuota,
    decide,
    effective_priority,
)
from scheduler.queue_head import head

HOUR = 3600.0
ONE = Resources(1)
NOW = 100 * HOUR


@dataclass
class Listed:
    """A queue as a list of (priority, submitted, id), counting the priorities it reads."""

    runs: list[tuple[int, float, str]]
    read: list[int] = field(default_factory=list)

    def priorities(self) -> Iterator[int]:
        return iter(sorted({p for p, _, _ in self.runs}, reverse=True))

    def oldest(self) -> float | None:
        return min((s for _, s, _ in self.runs), default=None)

    def first(self, priority: int, count: int) -> list[tuple[float, str, str]]:
        self.read.append(priority)
        same = sorted((s, i, i) for p, s, i in self.runs if p == priority)
        return same[:count]


def ranked(queue: Listed, count: int, aging: float) -> list[str]:
    """The first ``count`` by sorting the whole queue as ``decide`` does."""
    pending = [Pending(i, "t", p, s, Resources(1)) for p, s, i in queue.runs]
    pending.sort(key=lambda r: (-effective_priority(r, NOW, aging), r.submitted, r.run_id))
    return [r.run_id for r in pending[:count]]


def test_without_aging_the_head_is_by_stored_priority_then_submit_time() -> None:
    queue = Listed([(0, NOW - 9 * HOUR, "old"), (4, NOW - 60, "a"), (4, NOW - 30, "b")])
    assert head(queue, 2, NOW, 0) == ["a", "b"]


def test_a_run_aging_has_raised_is_in_the_head_behind_more_runs_than_it_reads() -> None:
    queue = Listed(
        [(0, NOW - 6 * HOUR - 60, "old")] + [(4, NOW - 600 + i, f"p4-{i}") for i in range(5)]
    )
    assert head(queue, 3, NOW, HOUR) == ["old", "p4-0", "p4-1"]
    assert head(queue, 3, NOW, HOUR) == ranked(queue, 3, HOUR)


def test_lower_priorities_are_read_only_while_a_run_there_could_rank() -> None:
    """The oldest run waited two hours: once three runs of priority 9 are read, nothing
    below priority 7 can rank among the first three."""
    runs = [(9, NOW - 60 + i, f"p9-{i}") for i in range(3)]
    runs += [(p, NOW - 2 * HOUR, f"p{p}") for p in range(8, -1, -1)]
    queue = Listed(runs)
    assert head(queue, 3, NOW, HOUR) == ranked(queue, 3, HOUR)
    assert queue.read == [9, 8, 7]


def test_the_head_matches_sorting_the_whole_queue() -> None:
    runs = [
        (p, NOW - (i * 977 % 40000), f"r{i}")
        for i, p in enumerate([0, 1, 2, 5, 0, 0, 3, 1, 2, 0, 7, 0, 1, 4, 0, 0, 2, 6] * 3)
    ]
    for aging in (0, 600, HOUR, 4 * HOUR):
        for count in (1, 3, 8, 100):
            assert head(Listed(runs), count, NOW, aging) == ranked(Listed(runs), count, aging)


def test_the_simulators_queue_gives_requeued_runs_their_submit_time_place() -> None:
    queue = Queue()
    jobs = {
        name: Job(name, "t", 0, submitted, HOUR, True)
        for name, submitted in (("a", 10.0), ("b", 20.0), ("c", 30.0), ("back", 5.0))
    }
    for name in ("a", "b", "c"):
        queue.add(jobs[name])
    queue.add(jobs["back"], requeued=True)  # preempted: back with its original submit time
    queue.add(Job("urgent", "t", 3, 40.0, HOUR, True))

    assert list(queue.priorities()) == [3, 0]
    assert queue.oldest() == 5.0
    assert [job.id for _, _, job in queue.first(0, 3)] == ["back", "a", "b"]
    assert [job.id for job in head(queue, 2, 41.0, 0)] == ["urgent", "back"]
    queue.remove(jobs["back"])
    assert [job.id for job in head(queue, 2, 41.0, 0)] == ["urgent", "a"]


def random_cluster(rng: random.Random) -> tuple[ClusterState, list[Running], list[Pending]]:
    """A cluster with quotas (or priority preemption), its running and waiting runs."""
    slots = rng.randint(1, 8)
    names = ["a", "b", "c"][: rng.randint(1, 3)]

    def limit() -> Resources | None:
        return rng.choice([None, Resources(rng.randint(0, 3))])

    quotas = {
        t: TeamQuota(t, Resources(rng.randint(0, slots)), limit(), limit())
        for t in names
        if rng.random() < 0.85
    }
    state = ClusterState(
        Resources(slots),
        quotas,
        {t: rng.uniform(0, 1e4) for t in names},
        min_runtime=60,
        priority_preemption=rng.random() < 0.5 or not quotas,
        aging_seconds=rng.choice([0, 600, HOUR]),
    )
    teams = [*names, ""]
    running = []
    for i in range(rng.randint(0, slots)):
        started = NOW - rng.uniform(0, 1000)
        preemptible = rng.random() < 0.7
        running.append(
            Running(f"x{i}", rng.choice(teams), rng.randint(0, 3), started, ONE, preemptible)
        )
    pending = []
    for i in range(rng.randint(0, 40)):
        submitted = NOW - rng.uniform(0, 20000)
        preemptible = rng.random() < 0.5
        pending.append(
            Pending(f"r{i:03d}", rng.choice(teams), rng.randint(0, 3), submitted, ONE, preemptible)
        )
    return state, running, pending


def heads_of(state: ClusterState, pending: list[Pending]) -> list[Pending]:
    """What admission passes: each team's head per kind, capacity + 2 runs each."""
    by_id = {p.run_id: p for p in pending}
    found = []
    for team in {p.team for p in pending}:
        for kind in (False, True):
            queue = Listed(
                [
                    (p.priority, p.submitted, p.run_id)
                    for p in pending
                    if p.team == team and p.preemptible == kind
                ]
            )
            count = state.capacity.slots + HEAD_SPARE
            found += [by_id[i] for i in head(queue, count, NOW, state.aging_seconds)]
    return found


def test_decide_on_the_heads_admits_and_preempts_as_on_the_whole_queue() -> None:
    """What admission passes is enough: on random clusters with quotas or priority
    preemption, ``decide`` admits and preempts exactly what it would given every waiting
    run."""
    rng = random.Random(17)
    for _ in range(2000):
        state, running, pending = random_cluster(rng)
        whole = decide(state, running, pending, NOW)
        seen = decide(state, running, heads_of(state, pending), NOW)
        assert seen.admit == whole.admit
        chosen = [(p.run_id, p.by_run) for p in seen.preempt]
        assert chosen == [(p.run_id, p.by_run) for p in whole.preempt]
