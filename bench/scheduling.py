"""The team scheduler on a simulated clock, against today's queue (issue 17, item 7).

    python -m bench.scheduling [--runs 20000] [--seed 1] [--json]

A synthetic workload (4 teams with quotas 16/8/4/4 of a 32-slot cluster, borrowing
allowed; each team submits a steady Poisson stream and bursts of up to a few hundred runs;
lengths log-uniform from 10 s to 4 h; priorities 0/1/2; a few non-preemptible runs) is
replayed event by event: at every arrival, completion, end of a preemption and minimum
runtime reached, the cluster asks ``scheduler.policy.decide`` (the very code the service
calls) what to start and what to preempt. Two policies side by side:

- ``fifo``: today's queue: priority, then submit time (``store.queue.queue_order``); it
  ignores teams (``decide`` on a cluster without quotas) and never preempts.
- ``teams``: quotas, borrowing, fair share with decayed usage, aging, reclaim.

Every run checkpoints every ``--checkpoint-minutes`` of its running time: a preempted run
(SIGTERM, then the grace period, then it stops) goes back to the queue with its original
submit time and resumes from its last checkpoint; the work since then and the grace period
are wasted slot-time.

Figures (``docs/scheduling.md`` defines each): utilization while demand exceeds capacity;
each team's received share against its entitlement, the lowest over the hours it had
demand; waits p50/p95 per team and the longest; preemptions; wasted slot-time.
Not a test: ``tests/unit/test_scheduling_bench.py`` runs a small workload.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from bench.figures import Figure, quantile
from scheduler.policy import ClusterState, Pending, Resources, Running, TeamQuota, decide
from scheduler.queue_head import head

ONE = Resources(1)
HOUR = 3600.0


@dataclass(frozen=True)
class Workload:
    """What the simulator replays: the cluster, its teams and the runs they submit."""

    runs: int = 20_000
    seed: int = 1
    slots: int = 32
    quotas: tuple[tuple[str, int], ...] = (
        ("vision", 16),
        ("nlp", 8),
        ("audio", 4),
        ("robotics", 4),
    )
    # Each team's part of the runs submitted (not its quota: some submit more than their
    # quota covers, some less, so borrowing and reclaiming happen).
    submits: tuple[float, ...] = (0.40, 0.30, 0.20, 0.10)
    load: float = 0.9  # offered work / capacity over the whole span
    burst_fraction: float = 0.5  # of each team's runs, submitted in bursts
    burst_size: int = 150  # runs in a burst, on average
    burst_minutes: float = 10.0  # a burst's runs arrive within this
    shortest: float = 10.0  # seconds
    longest: float = 4 * HOUR
    priorities: tuple[tuple[int, float], ...] = ((0, 0.80), (1, 0.15), (2, 0.05))
    non_preemptible: float = 0.05
    checkpoint_minutes: float = 10.0
    grace: float = 10.0
    min_runtime: float = 60.0
    half_life_hours: float = 168.0
    aging_seconds: float = 3600.0
    allocation_weight_seconds: float = 3600.0


@dataclass
class Job:
    """One run of the workload, and what happened to it."""

    id: str
    team: str
    priority: int
    submitted: float
    length: float  # seconds of work
    preemptible: bool
    done: float = 0.0  # work saved (checkpoints), seconds
    started: float = -1.0  # this attempt's start
    first_start: float = -1.0
    queued_at: float = 0.0  # when it last entered the queue
    waited: float = 0.0  # all its time in the queue
    ended: float = -1.0
    token: int = 0  # the attempt: a completion of an earlier attempt is void
    preemptions: int = 0


class Queue:
    """One team's waiting runs of one kind, preemptible or not (or the whole cluster's, for
    FIFO): per priority, a stream in arrival order and the runs sent back by preemption
    (older, kept sorted), so a priority's first runs cost a merge of two streams."""

    def __init__(self) -> None:
        self.fresh: dict[int, deque[Job]] = {}
        self.back: dict[int, list[tuple[float, str, Job]]] = {}
        self.size = 0

    def add(self, job: Job, requeued: bool = False) -> None:
        self.size += 1
        if requeued:
            heapq.heappush(self.back.setdefault(job.priority, []), (job.submitted, job.id, job))
        else:
            self.fresh.setdefault(job.priority, deque()).append(job)

    def remove(self, job: Job) -> None:
        """Remove a run admitted from the head (it is among the first few of its stream)."""
        self.size -= 1
        back = self.back.get(job.priority)
        if back and back[0][2] is job:
            heapq.heappop(back)
            return
        if back and any(entry[2] is job for entry in back):
            self.back[job.priority] = [e for e in back if e[2] is not job]
            heapq.heapify(self.back[job.priority])
            return
        fresh = self.fresh[job.priority]
        if fresh[0] is job:
            fresh.popleft()
        else:
            fresh.remove(job)

    # ``scheduler.queue_head.Levels``: the service's head selection reads it as it reads
    # the database (``store.queue.TeamQueue``).

    def priorities(self) -> Iterator[int]:
        levels = {p for p, runs in self.fresh.items() if runs}
        levels |= {p for p, runs in self.back.items() if runs}
        return iter(sorted(levels, reverse=True))

    def oldest(self) -> float | None:
        firsts = [runs[0].submitted for runs in self.fresh.values() if runs]
        firsts += [runs[0][0] for runs in self.back.values() if runs]
        return min(firsts, default=None)

    def first(self, priority: int, count: int) -> list[tuple[float, str, Job]]:
        fresh = (
            (j.submitted, j.id, j) for j in itertools.islice(self.fresh.get(priority, ()), count)
        )
        back = heapq.nsmallest(count, self.back.get(priority, []))
        merged = heapq.merge(fresh, back, key=lambda entry: entry[:2])
        return list(itertools.islice(merged, count))


def generate(w: Workload) -> list[Job]:
    """The runs, in submit order: per team a Poisson stream and bursts over the span that
    makes the offered work ``load`` times the capacity."""
    rng = random.Random(w.seed)
    mean = (w.longest - w.shortest) / math.log(w.longest / w.shortest)
    span = w.runs * mean / (w.load * w.slots)
    jobs: list[Job] = []
    levels = [p for p, _ in w.priorities]
    weights = [f for _, f in w.priorities]
    for (team, _), part in zip(w.quotas, w.submits, strict=True):
        count = round(w.runs * part)
        in_bursts = round(count * w.burst_fraction)
        times = [rng.uniform(0, span) for _ in range(count - in_bursts)]
        while in_bursts > 0:
            size = min(in_bursts, max(1, round(rng.expovariate(1 / w.burst_size))))
            at = rng.uniform(0, span)
            times += [at + rng.uniform(0, w.burst_minutes * 60) for _ in range(size)]
            in_bursts -= size
        for at in times:
            length = math.exp(rng.uniform(math.log(w.shortest), math.log(w.longest)))
            jobs.append(
                Job(
                    id="",
                    team=team,
                    priority=rng.choices(levels, weights)[0],
                    submitted=at,
                    length=length,
                    preemptible=rng.random() >= w.non_preemptible,
                )
            )
    jobs.sort(key=lambda j: j.submitted)
    for number, job in enumerate(jobs):
        job.id = f"r{number:06d}"
    return jobs


@dataclass
class Result:
    """One policy's figures (``docs/scheduling.md`` defines each)."""

    policy: str
    utilization_when_contended: float  # % of capacity held while demand > capacity
    contended_hours: float
    share_vs_nominal_min: dict[str, float]  # lowest hourly % of min(demand, nominal)
    share_vs_fair_min: dict[str, float]  # lowest hourly % of the water-filled fair share
    share_vs_fair_p5: dict[str, float]
    hours_with_demand: dict[str, int]
    wait_p50: dict[str, float]  # seconds in the queue, all attempts
    wait_p95: dict[str, float]
    max_wait: float
    never_started: int
    preemptions: int
    wasted_percent: float  # of all slot-time held: work lost + grace
    decisions: int
    seconds: float  # wall-clock time of the simulation
    simulated_hours: float
    goals: dict[str, bool] = field(default_factory=dict)


class Simulator:
    """Replays a workload through ``decide`` under one policy."""

    def __init__(self, w: Workload, jobs: list[Job], teams: bool) -> None:
        self.w, self.teams = w, teams
        self.jobs = [Job(**{**asdict(j)}) for j in jobs]
        self.by_id = {j.id: j for j in self.jobs}
        self.names = [t for t, _ in w.quotas]
        self.nominal = dict(w.quotas)
        quotas = {t: TeamQuota(t, Resources(n)) for t, n in w.quotas} if teams else {}
        self.quotas = quotas
        # Per team and kind (preemptible or not), as the service reads its queues.
        self.queues: dict[tuple[str, bool], Queue] = {
            (t, kind): Queue() for t in self.names for kind in (False, True)
        }
        self.running: dict[str, Running] = {}
        self.events: list[tuple[float, int, str, str, int]] = []
        self.seq = itertools.count()
        self.usage = dict.fromkeys(self.names, 0.0)
        self.held = dict.fromkeys(self.names, 0)
        self.waiting = dict.fromkeys(self.names, 0)
        self.waiting_fixed = dict.fromkeys(self.names, 0)  # non-preemptible ones
        self.held_fixed = dict.fromkeys(self.names, 0)
        self.clock = 0.0
        self.decisions = 0
        self.preemptions = 0
        self.lost = 0.0
        self.busy = 0.0  # slot-seconds held
        self.contended = 0.0  # seconds with demand > capacity
        self.contended_busy = 0.0
        self.hours: dict[int, dict[str, list[float]]] = {}  # hour -> team -> [got, nominal, fair]
        self.wakes: set[float] = set()

    def push(self, at: float, kind: str, run_id: str = "", token: int = 0) -> None:
        heapq.heappush(self.events, (at, next(self.seq), kind, run_id, token))

    def run(self) -> Result:
        started = time.monotonic()
        for job in self.jobs:
            self.push(job.submitted, "arrive", job.id)
        while self.events:
            now = self.events[0][0]
            self.advance(now)
            while self.events and self.events[0][0] == now:
                _, _, kind, run_id, token = heapq.heappop(self.events)
                self.handle(kind, run_id, token, now)
            self.schedule(now)
        return self.result(time.monotonic() - started)

    def handle(self, kind: str, run_id: str, token: int, now: float) -> None:
        job = self.by_id.get(run_id)
        if kind == "arrive" and job:
            self.enqueue(job, now)
        elif kind == "finish" and job and token == job.token and run_id in self.running:
            self.release(job)
            job.ended = now
        elif kind == "stop" and job and token == job.token and run_id in self.running:
            # SIGTERM plus the grace period are over: back to the queue from its last
            # checkpoint; the work since it and the grace period are lost.
            asked = now - self.w.grace
            ran = asked - job.started
            every = self.w.checkpoint_minutes * 60
            saved = math.floor(ran / every) * every if every > 0 else 0.0
            job.done += saved
            self.lost += (ran - saved) + self.w.grace
            self.release(job)
            job.preemptions += 1
            job.token += 1
            self.enqueue(job, now, requeued=True)
        elif kind == "wake":
            self.wakes.discard(now)

    def enqueue(self, job: Job, now: float, requeued: bool = False) -> None:
        job.queued_at = now
        self.queue_of(job).add(job, requeued)
        self.waiting[job.team] += 1
        self.waiting_fixed[job.team] += not job.preemptible

    def queue_of(self, job: Job) -> Queue:
        if self.teams:
            return self.queues[job.team, job.preemptible]
        return self.queues[self.names[0], True]  # FIFO: one queue, both kinds

    def release(self, job: Job) -> None:
        del self.running[job.id]
        self.held[job.team] -= 1
        self.held_fixed[job.team] -= not job.preemptible

    def schedule(self, now: float) -> None:
        """One decision with what the service would pass: what runs, and the head of each
        team's queue per kind (``scheduler.queue_head``: its first ``slots``; more cannot
        start at once). FIFO reads by stored priority, as the service's plain queue."""
        if not any(self.waiting.values()):
            return
        state = ClusterState(
            capacity=Resources(self.w.slots),
            quotas=self.quotas,
            usage=self.usage,
            min_runtime=self.w.min_runtime,
            grace=self.w.grace,
            aging_seconds=self.w.aging_seconds,
            allocation_weight_seconds=self.w.allocation_weight_seconds,
        )
        aging = self.w.aging_seconds if self.teams else 0.0
        pending = [
            Pending(j.id, j.team, j.priority, j.submitted, ONE, j.preemptible)
            for queue in self.queues.values()
            if queue.size
            for j in head(queue, self.w.slots, now, aging)
        ]
        decision = decide(state, list(self.running.values()), pending, now)
        self.decisions += 1
        for run_id in decision.admit:
            job = self.by_id[run_id]
            self.queue_of(job).remove(job)
            self.waiting[job.team] -= 1
            self.waiting_fixed[job.team] -= not job.preemptible
            job.waited += now - job.queued_at
            job.started = now
            if job.first_start < 0:
                job.first_start = now
            self.running[run_id] = Running(
                run_id, job.team, job.priority, now, ONE, job.preemptible
            )
            self.held[job.team] += 1
            self.held_fixed[job.team] += not job.preemptible
            self.push(now + (job.length - job.done), "finish", run_id, job.token)
        if len(self.running) > self.w.slots:
            raise RuntimeError(f"decide admitted beyond capacity at {now:.0f} s")
        for victim in decision.preempt:
            run = self.running[victim.run_id]
            if not run.preemptible or run.preempting:
                raise RuntimeError(f"decide preempted {run.run_id}, which it may not")
            self.running[victim.run_id] = Running(
                run.run_id, run.team, run.priority, run.started, run.demand, True, True
            )
            self.preemptions += 1
            self.push(now + self.w.grace, "stop", run.run_id, self.by_id[run.run_id].token)
        if decision.wake_at is not None and decision.wake_at not in self.wakes:
            self.wakes.add(decision.wake_at)
            self.push(decision.wake_at, "wake")

    def advance(self, now: float) -> None:
        """Account the interval since the last event: held slots, usage (decayed), and
        each team's received and entitled slot-time, hour by hour."""
        span = now - self.clock
        if span <= 0:
            return
        held = sum(self.held.values())
        demand = {t: self.demand(t) for t in self.names}
        self.busy += held * span
        if sum(demand.values()) > self.w.slots:
            self.contended += span
            self.contended_busy += held * span
        half_life = self.w.half_life_hours * HOUR
        decay = 0.5 ** (span / half_life)
        for t in self.names:
            self.usage[t] = self.usage[t] * decay + self.held[t] * (
                1 - decay
            ) * half_life / math.log(2)
        fair = water_fill(demand, self.nominal, self.w.slots)
        at = self.clock
        while at < now:
            hour = int(at // HOUR)
            upto = min(now, (hour + 1) * HOUR)
            piece = upto - at
            book = self.hours.setdefault(hour, {})
            for t in self.names:
                if demand[t] == 0:
                    continue
                row = book.setdefault(t, [0.0, 0.0, 0.0])
                row[0] += self.held[t] * piece
                row[1] += min(demand[t], self.nominal[t]) * piece
                row[2] += fair[t] * piece
            at = upto
        self.clock = now

    def demand(self, team: str) -> int:
        """Slots ``team`` could use now: what it holds, its waiting runs that may borrow,
        and its non-preemptible ones only as far as the team's non-preemptible runs stay
        within its quota (``scheduler.policy``). Under
        FIFO, every waiting run."""
        held, fixed = self.held[team], self.waiting_fixed[team]
        if not self.teams:
            return held + self.waiting[team]
        within = min(fixed, max(self.nominal[team] - self.held_fixed[team], 0))
        return held + self.waiting[team] - fixed + within

    def result(self, seconds: float) -> Result:
        nominal_min: dict[str, float] = {}
        fair_min: dict[str, float] = {}
        fair_p5: dict[str, float] = {}
        hours_with: dict[str, int] = {}
        for t in self.names:
            rows = [b[t] for b in self.hours.values() if t in b and b[t][2] >= MIN_ENTITLED]
            hours_with[t] = len(rows)
            by_nominal = [min(r[0] / r[1], 1.0) for r in rows if r[1] >= MIN_ENTITLED]
            by_fair = [min(r[0] / r[2], 1.0) for r in rows]
            nominal_min[t] = 100 * min(by_nominal, default=1.0)
            fair_min[t] = 100 * min(by_fair, default=1.0)
            fair_p5[t] = 100 * (quantile(by_fair, 0.05) if by_fair else 1.0)
        waits = {
            t: [j.waited for j in self.jobs if j.team == t and j.ended >= 0] for t in self.names
        }
        never = sum(1 for j in self.jobs if j.first_start < 0)
        utilization = 100 * self.contended_busy / (self.contended * self.w.slots or 1)
        wasted = 100 * self.lost / (self.busy or 1)
        result = Result(
            policy="teams" if self.teams else "fifo",
            utilization_when_contended=utilization,
            contended_hours=self.contended / HOUR,
            share_vs_nominal_min=nominal_min,
            share_vs_fair_min=fair_min,
            share_vs_fair_p5=fair_p5,
            hours_with_demand=hours_with,
            wait_p50={t: quantile(w, 0.5) if w else 0.0 for t, w in waits.items()},
            wait_p95={t: quantile(w, 0.95) if w else 0.0 for t, w in waits.items()},
            max_wait=max((j.waited for j in self.jobs), default=0.0),
            never_started=never,
            preemptions=self.preemptions,
            wasted_percent=wasted,
            decisions=self.decisions,
            seconds=seconds,
            simulated_hours=self.clock / HOUR,
        )
        result.goals = {
            "utilization >= 95% while demand exceeds capacity": utilization >= 95,
            "each team >= 90% of its entitled share in every hour": min(fair_min.values()) >= 90,
            "no starvation (every run started)": never == 0,
            "wasted slot-time <= 5%": wasted <= 5,
        }
        return result


# An hour counts for a team's share when its entitlement that hour is at least this many
# slot-seconds (a quarter slot-hour): a run that waited a minute in an hour the team
# otherwise had no demand is no measure of its share.
MIN_ENTITLED = 0.25 * HOUR


def water_fill(demand: dict[str, int], nominal: dict[str, int], capacity: int) -> dict[str, float]:
    """Each team's fair share of the capacity now: in proportion to its nominal quota
    among the teams with demand, no team more than its demand, what one leaves spread over
    the others (max-min fair by weight). With every team demanding, that is its nominal
    quota; with some idle, their quota is shared by the others."""
    share = dict.fromkeys(demand, 0.0)
    active = {t for t in demand if demand[t] > 0}
    left = float(capacity)
    while active and left > 1e-9:
        weight = sum(nominal[t] for t in active) or len(active)
        capped = {
            t for t in active if demand[t] - share[t] <= left * (nominal[t] or 1) / weight + 1e-9
        }
        if not capped:
            for t in active:
                share[t] += left * (nominal[t] or 1) / weight
            break
        for t in capped:
            left -= demand[t] - share[t]
            share[t] = float(demand[t])
        active -= capped
    return share


def simulate(w: Workload) -> list[Result]:
    jobs = generate(w)
    return [Simulator(w, jobs, teams=False).run(), Simulator(w, jobs, teams=True).run()]


def _duration(seconds: float) -> str:
    if seconds >= 2 * HOUR:
        return f"{seconds / HOUR:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def render(w: Workload, results: list[Result]) -> str:
    """The two policies side by side, one figure a line, then which goals each meets."""
    rows: list[tuple[str, ...]] = [("figure", *[r.policy for r in results], "goal")]

    def add(label: str, cell: Callable[[Result], str], goal: str = "") -> None:
        rows.append((label, *[cell(r) for r in results], goal))

    add(
        "utilization while demand > capacity",
        lambda r: f"{r.utilization_when_contended:.1f}%",
        ">= 95%",
    )
    add("hours with demand > capacity", lambda r: f"{r.contended_hours:.0f}")
    for t, nominal in w.quotas:
        add(
            f"{t} ({nominal}/{w.slots}): lowest hour vs fair share",
            lambda r, t=t: f"{r.share_vs_fair_min[t]:.0f}%",
            ">= 90%",
        )
        add("  5th percentile hour vs fair share", lambda r, t=t: f"{r.share_vs_fair_p5[t]:.0f}%")
        add(
            "  lowest hour vs min(demand, quota)",
            lambda r, t=t: f"{r.share_vs_nominal_min[t]:.0f}%",
        )
        add(
            "  wait p50 / p95",
            lambda r, t=t: f"{_duration(r.wait_p50[t])} / {_duration(r.wait_p95[t])}",
        )
    add("longest wait", lambda r: _duration(r.max_wait))
    add("runs never started", lambda r: str(r.never_started), "0")
    add("preemptions", lambda r: str(r.preemptions))
    add("wasted slot-time (lost work + grace)", lambda r: f"{r.wasted_percent:.2f}%", "<= 5%")
    add("decisions (calls of decide)", lambda r: str(r.decisions))
    add("simulated / wall-clock", lambda r: f"{r.simulated_hours:.0f} h / {r.seconds:.0f} s")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for r in results:
        met = "; ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in r.goals.items())
        lines.append(f"{r.policy}: {met}")
    return "\n".join(lines)


def figures(quick: bool = False) -> list[Figure]:
    """Rows for ``python -m bench``: the new policy's figures, today's as the anchor."""
    w = Workload(runs=2000 if quick else 20_000)
    fifo, teams = simulate(w)
    note = f"{w.runs} runs, {w.slots} slots, simulated"
    return [
        Figure(
            "scheduling: utilization while demand > capacity",
            teams.utilization_when_contended,
            "%",
            "fifo",
            fifo.utilization_when_contended,
            ">= 95",
            note,
        ),
        Figure(
            "scheduling: lowest team hour vs fair share",
            min(teams.share_vs_fair_min.values()),
            "%",
            "fifo",
            min(fifo.share_vs_fair_min.values()),
            ">= 90",
            note,
        ),
        Figure(
            "scheduling: wasted slot-time",
            teams.wasted_percent,
            "%",
            "fifo",
            fifo.wasted_percent,
            "<= 5",
            note,
        ),
        Figure(
            "scheduling: longest wait",
            teams.max_wait / HOUR,
            "h",
            "fifo",
            fifo.max_wait / HOUR,
            None,
            note,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scheduling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=Workload.runs, help="runs to submit")
    parser.add_argument("--seed", type=int, default=Workload.seed, help="workload's seed")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    w = Workload(runs=args.runs, seed=args.seed)
    results = simulate(w)
    if args.json:
        print(
            json.dumps({"workload": asdict(w), "results": [asdict(r) for r in results]}, indent=1)
        )
    else:
        print(render(w, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
