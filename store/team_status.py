"""Each team's standing on a cluster with quotas: its quota, what it uses now, what it
borrows beyond its quota and lends of it, its waiting runs and its recent usage against
its entitlement. Read by the cluster route, ``/metrics`` and the Studio alike; admission
reads the quotas here too. A few grouped counts along the queue indexes per cluster, never
its history (preemptions excepted: its attempts, ``ix_run_attempt_open``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, func, select

from protocol.workers import WorkerInfo, workers_serving
from runyard.status import ACTIVE, RunStatus
from store.attempts import PREEMPTED, decayed_usage
from store.models import Cluster, Run, RunAttempt, TeamQuota, TeamUsagePublic
from store.models.teams import ALLOCATION_WEIGHT_SECONDS, NO_TEAM
from store.queue import handed_to_broker


def cluster_quotas(session: Session, cluster: str) -> list[TeamQuota]:
    """The cluster's quotas, by team name (none: the cluster admits as before teams)."""
    query = select(TeamQuota).where(TeamQuota.cluster == cluster).order_by(col(TeamQuota.team))
    return list(session.exec(query))


def has_quotas(session: Session, cluster: str) -> bool:
    query = select(TeamQuota.team).where(TeamQuota.cluster == cluster).limit(1)
    return session.exec(query).first() is not None


def team_label(team: str | None) -> str:
    """How reasons name a team (runs of none have no team to name)."""
    return f"team {team}" if team else "runs of no team"


def clusters_with_quotas(session: Session) -> set[str]:
    return set(session.exec(select(TeamQuota.cluster).distinct()))


def gpus_per_slot(workers: list[WorkerInfo], cluster: str) -> int:
    """The GPUs each slot of the cluster owns (what one run needs): its serving workers'
    GPUs over their slots; 0 where their nodes have none."""
    serving = workers_serving(workers, cluster)
    slots = sum(w.slots for w in serving)
    return sum(w.gpus for w in serving) // slots if slots else 0


def team_of(run_team: str | None) -> str:
    return run_team or NO_TEAM


def used_by_team(session: Session, cluster: str) -> dict[str, int]:
    """Slots held per team (``store.queue.holding_a_slot``), as two grouped index ranges."""
    used: dict[str, int] = defaultdict(int)
    for where in (col(Run.status).in_(ACTIVE), handed_to_broker()):
        query = select(Run.team, func.count()).where(Run.cluster == cluster, where)
        for team, n in session.exec(query.group_by(col(Run.team))):
            used[team_of(team)] += int(n)
    return used


def waiting_by_team(session: Session, cluster: str) -> dict[str, int]:
    query = select(Run.team, func.count()).where(
        Run.cluster == cluster,
        Run.status == RunStatus.QUEUED,
        col(Run.dispatched_at).is_(None),
    )
    waiting: dict[str, int] = defaultdict(int)
    for team, n in session.exec(query.group_by(col(Run.team))):
        waiting[team_of(team)] += int(n)
    return waiting


def preemptions_by_team(session: Session, cluster: str) -> dict[str, int]:
    query = select(RunAttempt.team, func.count()).where(
        RunAttempt.cluster == cluster, RunAttempt.outcome == PREEMPTED
    )
    return {team_of(t): int(n) for t, n in session.exec(query.group_by(col(RunAttempt.team)))}


def fair_share_ratios(
    usage: dict[str, float], used: dict[str, int], quotas: list[TeamQuota]
) -> dict[str, float]:
    """Each team's share of the cluster's recent usage (decayed, plus its current
    allocation) over its share of the nominal quotas: 1 is exactly its entitlement. The
    ratio the policy's "behind team X by fair share (usage 1.8x its share)" names
    (docs/scheduling.md). Teams with no quota have none."""
    nominal = {q.team: q.slots for q in quotas}
    nominal_sum = sum(nominal.values())

    def weighed(team: str) -> float:
        return max(usage.get(team, 0.0), 0.0) + ALLOCATION_WEIGHT_SECONDS * used.get(team, 0)

    total = sum(weighed(t) for t in set(usage) | set(used) | set(nominal))
    if total <= 0 or nominal_sum <= 0:
        return {t: 0.0 for t, n in nominal.items() if n > 0}
    return {t: (weighed(t) / total) / (n / nominal_sum) for t, n in nominal.items() if n > 0}


def team_status(
    session: Session, cluster: Cluster, workers: list[WorkerInfo], now: datetime
) -> list[TeamUsagePublic]:
    """Each team's standing on ``cluster`` ([] where it has no quotas): every team with a
    quota there, and any other team (or runs of none) using or waiting for it."""
    quotas = cluster_quotas(session, cluster.name)
    if not quotas:
        return []
    per_slot = gpus_per_slot(workers, cluster.name)
    used = used_by_team(session, cluster.name)
    waiting = waiting_by_team(session, cluster.name)
    usage = decayed_usage(session, cluster, now)
    preempted = preemptions_by_team(session, cluster.name)
    ratios = fair_share_ratios(usage, used, quotas)
    nominal = {q.team: q.slots for q in quotas}
    teams = sorted(
        set(nominal) | {t for t, n in used.items() if n} | {t for t, n in waiting.items() if n}
    )
    borrowed = {t: max(used.get(t, 0) - nominal.get(t, 0), 0) for t in teams}
    lent = _lent(quotas, used, sum(borrowed.values()))
    return [
        TeamUsagePublic(
            team=team,
            quota_slots=nominal.get(team, 0),
            quota_gpus=_quota_gpus(quotas, team, per_slot),
            used_slots=used.get(team, 0),
            used_gpus=used.get(team, 0) * per_slot,
            borrowed_slots=borrowed[team],
            lent_slots=lent.get(team, 0),
            waiting=waiting.get(team, 0),
            usage_slot_seconds=round(usage.get(team, 0.0), 3),
            fair_share_ratio=None if team not in ratios else round(ratios[team], 4),
            preemptions=preempted.get(team, 0),
        )
        for team in teams
    ]


def _quota_gpus(quotas: list[TeamQuota], team: str, per_slot: int) -> int:
    for q in quotas:
        if q.team == team:
            return q.gpus if q.gpus is not None else q.slots * per_slot
    return 0


def _lent(quotas: list[TeamQuota], used: dict[str, int], borrowed: int) -> dict[str, int]:
    """Whose idle quota the borrowed slots are: spread over the teams' lendable idle quota
    (idle, within its lending limit) in proportion, in whole slots (the largest remainders
    first, ties by name). Which team lends a borrowed slot is not recorded, and every
    lender's idle quota lends alike, so none is shown lending all of it while another
    shows none."""
    lendable: dict[str, int] = {}
    for q in quotas:
        idle = max(q.slots - used.get(q.team, 0), 0)
        if q.lending_slots is not None:
            idle = min(idle, q.lending_slots)
        if idle > 0:
            lendable[q.team] = idle
    total = sum(lendable.values())
    if borrowed >= total:
        return lendable
    exact = {team: borrowed * idle / total for team, idle in lendable.items()}
    lent = {team: int(share) for team, share in exact.items()}
    rest = borrowed - sum(lent.values())
    for team in sorted(exact, key=lambda t: (lent[t] - exact[t], t))[:rest]:
        lent[team] += 1
    return lent
