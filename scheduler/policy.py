"""The team scheduler's decision for one cluster: which waiting runs start, which running
runs are preempted to give capacity back, and why every other waiting run waits.

Pure: no database, no Redis, no clock of its own (``now`` is an argument, in seconds), so
the service (``scheduler.admission``) and the simulator (``bench/scheduling.py``) run the
very same code. The rules and the fair-share formula are in ``docs/scheduling.md``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from store.models.teams import ALLOCATION_WEIGHT_SECONDS


@dataclass(frozen=True)
class Resources:
    """An amount of a cluster: slots, and GPUs where its nodes have them."""

    slots: int = 0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.slots + other.slots, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.slots - other.slots, self.gpus - other.gpus)

    def fits_in(self, other: Resources) -> bool:
        return self.slots <= other.slots and self.gpus <= other.gpus


@dataclass(frozen=True)
class TeamQuota:
    """A team's share of the cluster (``store.models.TeamQuota``); a limit of None: none."""

    team: str
    nominal: Resources
    borrowing_limit: Resources | None = None
    lending_limit: Resources | None = None


@dataclass(frozen=True)
class Pending:
    """A waiting run. ``submitted``: seconds (the clock of ``now``)."""

    run_id: str
    team: str  # store.models.NO_TEAM for a run of no team: it may only borrow
    priority: int
    submitted: float
    demand: Resources
    preemptible: bool = True


@dataclass(frozen=True)
class Running:
    """A run holding capacity. ``preempting``: already asked to stop (its capacity is on
    its way back; never chosen again). ``stoppable``: it can be asked to stop now (a
    worker executes it); a preemptible run that cannot (handed over, ending, silent) still
    counts as preemptible against its team's quota, it is only not chosen."""

    run_id: str
    team: str
    priority: int
    started: float
    demand: Resources
    preemptible: bool = True
    preempting: bool = False
    stoppable: bool = True


@dataclass(frozen=True)
class ClusterState:
    """What the decision needs to know of one cluster at ``now``."""

    capacity: Resources  # what its live workers offer, within its node limit
    quotas: dict[str, TeamQuota]
    usage: dict[str, float]  # team -> decayed slot-seconds (store.attempts.decayed_usage)
    min_runtime: float = 60.0  # seconds a run runs before it may be preempted
    grace: float = 10.0  # seconds a preempted run gets between SIGTERM and SIGKILL
    priority_preemption: bool = False
    aging_seconds: float = 3600.0  # wait that raises a waiting run one priority step
    # Fair share counts a team's current allocation as this many seconds of usage per
    # slot held, so a burst spreads at once (docs/scheduling.md).
    allocation_weight_seconds: float = ALLOCATION_WEIGHT_SECONDS


@dataclass(frozen=True)
class Preemption:
    run_id: str
    by_team: str
    by_run: str  # the waiting run it makes room for
    reason: str  # for the victim's record: "reclaimed by team vision (at 2/4 slots)"


@dataclass
class Decision:
    admit: list[str] = field(default_factory=list)  # run ids, first to start first
    preempt: list[Preemption] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # waiting run id -> why it waits
    # When to decide again even if nothing changes: a victim reaches the minimum runtime.
    wake_at: float | None = None


# --- the decision -------------------------------------------------------------------------

_EPSILON = 1e-9
TIMES = "\u00d7"  # the multiplication sign of "usage 1.8x its share"


def _over(amount: Resources, limit: Resources) -> Resources:
    """The part of ``amount`` beyond ``limit``, per resource (never negative)."""
    return Resources(max(amount.slots - limit.slots, 0), max(amount.gpus - limit.gpus, 0))


def _floor0(amount: Resources) -> Resources:
    return Resources(max(amount.slots, 0), max(amount.gpus, 0))


def _least(a: Resources, b: Resources | None) -> Resources:
    return a if b is None else Resources(min(a.slots, b.slots), min(a.gpus, b.gpus))


def _label(team: str) -> str:
    return f"team {team}" if team else "runs of no team"


def _whose(run_id: str, team: str) -> str:
    """ "run X of team T" ("run X" for a run of no team)."""
    return f"run {run_id} of team {team}" if team else f"run {run_id}"


def effective_priority(run: Pending, now: float, aging_seconds: float) -> int:
    """A waiting run's priority raised one step per ``aging_seconds`` waited: no run waits
    forever behind a stream of higher priorities."""
    return raised_priority(run.priority, now - run.submitted, aging_seconds)


def raised_priority(priority: int, waited: float, aging_seconds: float) -> int:
    """``priority`` raised one step per ``aging_seconds`` of ``waited`` (0: no aging)."""
    if aging_seconds <= 0:
        return priority
    return priority + max(math.floor(waited / aging_seconds), 0)


def water_fill(
    wanted: dict[str, float], weights: dict[str, float], capacity: float
) -> dict[str, float]:
    """Max-min fair shares of ``capacity`` by weight: each team gets capacity in proportion
    to its weight, never more than it wants; what one leaves goes to the others. Teams of
    weight 0 share (equally) only what the weighted ones leave."""
    share = dict.fromkeys(wanted, 0.0)
    left = capacity
    for group in (
        {t for t in wanted if weights.get(t, 0) > 0},
        {t for t in wanted if weights.get(t, 0) <= 0},
    ):
        active = {t for t in group if wanted[t] > 0}
        while active and left > _EPSILON:
            weight = {t: weights.get(t, 0) or 1.0 for t in active}
            total = sum(weight.values())
            sated = {
                t for t in active if wanted[t] - share[t] <= left * weight[t] / total + _EPSILON
            }
            if not sated:
                for t in active:
                    share[t] += left * weight[t] / total
                left = 0.0
                break
            for t in sated:
                left -= wanted[t] - share[t]
                share[t] = wanted[t]
            active -= sated
    return share


class _Book:
    """The cluster's accounts during one decision: what each team holds, its quota, and
    its fair-share weight; changed as runs are admitted or chosen as victims."""

    def __init__(self, state: ClusterState, running: list[Running]) -> None:
        self.gpus = state.capacity.gpus > 0
        self.capacity = state.capacity
        self.quotas = state.quotas
        self.nominal = {t: self.norm(q.nominal) for t, q in state.quotas.items()}
        self.used: dict[str, Resources] = {}
        self.leaving: dict[str, Resources] = {}  # held by runs already being preempted
        self.fixed: dict[str, Resources] = {}  # held by non-preemptible runs
        self.total = Resources()
        for run in running:
            demand = self.norm(run.demand)
            self.used[run.team] = self.used.get(run.team, Resources()) + demand
            self.total += demand
            if run.preempting:
                self.leaving[run.team] = self.leaving.get(run.team, Resources()) + demand
            if not run.preemptible:
                self.fixed[run.team] = self.fixed.get(run.team, Resources()) + demand
        nominal_sum = sum(self.nominal.values(), Resources())
        self.unquoted = _floor0(self.norm(state.capacity) - nominal_sum)
        self.weight = state.allocation_weight_seconds
        self.usage = {t: max(u, 0.0) for t, u in state.usage.items()}
        self.nominal_slots = nominal_sum.slots

    def norm(self, amount: Resources) -> Resources:
        """GPUs count only on a cluster whose workers have them."""
        return amount if self.gpus else Resources(amount.slots, 0)

    def nominal_of(self, team: str) -> Resources:
        return self.nominal.get(team, Resources())

    def used_by(self, team: str) -> Resources:
        return self.used.get(team, Resources())

    def free(self) -> Resources:
        return self.norm(self.capacity) - self.total

    def take(self, team: str, demand: Resources, preemptible: bool = True) -> None:
        self.used[team] = self.used_by(team) + demand
        self.total += demand
        if not preemptible:
            self.fixed[team] = self.fixed.get(team, Resources()) + demand

    def may_hold(self, team: str, run: Pending) -> bool:
        """A non-preemptible run only where the team's non-preemptible runs together stay
        within its nominal quota: whatever the team holds beyond it can then always be
        taken back (from its preemptible runs)."""
        if run.preemptible:
            return True
        demand = self.norm(run.demand)
        return (self.fixed.get(team, Resources()) + demand).fits_in(self.nominal_of(team))

    def held_fixed(self, team: str) -> str:
        fixed, nominal = self.fixed.get(team, Resources()), self.nominal_of(team)
        text = f"{fixed.slots}/{nominal.slots} slots"
        if self.gpus:
            text += f", {fixed.gpus}/{nominal.gpus} GPUs"
        return text + " held by its non-preemptible runs"

    def within_nominal(self, team: str, demand: Resources) -> bool:
        return (self.used_by(team) + demand).fits_in(self.nominal_of(team))

    def may_borrow(self, team: str, demand: Resources) -> bool:
        return self.borrow_block(team, demand) is None

    def borrow_block(self, team: str, demand: Resources) -> str | None:
        """What stops ``team`` holding ``demand`` more as far as quotas go (not capacity):
        "limit" (the part beyond its nominal quota exceeds its borrowing limit),
        "lenders" (all teams' borrowing together would exceed what lenders lend: their
        idle quota up to their lending limit, plus the capacity no quota covers), or None."""
        after = self.used_by(team) + demand
        quota = self.quotas.get(team)
        limit = quota.borrowing_limit if quota else None
        if limit is not None and not _over(after, self.nominal_of(team)).fits_in(self.norm(limit)):
            return "limit"
        borrowed, lendable = Resources(), self.unquoted
        for name in set(self.used) | set(self.nominal) | {team}:
            held = after if name == team else self.used_by(name)
            nominal = self.nominal_of(name)
            borrowed += _over(held, nominal)
            lend = self.quotas[name].lending_limit if name in self.quotas else None
            lendable += _least(_floor0(nominal - held), None if lend is None else self.norm(lend))
        return None if borrowed.fits_in(lendable) else "lenders"

    def key(self, team: str) -> tuple[int, float, str]:
        """Fair-share order (ascending): usage against entitlement; no quota: last."""
        usage = self.usage.get(team, 0.0) + self.weight * self.used_by(team).slots
        nominal = self.nominal_of(team).slots
        if nominal <= 0:
            return (1, usage, team)
        return (0, usage / nominal, team)

    def share_ratio(self, team: str) -> float:
        """(usage share) / (entitlement share): 1 is exactly its share."""
        teams = set(self.usage) | set(self.used) | set(self.nominal)
        total = sum(self.usage.get(t, 0.0) + self.weight * self.used_by(t).slots for t in teams)
        nominal = self.nominal_of(team).slots
        if total <= 0 or nominal <= 0 or self.nominal_slots <= 0:
            return 0.0
        mine = self.usage.get(team, 0.0) + self.weight * self.used_by(team).slots
        return (mine / total) / (nominal / self.nominal_slots)

    def held(self, team: str) -> str:
        """ "3/4 slots" (and GPUs where they count): what ``team`` holds of its quota."""
        used, nominal = self.used_by(team), self.nominal_of(team)
        text = f"{used.slots}/{nominal.slots} slots"
        if self.gpus:
            text += f", {used.gpus}/{nominal.gpus} GPUs"
        return text


@dataclass
class _Victims:
    """Running runs that may be preempted, lowest priority first; among equals, those
    that have run ``min_runtime`` first (most recently started first), then those that
    have not (the one that reaches it soonest first)."""

    runs: list[Running]
    taken: set[str]
    now: float
    min_runtime: float

    @classmethod
    def of(cls, running: list[Running], now: float, min_runtime: float) -> _Victims:
        def order(run: Running) -> tuple:
            ready = now - run.started >= min_runtime
            return (run.priority, not ready, -run.started if ready else run.started, run.run_id)

        candidates = [r for r in running if r.preemptible and r.stoppable and not r.preempting]
        return cls(sorted(candidates, key=order), set(), now, min_runtime)

    def ready_in(self, run: Running) -> float:
        return max(self.min_runtime - (self.now - run.started), 0.0)


def decide(
    state: ClusterState, running: list[Running], pending: list[Pending], now: float
) -> Decision:
    """Admit what fits, in fair-share order; preempt borrowers for a team below its
    nominal quota or its fair share (and lower priorities, where the cluster enables it);
    say why each run of ``pending`` not admitted waits. ``pending`` may be only the head
    of each team's queue (the caller bounds it: at least ``capacity.slots`` runs per team);
    order within it does not matter. A cluster without quotas admits as today: priority,
    then submit time, never preempting, unless it enables priority preemption (then every
    run is of a team with no quota: each may use what is idle, and a higher priority
    preempts a lower one)."""
    if not state.quotas and not state.priority_preemption:
        return _fifo(state, running, pending)
    return _Decider(state, running, pending, now).run()


def _fifo(state: ClusterState, running: list[Running], pending: list[Pending]) -> Decision:
    """A cluster without quotas admits as it always has: priority, then submit time."""
    decision = Decision()
    free = state.capacity.slots - sum(r.demand.slots for r in running)
    ordered = sorted(pending, key=lambda r: (-r.priority, r.submitted, r.run_id))
    for place, run in enumerate(ordered):
        if free >= max(run.demand.slots, 1) or (run.demand.slots == 0 and free > 0):
            decision.admit.append(run.run_id)
            free -= run.demand.slots
        else:
            ahead = place - len(decision.admit)
            decision.reasons[run.run_id] = (
                f"waiting behind {ahead} run(s)"
                if ahead
                else f"all {state.capacity.slots} slot(s) busy"
            )
    return decision


class _Decider:
    """One call of ``decide`` on a cluster with quotas, phase by phase."""

    def __init__(
        self, state: ClusterState, running: list[Running], pending: list[Pending], now: float
    ) -> None:
        self.state, self.now = state, now
        self.book = _Book(state, running)
        self.running = running
        self.decision = Decision()
        self.queues: dict[str, list[Pending]] = {}
        for run in pending:
            self.queues.setdefault(run.team, []).append(run)
        aging = state.aging_seconds
        for runs in self.queues.values():
            runs.sort(key=lambda r: (-effective_priority(r, now, aging), r.submitted, r.run_id))
        self.next: dict[str, int] = dict.fromkeys(self.queues, 0)  # first not yet decided
        self.waiting: dict[str, Pending] = {}  # run id -> run, each given a reason
        self.reclaiming: dict[str, list[Pending]] = {}  # team -> its runs waiting for room
        self.taker: str | None = None  # the last team that borrowed capacity in this call
        self.victims = _Victims.of(running, now, state.min_runtime)
        # Capacity already on its way back: runs being preempted, not yet stopped.
        self.incoming = sorted((r for r in running if r.preempting), key=lambda r: r.started)
        self.wake: list[float] = []
        self.fair = self.fair_shares()

    def run(self) -> Decision:
        self.guaranteed()
        self.reclaim()
        self.borrow()
        if self.state.quotas:  # without quotas no team has a share to take back
            self.fair_reclaim()
        if self.state.priority_preemption:
            self.by_priority()
        self.explain()
        if self.wake:
            self.decision.wake_at = self.now + min(self.wake)
        return self.decision

    def demand(self, run: Pending) -> Resources:
        return self.book.norm(run.demand)

    def admit(self, run: Pending) -> None:
        self.book.take(run.team, self.demand(run), run.preemptible)
        self.decision.admit.append(run.run_id)
        self.next[run.team] += 1

    def heap(self, teams: list[str]) -> list[tuple[tuple[int, float, str], str]]:
        heap = [(self.book.key(t), t) for t in teams]
        heapq.heapify(heap)
        return heap

    def guaranteed(self) -> None:
        """Phase 1: every run within its team's nominal quota that fits, teams in
        fair-share order (recomputed after each admission). A team whose next run is
        within its quota but finds the cluster full reclaims (phase 2)."""
        heap = self.heap(list(self.queues))
        while heap:
            _, team = heapq.heappop(heap)
            runs = self.queues[team]
            if self.next[team] >= len(runs):
                continue
            run = runs[self.next[team]]
            demand = self.demand(run)
            if not self.book.within_nominal(team, demand):
                continue
            if demand.fits_in(self.book.free()):
                self.admit(run)
                heapq.heappush(heap, (self.book.key(team), team))
                continue
            claim, held = [], self.book.used_by(team)
            for waiting in runs[self.next[team] :]:
                held += self.demand(waiting)
                if not held.fits_in(self.book.nominal_of(team)):
                    break
                claim.append(waiting)
            self.reclaiming[team] = claim

    def reclaim(self) -> None:
        """Phase 2: room for the runs of teams below their nominal quota, in fair-share
        order: what is free, then what runs already being preempted give back, then
        victims among borrowers (never taking one below its nominal quota)."""
        free = _floor0(self.book.free())
        for team in sorted(self.reclaiming, key=self.book.key):
            for run in self.reclaiming[team]:
                need = self.demand(run)
                share = _least(free, need)
                free, need = free - share, need - share
                if self.from_incoming(run, need) or self.from_borrower(run, need):
                    self.next[team] += 1
                    continue
                break  # nothing left to reclaim: this run and those after it wait

    def from_incoming(self, run: Pending, need: Resources) -> bool:
        """Room from runs already stopping (any team's): counted, never preempted twice."""
        names = []
        while self.incoming and not need.fits_in(Resources()):
            stopping = self.incoming.pop(0)
            need = _floor0(need - self.book.norm(stopping.demand))
            names.append(stopping)
        if not need.fits_in(Resources()):
            self.incoming[:0] = names
            return False
        if names:
            slots = sum(self.book.norm(r.demand).slots for r in names)
            teams = ", ".join(sorted({_label(r.team) for r in names}))
            ids = ", ".join(r.run_id for r in names)
            self.wait(run, f"will reclaim {slots} slot(s) from {teams} (run {ids} is stopping)")
        else:
            self.wait(run, "about to start")
        return True

    def from_borrower(self, run: Pending, need: Resources) -> bool:
        """A victim among borrowers for one waiting run of a team below its quota: first
        among teams that stay at or above their fair share without it (else a team
        pushed below its share would take a slot back from a third one at once), then
        among any borrower."""
        book = self.book
        for beyond_share in (True, False):
            for victim in self.victims.runs:
                if victim.run_id in self.victims.taken or victim.team == run.team:
                    continue
                left = book.used_by(victim.team) - book.leaving.get(victim.team, Resources())
                after = left - book.norm(victim.demand)
                if not book.nominal_of(victim.team).fits_in(after):
                    continue
                if beyond_share and after.slots < self.fair.get(victim.team, 0.0):
                    continue
                self.choose(victim, run, f"reclaimed by team {run.team} ({book.held(run.team)} "
                            "of its quota in use)", "reclaim")  # fmt: skip
                return True
        return False

    def choose(self, victim: Running, run: Pending, reason: str, kind: str) -> None:
        """``victim`` makes room for ``run``: preempted now if it has run long enough,
        else ``run`` says when."""
        book = self.book
        demand = book.norm(victim.demand)
        self.victims.taken.add(victim.run_id)
        book.leaving[victim.team] = book.leaving.get(victim.team, Resources()) + demand
        wait = self.victims.ready_in(victim)
        when = f" in {math.ceil(wait)} s" if wait > 0 else ""
        if kind == "reclaim":
            text = (f"will reclaim {demand.slots} slot(s) from {_label(victim.team)} "
                    f"(preempting run {victim.run_id}{when})")  # fmt: skip
        else:
            text = (f"will preempt {_whose(victim.run_id, victim.team)} (priority "
                    f"{victim.priority} < {run.priority}){when}")  # fmt: skip
        self.wait(run, text)
        if wait > 0:
            self.wake.append(wait)
            return
        self.decision.preempt.append(Preemption(victim.run_id, run.team, run.run_id, reason))

    def wait(self, run: Pending, reason: str) -> None:
        self.decision.reasons[run.run_id] = reason
        self.waiting[run.run_id] = run

    def passed_over(self, team: str, run: Pending) -> bool:
        """A non-preemptible run its team's quota cannot hold (its non-preemptible runs
        fill it) waits, and the team's runs behind it go on: its preemptible runs may
        still borrow or reclaim. Every phase passes it over alike, so a decision never
        depends on how many such runs wait (admission reads each kind's head apart)."""
        if self.book.may_hold(team, run):
            return False
        self.wait(run, f"non-preemptible: limited to {_label(team)}'s quota "
                  f"({self.book.held_fixed(team)})")  # fmt: skip
        self.next[team] += 1
        return True

    def borrow(self) -> None:
        """Phase 3: capacity left over goes to runs beyond their team's quota that may
        borrow, teams in fair-share order; non-preemptible runs of a team together stay
        within its quota."""
        book = self.book
        heap = [(self.borrow_key(t), t) for t in self.queues if t not in self.reclaiming]
        heapq.heapify(heap)
        while heap:
            _, team = heapq.heappop(heap)
            runs = self.queues[team]
            if self.next[team] >= len(runs):
                continue
            run = runs[self.next[team]]
            demand = self.demand(run)
            if self.passed_over(team, run):
                heapq.heappush(heap, (self.borrow_key(team), team))
                continue
            if demand.fits_in(book.free()) and book.may_borrow(team, demand):
                self.admit(run)
                self.taker = team
                heapq.heappush(heap, (self.borrow_key(team), team))

    def borrow_key(self, team: str) -> tuple:
        """Idle capacity goes first to teams below their fair share of the cluster now,
        then to the others; each group in fair-share (usage) order. Without quotas (a
        cluster that only preempts by priority) it goes as it always has: to the next run
        by priority, then submit time, whatever its team."""
        if not self.state.quotas:
            runs, at = self.queues[team], self.next[team]
            if at >= len(runs):
                return (0, 0.0, "")
            run = runs[at]
            return (-effective_priority(run, self.now, self.state.aging_seconds),
                    run.submitted, run.run_id)  # fmt: skip
        return (self.book.used_by(team).slots >= self.fair.get(team, 0.0) - _EPSILON,
                self.book.key(team))  # fmt: skip

    def fair_shares(self) -> dict[str, float]:
        """Each team's fair share of the cluster's slots now, in whole slots: capacity
        spread in proportion to the nominal quotas among the teams that want it, no team
        given more than it wants (what it holds, plus its waiting runs: non-preemptible
        ones only within its quota; within its borrowing limit), what one leaves spread
        over the others; teams without a quota share only what the others leave."""
        book = self.book
        wanted: dict[str, float] = {}
        for team in set(self.queues) | set(book.used):
            held, nominal = book.used_by(team).slots, book.nominal_of(team).slots
            runs = self.queues.get(team, [])
            free = sum(r.demand.slots for r in runs if r.preemptible)
            fixed = sum(r.demand.slots for r in runs if not r.preemptible)
            fixed_held = book.fixed.get(team, Resources()).slots
            want = held + free + min(fixed, max(nominal - fixed_held, 0))
            quota = book.quotas.get(team)
            if quota and quota.borrowing_limit is not None:
                want = min(want, max(nominal + quota.borrowing_limit.slots, held))
            wanted[team] = float(want)
        weights = {t: float(book.nominal_of(t).slots) for t in wanted}
        share = water_fill(wanted, weights, float(book.capacity.slots))
        # Whole slots: each team its share rounded down, the slots left over one each to
        # the largest remainders (ties: fair-share order, so usage decides).
        whole = {t: math.floor(v + _EPSILON) for t, v in share.items()}
        left = book.capacity.slots - sum(whole.values())
        order = sorted(
            (t for t in share if share[t] - whole[t] > _EPSILON),
            key=lambda t: (-(share[t] - whole[t]), book.key(t)),
        )
        for team in order[: max(left, 0)]:
            whole[team] += 1
        return {t: float(v) for t, v in whole.items()}

    def fair_reclaim(self) -> None:
        """Phase 4: a team below its fair share whose runs may borrow takes capacity back
        from borrowers above theirs (never below their fair share or nominal quota): one
        team's long runs on capacity another lent do not keep a third team out of its
        share once that team's work arrives. Whole slots only, so two teams never take
        the same slot back and forth."""
        book = self.book
        for team in sorted(self.queues, key=book.key):
            if team in self.reclaiming:
                continue
            runs = self.queues[team]
            target = self.fair.get(team, 0.0)
            held = book.used_by(team).slots
            while self.next[team] < len(runs):
                run = runs[self.next[team]]
                if self.passed_over(team, run):
                    continue
                demand = self.demand(run)
                if held + demand.slots > target:
                    break
                if not (self.from_incoming(run, demand) or self.from_above_share(run)):
                    break
                held += demand.slots
                self.next[team] += 1

    def from_above_share(self, run: Pending) -> bool:
        book = self.book
        for victim in self.victims.runs:
            if victim.run_id in self.victims.taken or victim.team == run.team:
                continue
            freed = book.norm(victim.demand)
            left = book.used_by(victim.team) - book.leaving.get(victim.team, Resources())
            after = left - freed
            floor_share = self.fair.get(victim.team, 0.0)
            if after.slots < floor_share or not book.nominal_of(victim.team).fits_in(after):
                continue
            if not self.starts_without(victim, run):
                continue
            fair = self.fair.get(run.team, 0.0)
            reason = (f"reclaimed by team {run.team} for its fair share "
                      f"({book.used_by(run.team).slots} of {fair:.0f} slots in use)")  # fmt: skip
            self.choose(victim, run, reason, "reclaim")
            return True
        return False

    def starts_without(self, victim: Running, run: Pending) -> bool:
        """Would ``run`` start once ``victim`` is gone (quotas and capacity)?"""
        book = self.book
        demand, freed = self.demand(run), book.norm(victim.demand)
        book.used[victim.team] = book.used_by(victim.team) - freed
        book.total -= freed
        fits = demand.fits_in(book.free()) and (
            book.within_nominal(run.team, demand)
            or (book.may_hold(run.team, run) and book.may_borrow(run.team, demand))
        )
        book.used[victim.team] = book.used_by(victim.team) + freed
        book.total += freed
        return fits

    def by_priority(self) -> None:
        """Where the cluster enables it: a waiting run preempts a running one of strictly
        lower priority of its own team, or of a team above its nominal quota."""
        book = self.book
        for team in sorted(self.queues, key=book.key):
            runs = self.queues[team]
            while self.next[team] < len(runs):
                run = runs[self.next[team]]
                if run.run_id in self.waiting:
                    break
                if self.passed_over(team, run):
                    continue
                if not self.priority_victim(run):
                    break
                self.next[team] += 1

    def priority_victim(self, run: Pending) -> bool:
        book = self.book
        for victim in self.victims.runs:
            if victim.priority >= run.priority:
                return False
            if victim.run_id in self.victims.taken:
                continue
            left = book.used_by(victim.team) - book.leaving.get(victim.team, Resources())
            after = left - book.norm(victim.demand)
            if victim.team != run.team and not book.nominal_of(victim.team).fits_in(after):
                continue
            if not self.starts_without(victim, run):
                continue
            reason = (f"preempted by {_whose(run.run_id, run.team)} (priority "
                      f"{run.priority} > {victim.priority})")  # fmt: skip
            self.choose(victim, run, reason, "priority")
            return True
        return False

    def explain(self) -> None:
        """A reason for every waiting run not given one yet: its team's first names the
        rule that holds it; the others wait behind it."""
        book = self.book
        slots = book.capacity.slots
        admitted = set(self.decision.admit)
        for team, runs in self.queues.items():
            ahead = 0
            first = True
            for run in runs:
                if run.run_id in admitted:
                    continue
                if run.run_id in self.waiting:
                    ahead += 1
                    continue
                if not first:
                    self.decision.reasons[run.run_id] = (
                        f"waiting behind {ahead} run(s) of {_label(team)}"
                    )
                    ahead += 1
                    continue
                first = False
                ahead += 1
                demand = self.demand(run)
                block = book.borrow_block(team, demand)
                full = not demand.fits_in(book.free())
                if book.within_nominal(team, demand):
                    reason = f"all {slots} slot(s) busy"
                elif not book.may_hold(team, run):
                    reason = (f"non-preemptible: limited to {_label(team)}'s quota "
                              f"({book.held_fixed(team)})")  # fmt: skip
                elif block == "limit":
                    reason = f"{_label(team)} at quota ({book.held(team)})"
                    if book.used_by(team).slots > book.nominal_of(team).slots:
                        reason = reason[:-1] + ", its borrowing limit)"
                elif full and self.taker is not None and self.taker != team:
                    reason = self.behind(team)
                elif full:
                    reason = f"all {slots} slot(s) busy"
                elif not team:
                    reason = "runs of no team only borrow idle capacity, and no team lends more"
                else:
                    reason = f"{_label(team)} at quota ({book.held(team)})"
                    if book.used_by(team).slots > book.nominal_of(team).slots:
                        reason = reason[:-1] + ", all that others lend)"
                self.decision.reasons[run.run_id] = reason

    def behind(self, team: str) -> str:
        ratio = self.book.share_ratio(team)
        if self.book.nominal_of(team).slots <= 0:
            detail = "no quota: it borrows last"
        else:
            detail = f"usage {ratio:.1f}{TIMES} its share"
        return f"behind {_label(self.taker or '')} by fair share ({detail})"
