"""Admission on a cluster shared by teams (``scheduler/admission.py`` with
``scheduler/policy.py``): quotas, borrowing of idle capacity, reclaim by preemption recorded
on the victim and signalled after the commit, the minimum runtime, non-preemptible runs,
fair share after a burst, every waiting run's reason in the queue listing, and the per-team
figures of the cluster's view and ``/metrics``. A cluster without quotas admits as before."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import redis
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine
from sqlmodel import Session

from api.metrics import RunyardCollector
from protocol import control, keys, pending_reasons
from protocol.workers import WorkerInfo, live_workers, publish_heartbeat
from runyard.status import RunStatus
from scheduler.service import admit_and_send, dispatch_cluster
from store import run_listings, team_status
from store.clusters import get_cluster
from store.models import Cluster, Team, TeamQuota, TeamUsage, utcnow
from tests.support.database import (
    CLUSTER,
    ago,
    heartbeat,
    make_cluster,
    queue_run,
    reload,
    set_columns,
    walk,
)

RUNNING = (RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING)


def teams(session: Session, **quotas: dict[str, int | None]) -> None:
    """Teams with their quotas on CLUSTER (``slots``, ``borrowing_slots``...), committed."""
    for name, fields in quotas.items():
        session.add(Team(name=name))
        session.flush()
        session.add(TeamQuota(cluster=CLUSTER, team=name, **fields))
    session.commit()


def submit(
    session: Session, team: str | None, n: int, *, start: float = 600, **columns: object
) -> list[str]:
    """``n`` runs of ``team`` submitted a second apart, ``start`` seconds ago."""
    base = ago(start)
    ids = [queue_run(session, created_at=base + timedelta(seconds=i)) for i in range(n)]
    for run_id in ids:
        set_columns(session, run_id, team=team, **columns)
    return ids


def dispatch(session: Session, client: redis.Redis, celery: Celery) -> list[str]:
    return dispatch_cluster(session, celery, CLUSTER, live_workers(client), client=client)


def running_since(session: Session, run_ids: list[str], seconds: float) -> None:
    """The handed-over runs are running, their attempt started ``seconds`` ago."""
    for run_id in run_ids:
        walk(session, run_id, *RUNNING)
        set_columns(session, run_id, dispatched_at=ago(seconds))


def reasons(session: Session, client: redis.Redis) -> dict[str, str]:
    waiting = run_listings.queued_runs(session, client, CLUSTER)
    return {r.id: r.pending_reason or "" for r in waiting if r.position}


def test_a_team_at_its_quota_waits_when_it_may_not_borrow(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=4)
    heartbeat(client, CLUSTER, slots=4)
    teams(session, vision={"slots": 2, "borrowing_slots": 0}, nlp={"slots": 2})
    ids = submit(session, "vision", 4)

    assert dispatch(session, client, celery) == ids[:2]

    why = reasons(session, client)
    assert why[ids[2]] == "team vision at quota (2/2 slots)"
    assert why[ids[3]] == "waiting behind 1 run(s) of team vision"


def test_idle_capacity_of_other_teams_is_borrowed(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=4)
    heartbeat(client, CLUSTER, slots=4)
    teams(session, vision={"slots": 2}, nlp={"slots": 2})
    ids = submit(session, "vision", 5)

    assert dispatch(session, client, celery) == ids[:4]

    view = {t.team: t for t in team_status.team_status(session, get(session), [], utcnow())}
    assert (view["vision"].used_slots, view["vision"].borrowed_slots) == (4, 2)
    assert (view["nlp"].used_slots, view["nlp"].lent_slots) == (0, 2)
    assert view["vision"].waiting == 1


def test_a_team_below_its_quota_reclaims_borrowed_slots_by_preemption(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=4, preemption_min_runtime_seconds=60)
    heartbeat(client, CLUSTER, slots=4)
    teams(session, vision={"slots": 2}, nlp={"slots": 2})
    borrowers = submit(session, "vision", 4, start=900)
    assert dispatch(session, client, celery) == borrowers
    # The later-started borrowers go first (most recently started).
    running_since(session, borrowers[:2], 600)
    running_since(session, borrowers[2:], 300)
    theirs = submit(session, "nlp", 2, start=10)

    assert dispatch(session, client, celery) == []  # no free slot until the victims stop

    victims = [reload(engine, run_id) for run_id in borrowers[2:]]
    for victim in victims:
        assert victim.preempt_requested_at is not None
        assert victim.preempted_by in theirs
        assert victim.preemption_reason == "reclaimed by team nlp (0/2 slots of its quota in use)"
        assert control.is_preemption_requested(client, victim.id, victim.attempt)
    for kept in borrowers[:2]:
        assert reload(engine, kept).preempt_requested_at is None
    why = reasons(session, client)
    assert why[theirs[0]].startswith("will reclaim 1 slot(s) from team vision (preempting run ")
    # Decided again, the runs already stopping are counted, never preempted twice; a mark
    # lost between the commit and Redis is set again.
    client.delete(keys.run_preempt(victims[0].id, victims[0].attempt))
    assert dispatch(session, client, celery) == []
    assert control.is_preemption_requested(client, victims[0].id, victims[0].attempt)
    assert reasons(session, client)[theirs[0]].startswith("will reclaim 1 slot(s) from team")
    assert sum(reload(engine, r).preempt_requested_at is not None for r in borrowers) == 2


def test_no_run_is_preempted_before_the_minimum_runtime(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2, preemption_min_runtime_seconds=3600)
    heartbeat(client, CLUSTER, slots=2)
    teams(session, vision={"slots": 1}, nlp={"slots": 1})
    borrowers = submit(session, "vision", 2)
    assert dispatch(session, client, celery) == borrowers
    running_since(session, borrowers, 60)
    (theirs,) = submit(session, "nlp", 1, start=5)

    decided = admit_and_send(
        session, celery, CLUSTER, live_workers(client), client=client, now=utcnow()
    )

    assert decided.assignments == [] and decided.preemptions == []
    assert all(reload(engine, r).preempt_requested_at is None for r in borrowers)
    reason = reasons(session, client)[theirs]
    assert reason.startswith("will reclaim 1 slot(s) from team vision (preempting run ")
    assert reason.endswith(" s)")  # "... in 3540 s)"
    assert decided.wake_at is not None  # the scheduler decides again then


def test_a_non_preemptible_run_stays_within_its_quota_and_is_never_preempted(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=3, preemption_min_runtime_seconds=0)
    heartbeat(client, CLUSTER, slots=3)
    teams(session, vision={"slots": 1}, nlp={"slots": 2})
    kept, extra = submit(session, "vision", 2, start=900, preemptible=False)
    borrowers = submit(session, "vision", 2, start=800)

    assert dispatch(session, client, celery) == [kept, *borrowers]
    assert reasons(session, client)[extra].startswith(
        "non-preemptible: limited to team vision's quota (1/1 slots"
    )
    running_since(session, [kept, *borrowers], 300)
    submit(session, "nlp", 2, start=5)
    dispatch(session, client, celery)

    assert reload(engine, kept).preempt_requested_at is None
    assert all(reload(engine, r).preempt_requested_at is not None for r in borrowers)


def test_after_a_burst_the_team_that_used_less_goes_first(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Equal quotas, one slot beyond them: it goes to the team that used the cluster less
    lately, though the other's burst was submitted first (FIFO would give it all three)."""
    make_cluster(session, nodes=3)
    heartbeat(client, CLUSTER, slots=3)
    teams(session, vision={"slots": 1}, nlp={"slots": 1})
    session.add(TeamUsage(cluster=CLUSTER, team="vision", slot_seconds=10 * 86400, as_of=utcnow()))
    session.commit()
    burst = submit(session, "vision", 4, start=900)
    later = submit(session, "nlp", 4, start=60)

    sent = dispatch(session, client, celery)

    assert set(sent) == {burst[0], *later[:2]}
    assert "fair share" in reasons(session, client)[burst[1]]


def test_runs_of_no_team_only_borrow(session: Session, client: redis.Redis, celery: Celery) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    teams(session, vision={"slots": 1, "lending_slots": 0}, nlp={"slots": 1})
    ids = submit(session, None, 3)

    assert dispatch(session, client, celery) == ids[:1]  # only nlp lends
    assert reasons(session, client)[ids[1]].startswith("runs of no team")


def test_a_cluster_without_quotas_admits_by_priority_whatever_the_teams(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    session.add(Team(name="vision"))
    session.commit()
    ids = submit(session, "vision", 3)

    assert dispatch(session, client, celery) == ids[:2]
    assert reasons(session, client)[ids[2]] == "all 2 node(s) busy"
    assert not client.exists(keys.cluster_reasons(CLUSTER))


def test_runs_beyond_the_head_of_their_teams_queue_say_how_many_are_ahead(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=1)
    heartbeat(client, CLUSTER, slots=1)
    teams(session, vision={"slots": 1})
    ids = submit(session, "vision", 8)  # read: capacity + 2 of them

    dispatch(session, client, celery)

    decided = pending_reasons.read(client, CLUSTER, ids)
    assert ids[7] not in decided
    assert reasons(session, client)[ids[7]] == "waiting behind 6 run(s) of team vision"


def test_the_clusters_view_and_metrics_show_each_team(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=3)
    heartbeat(client, CLUSTER, slots=3)
    teams(session, vision={"slots": 1}, nlp={"slots": 2})
    submit(session, "vision", 4)
    dispatch(session, client, celery)

    registry = CollectorRegistry()
    registry.register(RunyardCollector(SimpleNamespace(engine=engine, redis=client)))
    text = generate_latest(registry).decode()

    for line in (
        f'runyard_team_quota_slots{{cluster="{CLUSTER}",team="vision"}} 1.0',
        f'runyard_team_used_slots{{cluster="{CLUSTER}",team="vision"}} 3.0',
        f'runyard_team_borrowed_slots{{cluster="{CLUSTER}",team="vision"}} 2.0',
        f'runyard_team_lent_slots{{cluster="{CLUSTER}",team="nlp"}} 2.0',
        f'runyard_team_waiting_runs{{cluster="{CLUSTER}",team="vision"}} 1.0',
        f'runyard_preemptions_total{{cluster="{CLUSTER}",team="vision"}} 0.0',
    ):
        assert line in text
    assert 'runyard_team_fair_share_ratio{cluster="gpu-a",team="nlp"} 0.0' in text


@pytest.mark.parametrize("gpus", [0, 8])
def test_a_run_needs_the_gpus_of_one_slot(
    session: Session, client: redis.Redis, celery: Celery, gpus: int
) -> None:
    make_cluster(session, nodes=4)
    publish_heartbeat(
        client,
        WorkerInfo(id="w-g", hostname="gpu-1", clusters=[CLUSTER], slots=4, gpus=gpus),
        ttl=3600,
    )
    teams(session, vision={"slots": 2, "gpus": 4 if gpus else None}, nlp={"slots": 2})
    ids = submit(session, "vision", 3)

    assert dispatch(session, client, celery) == ids[:3]
    (vision,) = [
        t
        for t in team_status.team_status(session, get(session), live_workers(client), utcnow())
        if t.team == "vision"
    ]
    assert (vision.used_slots, vision.used_gpus) == (3, 3 * gpus // 4)


def get(session: Session) -> Cluster:
    return get_cluster(session, CLUSTER)


def test_runs_of_a_team_with_no_record_or_quota_are_seen_and_borrow(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """A run charged to a team the cluster has no quota for (its record even gone) is
    found by admission all the same: it borrows idle capacity like runs of no team."""
    make_cluster(session, nodes=2)
    heartbeat(client, CLUSTER, slots=2)
    teams(session, vision={"slots": 1})
    ids = submit(session, "ghost", 3)

    assert dispatch(session, client, celery) == ids[:2]  # idle: vision's and no one's
    assert reasons(session, client)[ids[2]]


def test_a_run_handed_over_but_not_yet_on_a_node_is_not_chosen_as_a_victim(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2, preemption_min_runtime_seconds=0)
    heartbeat(client, CLUSTER, slots=2)
    teams(session, vision={"slots": 1}, nlp={"slots": 1})
    borrowers = submit(session, "vision", 2)
    assert dispatch(session, client, celery) == borrowers  # handed over, not claimed
    submit(session, "nlp", 1, start=5)

    decided = admit_and_send(session, celery, CLUSTER, live_workers(client), client=client)

    assert decided.preemptions == []
    assert all(reload(engine, r).preempt_requested_at is None for r in borrowers)


def test_where_the_cluster_enables_it_a_higher_priority_preempts_a_lower_one(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=2, priority_preemption=True, preemption_min_runtime_seconds=0)
    heartbeat(client, CLUSTER, slots=2)
    teams(session, vision={"slots": 2})
    low = submit(session, "vision", 2, start=900)
    assert dispatch(session, client, celery) == low
    running_since(session, low, 300)
    (urgent,) = submit(session, "vision", 1, start=5)
    set_columns(session, urgent, priority=5)

    dispatch(session, client, celery)

    chosen = [reload(engine, r) for r in low if reload(engine, r).preempt_requested_at]
    assert [v.preempted_by for v in chosen] == [urgent]
    assert (
        chosen[0].preemption_reason == f"preempted by run {urgent} of team vision (priority 5 > 0)"
    )


def test_a_cluster_without_quotas_that_enables_it_preempts_by_priority(
    engine: Engine, session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=1, priority_preemption=True, preemption_min_runtime_seconds=0)
    heartbeat(client, CLUSTER, slots=1)
    low = submit(session, None, 1, start=900)
    assert dispatch(session, client, celery) == low
    running_since(session, low, 300)
    (urgent,) = submit(session, None, 1, start=5)
    set_columns(session, urgent, priority=5)
    (late,) = submit(session, None, 1, start=1)  # priority 0: never preempts its equal

    assert dispatch(session, client, celery) == []  # the slot comes free once it stops

    victim = reload(engine, low[0])
    assert victim.preempted_by == urgent
    assert victim.preemption_reason == f"preempted by run {urgent} (priority 5 > 0)"
    assert control.is_preemption_requested(client, victim.id, victim.attempt)
    assert reload(engine, late).preempt_requested_at is None


def test_without_quotas_priority_preemption_still_admits_by_priority_then_submit_time(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Whatever the teams' past usage: without quotas no team has a share to favour."""
    make_cluster(session, nodes=1, priority_preemption=True, preemption_min_runtime_seconds=0)
    heartbeat(client, CLUSTER, slots=1)
    for name in ("a", "b"):
        session.add(Team(name=name))
    session.flush()
    session.add(
        TeamUsage(cluster=CLUSTER, team="a", slot_seconds=1e6, gpu_seconds=0.0, as_of=utcnow())
    )
    session.commit()
    (urgent,) = submit(session, "a", 1, start=900)
    set_columns(session, urgent, priority=5)
    submit(session, "b", 1, start=600)

    assert dispatch(session, client, celery) == [urgent]


def test_a_handed_over_preemptible_run_does_not_use_its_teams_non_preemptible_allowance(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    make_cluster(session, nodes=4)
    heartbeat(client, CLUSTER, slots=4)
    teams(session, vision={"slots": 1})
    first = submit(session, "vision", 1, start=900)
    assert dispatch(session, client, celery) == first  # handed over: Queued, no report yet
    fixed = submit(session, "vision", 1, start=600, preemptible=False)

    # vision holds no non-preemptible run: this one fits its quota of 1 (its preemptible
    # run borrows around it), and 3 slots are free.
    assert dispatch(session, client, celery) == fixed


def test_preemptible_runs_behind_non_preemptible_ones_use_the_idle_slots(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """More non-preemptible runs wait than admission reads ahead (capacity + 2): the
    preemptible runs submitted after them still borrow what nobody uses."""
    make_cluster(session, nodes=4)
    heartbeat(client, CLUSTER, slots=4)
    teams(session, vision={"slots": 1}, nlp={"slots": 3})
    fixed = submit(session, "vision", 8, start=900, preemptible=False)
    borrowers = submit(session, "vision", 3, start=600)

    assert dispatch(session, client, celery) == [fixed[0], *borrowers]
    assert reasons(session, client)[fixed[1]].startswith(
        "non-preemptible: limited to team vision's quota (1/1 slots"
    )


def test_a_run_raised_by_its_wait_starts_before_newer_runs_of_higher_priority(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Aging: waited six hours at priority 0, a run stands at 6 and goes before priority
    4, though more runs of priority 4 wait than admission reads ahead (capacity + 2)."""
    make_cluster(session, nodes=1, priority_aging_seconds=3600)
    heartbeat(client, CLUSTER, slots=1)
    teams(session, vision={"slots": 1})
    (old,) = submit(session, "vision", 1, start=6 * 3600 + 60)
    newer = submit(session, "vision", 3, start=600, priority=4)

    assert dispatch(session, client, celery) == [old]
    assert reasons(session, client)[newer[0]] == "all 1 slot(s) busy"


def test_borrowed_slots_are_shown_lent_by_the_idle_teams_in_proportion(
    session: Session, client: redis.Redis, celery: Celery
) -> None:
    """Which team lends a borrowed slot is not recorded: the cluster's view spreads the
    borrowed slots over the idle quotas in proportion, not all on the first name."""
    make_cluster(session, nodes=7)
    heartbeat(client, CLUSTER, slots=7)
    teams(session, audio={"slots": 4}, bio={"slots": 2}, vision={"slots": 1})
    assert len(dispatch(session, client, celery)) == 0
    submit(session, "vision", 4)
    assert len(dispatch(session, client, celery)) == 4

    view = {t.team: t for t in team_status.team_status(session, get(session), [], utcnow())}
    assert view["vision"].borrowed_slots == 3
    assert (view["audio"].lent_slots, view["bio"].lent_slots) == (2, 1)
