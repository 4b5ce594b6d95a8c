"""The team scheduler's decision for one cluster: which waiting runs start, which running
runs are preempted to give capacity back, and why every other waiting run waits.

Pure: no database, no Redis, no clock of its own (``now`` is an argument, in seconds), so
the service (``scheduler.admission``) and the simulator (``bench/scheduling.py``) run the
very same code. The rules and the fair-share formula are in ``docs/scheduling.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    its way back; never chosen again)."""

    run_id: str
    team: str
    priority: int
    started: float
    demand: Resources
    preemptible: bool = True
    preempting: bool = False


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


def decide(
    state: ClusterState, running: list[Running], pending: list[Pending], now: float
) -> Decision:
    """Admit what fits, in fair-share order; preempt borrowers for a team below its
    nominal quota (and lower priorities, where the cluster enables it); say why each run
    of ``pending`` not admitted waits. ``pending`` may be only the head of each team's
    queue (the caller bounds it); order within it does not matter."""
    raise NotImplementedError
