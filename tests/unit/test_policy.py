"""The team scheduler's decision (``scheduler.policy.decide``): quotas, borrowing and
lending, fair share, aging, reclaim and priority preemption, and the reason each waiting
run is given. Pure: every case is a cluster state, running and waiting runs, and a time."""

from __future__ import annotations

from scheduler.policy import (
    ClusterState,
    Decision,
    Pending,
    Resources,
    Running,
    TeamQuota,
    decide,
)

NOW = 100_000.0
ONE = Resources(1)


def quota(
    team: str, slots: int, borrowing: int | None = None, lending: int | None = None
) -> TeamQuota:
    return TeamQuota(
        team,
        Resources(slots),
        None if borrowing is None else Resources(borrowing),
        None if lending is None else Resources(lending),
    )


def cluster(*quotas: TeamQuota, slots: int = 8, **settings: object) -> ClusterState:
    return ClusterState(
        capacity=Resources(slots),
        quotas={q.team: q for q in quotas},
        usage=settings.pop("usage", {}),  # type: ignore[arg-type]
        **settings,  # type: ignore[arg-type]
    )


def waiting(
    team: str, count: int, prefix: str = "", priority: int = 0, preemptible: bool = True
) -> list[Pending]:
    """``count`` runs of ``team``, submitted a second apart (the first first)."""
    prefix = prefix or team
    return [
        Pending(f"{prefix}{i}", team, priority, NOW - 100 + i, ONE, preemptible)
        for i in range(count)
    ]


def holding(
    team: str, count: int, prefix: str = "", started: float = NOW - 3600, priority: int = 0
) -> list[Running]:
    prefix = prefix or f"{team}-r"
    return [Running(f"{prefix}{i}", team, priority, started, ONE) for i in range(count)]


def preempted(decision: Decision) -> list[str]:
    return [p.run_id for p in decision.preempt]


def two_teams(**settings: object) -> ClusterState:
    return cluster(quota("vision", 4), quota("nlp", 4), **settings)


# --- quotas, borrowing, lending ----------------------------------------------------------


def test_a_team_that_may_not_borrow_stops_at_its_quota() -> None:
    state = cluster(quota("vision", 4, borrowing=0), quota("nlp", 4))
    decision = decide(state, [], waiting("vision", 6), NOW)
    assert decision.admit == ["vision0", "vision1", "vision2", "vision3"]
    assert decision.reasons == {
        "vision4": "team vision at quota (4/4 slots)",
        "vision5": "waiting behind 1 run(s) of team vision",
    }
    assert decision.preempt == []


def test_idle_capacity_is_borrowed_up_to_the_whole_cluster() -> None:
    decision = decide(two_teams(), [], waiting("vision", 10), NOW)
    assert len(decision.admit) == 8
    assert decision.reasons["vision8"] == "all 8 slot(s) busy"
    assert decision.reasons["vision9"] == "waiting behind 1 run(s) of team vision"


def test_capacity_no_quota_covers_is_lent_too() -> None:
    state = cluster(quota("vision", 2, lending=0), quota("nlp", 2, lending=0), slots=8)
    decision = decide(state, holding("vision", 2), waiting("nlp", 10), NOW)
    assert len(decision.admit) == 6  # its 2, and the 4 slots no quota covers


def test_a_lending_limit_keeps_the_rest_of_the_lenders_quota_idle() -> None:
    state = cluster(quota("vision", 4), quota("nlp", 4, lending=1))
    decision = decide(state, [], waiting("vision", 8), NOW)
    assert len(decision.admit) == 5
    assert decision.reasons["vision5"] == "team vision at quota (5/4 slots, all that others lend)"


def test_a_borrowing_limit_caps_what_a_team_borrows() -> None:
    state = cluster(quota("vision", 4, borrowing=1), quota("nlp", 4))
    decision = decide(state, [], waiting("vision", 8), NOW)
    assert len(decision.admit) == 5
    assert decision.reasons["vision5"] == "team vision at quota (5/4 slots, its borrowing limit)"


def test_borrowers_together_never_exceed_what_is_lent() -> None:
    state = cluster(quota("vision", 2), quota("nlp", 2), quota("audio", 4, lending=2))
    decision = decide(state, [], waiting("vision", 6) + waiting("nlp", 6), NOW)
    # 2 + 2 within quota, and 2 of audio's idle 4 between them.
    assert len(decision.admit) == 6


def test_a_non_preemptible_run_stays_within_its_teams_quota_and_others_pass_it() -> None:
    pending = [
        *waiting("vision", 5, preemptible=False),
        Pending("late", "vision", 0, NOW - 10, ONE, preemptible=True),
    ]
    decision = decide(two_teams(), [], pending, NOW)
    assert decision.admit == ["vision0", "vision1", "vision2", "vision3", "late"]
    assert decision.reasons == {
        "vision4": (
            "non-preemptible: limited to team vision's quota "
            "(4/4 slots held by its non-preemptible runs)"
        )
    }


def test_a_non_preemptible_run_starts_while_its_team_borrows_with_preemptible_ones() -> None:
    # vision holds 6 (4 of its quota, 2 borrowed), all preemptible: a non-preemptible run
    # still starts, since the team's preemptible runs are what may be taken back.
    running = holding("vision", 6)
    pending = waiting("vision", 1, prefix="fixed", preemptible=False)
    assert decide(two_teams(), running, pending, NOW).admit == ["fixed0"]
    running = [Running(f"np{i}", "vision", 0, NOW - 60, ONE, preemptible=False) for i in range(4)]
    decision = decide(two_teams(), running, pending, NOW)
    assert decision.admit == []
    assert decision.reasons["fixed0"].startswith("non-preemptible: limited to team vision's quota")


def test_runs_of_no_team_only_borrow() -> None:
    from store.models import NO_TEAM

    pending = waiting(NO_TEAM, 6, prefix="anon") + waiting("vision", 2)
    decision = decide(two_teams(), holding("nlp", 2), pending, NOW)
    # vision's two are within its quota: first; no team's borrow the rest (nlp lends 2).
    assert decision.admit[:2] == ["vision0", "vision1"]
    assert sorted(decision.admit[2:]) == ["anon0", "anon1", "anon2", "anon3"]
    assert decision.reasons["anon4"] == "all 8 slot(s) busy"


def test_runs_of_no_team_wait_when_nothing_is_lent() -> None:
    from store.models import NO_TEAM

    state = cluster(quota("vision", 4, lending=0), quota("nlp", 4, lending=0))
    decision = decide(state, [], waiting(NO_TEAM, 2, prefix="anon"), NOW)
    assert decision.admit == []
    assert decision.reasons["anon0"] == (
        "runs of no team only borrow idle capacity, and no team lends more"
    )


def test_gpus_count_where_the_cluster_has_them() -> None:
    gpu = Resources(1, 2)
    state = ClusterState(
        capacity=Resources(8, 8),
        quotas={"vision": TeamQuota("vision", Resources(4, 4), Resources(0, 0))},
        usage={},
    )
    pending = [Pending(f"g{i}", "vision", 0, NOW - 10 + i, gpu) for i in range(4)]
    decision = decide(state, [], pending, NOW)
    assert decision.admit == ["g0", "g1"]
    assert decision.reasons["g2"] == "team vision at quota (2/4 slots, 4/4 GPUs)"
    # Without GPUs on the cluster, a demand for GPUs is ignored.
    no_gpus = ClusterState(Resources(8), {"vision": TeamQuota("vision", Resources(4))}, {})
    assert len(decide(no_gpus, [], pending, NOW).admit) == 4


# --- order: fair share, priority, aging --------------------------------------------------


def test_idle_capacity_is_spread_between_teams_not_given_to_one() -> None:
    state = cluster(quota("vision", 2), quota("nlp", 2), slots=8)
    decision = decide(state, [], waiting("vision", 8) + waiting("nlp", 8), NOW)
    admitted = decision.admit
    assert len(admitted) == 8
    assert sum(r.startswith("vision") for r in admitted) == 4


def test_after_a_burst_the_team_that_used_less_goes_first() -> None:
    usage = {"nlp": 50 * 3600.0, "vision": 10 * 3600.0}
    state = cluster(quota("vision", 2), quota("nlp", 2), slots=5, usage=usage)
    decision = decide(state, [], waiting("nlp", 6) + waiting("vision", 6), NOW)
    # Each gets its quota first (vision first); the idle slot goes to vision, which used less.
    assert decision.admit == ["vision0", "vision1", "nlp0", "nlp1", "vision2"]
    assert decision.reasons["nlp2"].startswith("behind team vision by fair share (usage ")
    assert decision.reasons["nlp2"].endswith("\u00d7 its share)")
    assert decision.reasons["nlp3"] == "waiting behind 1 run(s) of team nlp"


def test_idle_capacity_goes_to_teams_below_their_fair_share_first() -> None:
    # vision used far less, but already holds its fair share of what both want now.
    usage = {"nlp": 50 * 3600.0, "vision": 0.0}
    state = cluster(quota("vision", 2), quota("nlp", 2), slots=8, usage=usage)
    running = holding("vision", 4) + holding("nlp", 2)
    decision = decide(state, running, waiting("nlp", 4) + waiting("vision", 4), NOW)
    assert decision.admit == ["nlp0", "nlp1"]


def test_a_team_below_its_fair_share_takes_back_from_one_above_it() -> None:
    # audio lent its idle quota; nlp borrowed all of it; vision's work arrives: vision is
    # at its quota but below its fair share (6 of 12), nlp above (10 of 8): one each way
    # until both hold their share, nlp never below it.
    state = cluster(quota("vision", 4), quota("nlp", 4), quota("audio", 4), slots=12)
    running = holding("vision", 4) + holding("nlp", 8)
    decision = decide(state, running, waiting("vision", 6) + waiting("nlp", 2), NOW)
    assert len(decision.preempt) == 2
    assert {p.by_team for p in decision.preempt} == {"vision"}
    assert decision.preempt[0].reason == (
        "reclaimed by team vision for its fair share (4 of 6 slots in use)"
    )
    assert decision.reasons["vision0"].startswith("will reclaim 1 slot(s) from team nlp")
    assert decision.reasons["vision2"] == "all 12 slot(s) busy"
    assert decision.reasons["vision3"] == "waiting behind 3 run(s) of team vision"
    # Once shares are even, nobody takes from anybody.
    running = holding("vision", 6) + holding("nlp", 6)
    decision = decide(state, running, waiting("vision", 6) + waiting("nlp", 2), NOW)
    assert decision.preempt == []


def test_fair_share_ratio_in_the_reason() -> None:
    usage = {"nlp": 9 * 3600.0, "vision": 1 * 3600.0}
    state = cluster(
        quota("vision", 4), quota("nlp", 4), slots=9, usage=usage, allocation_weight_seconds=0
    )
    decision = decide(state, holding("nlp", 4) + holding("vision", 4), waiting("nlp", 1) +
                      waiting("vision", 2), NOW)  # fmt: skip
    assert decision.admit == ["vision0"]
    # nlp: 90% of the usage for 50% of the quotas.
    assert (
        decision.reasons["nlp0"] == "behind team vision by fair share (usage 1.8\u00d7 its share)"
    )
    assert decision.reasons["vision1"] == "all 9 slot(s) busy"


def test_priority_then_submit_time_within_a_team() -> None:
    pending = [
        Pending("low-old", "vision", 0, NOW - 50, ONE),
        Pending("high", "vision", 2, NOW - 10, ONE),
        Pending("low-new", "vision", 0, NOW - 40, ONE),
    ]
    state = cluster(quota("vision", 2, borrowing=0), quota("nlp", 4))
    decision = decide(state, [], pending, NOW)
    assert decision.admit == ["high", "low-old"]


def test_waiting_raises_priority_so_no_run_waits_forever() -> None:
    pending = [
        Pending("patient", "vision", 0, NOW - 3 * 3600, ONE),  # aged 3 steps: priority 3
        Pending("urgent", "vision", 2, NOW - 10, ONE),
    ]
    state = cluster(quota("vision", 1, borrowing=0), quota("nlp", 4), aging_seconds=3600)
    assert decide(state, [], pending, NOW).admit == ["patient"]
    state = cluster(quota("vision", 1, borrowing=0), quota("nlp", 4), aging_seconds=0)
    assert decide(state, [], pending, NOW).admit == ["urgent"]


def test_without_quotas_the_queue_is_priority_then_submit_time() -> None:
    pending = [
        Pending("b", "nlp", 0, NOW - 50, ONE),
        Pending("a", "vision", 1, NOW - 10, ONE),
        Pending("c", "", 0, NOW - 40, ONE),
    ]
    decision = decide(cluster(slots=2), [], pending, NOW)
    assert decision.admit == ["a", "b"]
    assert decision.reasons == {"c": "all 2 slot(s) busy"}


# --- reclaim ------------------------------------------------------------------------------


def test_a_team_below_its_quota_reclaims_from_the_borrower() -> None:
    running = [
        Running("old-low", "nlp", 0, NOW - 7200, ONE),
        Running("new-low", "nlp", 0, NOW - 600, ONE),
        Running("newest-high", "nlp", 5, NOW - 300, ONE),
        *holding("nlp", 5, started=NOW - 9000, priority=3),
    ]
    decision = decide(two_teams(), running, waiting("vision", 2), NOW)
    assert decision.admit == []
    # Lowest priority first; of those, the most recently started first.
    assert preempted(decision) == ["new-low", "old-low"]
    first = decision.preempt[0]
    assert (first.by_team, first.by_run) == ("vision", "vision0")
    assert first.reason == "reclaimed by team vision (0/4 slots of its quota in use)"
    assert decision.reasons == {
        "vision0": "will reclaim 1 slot(s) from team nlp (preempting run new-low)",
        "vision1": "will reclaim 1 slot(s) from team nlp (preempting run old-low)",
    }


def test_reclaim_never_takes_a_borrower_below_its_quota_nor_more_than_the_gap() -> None:
    running = holding("nlp", 6) + holding("vision", 2)
    decision = decide(two_teams(), running, waiting("vision", 5), NOW)
    assert len(decision.preempt) == 2  # vision's gap is 2, nlp borrows 2
    assert decision.reasons["vision2"] == "all 8 slot(s) busy"
    assert decision.reasons["vision3"] == "waiting behind 3 run(s) of team vision"
    running = holding("nlp", 5) + holding("vision", 1) + holding("", 2, prefix="anon")
    decision = decide(two_teams(), running, waiting("vision", 5), NOW)
    assert sorted(preempted(decision)) == ["anon0", "anon1", "nlp-r0"]


def test_capacity_already_being_freed_is_not_preempted_again() -> None:
    running = [
        *holding("nlp", 6),
        Running("going", "nlp", 0, NOW - 500, ONE, preempting=True),
        Running("going2", "nlp", 0, NOW - 400, ONE, preempting=True),
    ]
    decision = decide(two_teams(), running, waiting("vision", 2), NOW)
    assert decision.preempt == []
    assert (
        decision.reasons["vision0"]
        == "will reclaim 1 slot(s) from team nlp (run going is stopping)"
    )
    decision = decide(two_teams(), running, waiting("vision", 4), NOW)
    assert len(decision.preempt) == 2  # nlp still borrows 2 beyond the 2 leaving


def test_a_victim_runs_its_minimum_runtime_first() -> None:
    running = [
        *holding("nlp", 7, started=NOW - 3600, priority=1),
        Running("young", "nlp", 0, NOW - 30, ONE),
    ]
    decision = decide(two_teams(min_runtime=60.0), running, waiting("vision", 1), NOW)
    assert decision.preempt == []
    assert decision.reasons["vision0"] == (
        "will reclaim 1 slot(s) from team nlp (preempting run young in 30 s)"
    )
    assert decision.wake_at == NOW + 30
    # At 60 s it goes.
    later = decide(two_teams(min_runtime=60.0), running, waiting("vision", 1), NOW + 30)
    assert preempted(later) == ["young"]


def test_a_victim_ready_now_goes_before_one_of_equal_priority_that_is_not() -> None:
    running = [
        *holding("nlp", 6, started=NOW - 3600, priority=1),
        Running("young", "nlp", 0, NOW - 30, ONE),
        Running("ready", "nlp", 0, NOW - 90, ONE),
    ]
    decision = decide(two_teams(min_runtime=60.0), running, waiting("vision", 1), NOW)
    assert preempted(decision) == ["ready"]


def test_non_preemptible_runs_are_never_victims() -> None:
    running = [Running(f"np{i}", "nlp", 0, NOW - 3600, ONE, preemptible=False) for i in range(8)]
    decision = decide(two_teams(), running, waiting("vision", 2), NOW)
    assert decision.preempt == []
    assert decision.reasons["vision0"] == "all 8 slot(s) busy"


def test_guaranteed_runs_start_before_any_borrower() -> None:
    state = two_teams()
    decision = decide(state, holding("nlp", 4), waiting("nlp", 4) + waiting("vision", 4), NOW)
    assert decision.admit == ["vision0", "vision1", "vision2", "vision3"]
    assert decision.reasons["nlp0"] == "all 8 slot(s) busy"


# --- priority preemption ------------------------------------------------------------------


def test_priority_preemption_within_a_team_only_where_enabled() -> None:
    state = cluster(quota("vision", 4, borrowing=0), quota("nlp", 4, lending=0))
    running = [*holding("vision", 3, priority=1), Running("cheap", "vision", 0, NOW - 900, ONE)]
    pending = waiting("vision", 1, prefix="vip", priority=5)
    assert decide(state, running, pending, NOW).preempt == []
    state = cluster(
        quota("vision", 4, borrowing=0), quota("nlp", 4, lending=0), priority_preemption=True
    )
    decision = decide(state, running, pending, NOW)
    assert preempted(decision) == ["cheap"]
    assert decision.preempt[0].reason == "preempted by run vip0 of team vision (priority 5 > 0)"
    assert decision.reasons["vip0"] == "will preempt run cheap of team vision (priority 0 < 5)"


def test_priority_preemption_takes_from_a_borrower_not_a_team_within_its_quota() -> None:
    state = cluster(
        quota("vision", 4), quota("nlp", 2), quota("audio", 2), priority_preemption=True
    )
    running = (
        holding("vision", 4, priority=5)
        + holding("audio", 2, priority=0, prefix="a")
        + holding("nlp", 2, priority=1, prefix="n")
    )
    decision = decide(state, running, waiting("vision", 1, prefix="vip", priority=5), NOW)
    # audio and nlp are within their quotas: nobody borrows, nothing to take.
    assert decision.preempt == []
    running = holding("vision", 4, priority=5) + holding("nlp", 4, priority=0, prefix="n")
    state = cluster(
        quota("vision", 4), quota("nlp", 2), quota("audio", 2), priority_preemption=True
    )
    decision = decide(state, running, waiting("vision", 1, prefix="vip", priority=5), NOW)
    assert len(decision.preempt) == 1 and decision.preempt[0].run_id.startswith("n")


def test_a_non_preemptible_run_held_to_its_quota_does_not_stop_a_reclaim_behind_it() -> None:
    """Team a's quota is held by its non-preemptible run; runs of no team borrow the rest.
    Its next non-preemptible run may not start, but its preemptible runs behind it take
    their fair share back (as they would if the other were not queued at all: admission
    reads a team's head per kind, and the decision must not depend on how many
    non-preemptible runs wait)."""
    state = cluster(quota("a", 1), slots=3)
    running = [
        Running("a-fixed", "a", 0, NOW - 600, ONE, preemptible=False),
        Running("x0", "", 0, NOW - 600, ONE),
        Running("x1", "", 0, NOW - 600, ONE),
    ]
    pending = [
        Pending("p1", "a", 3, NOW - 50, ONE),
        Pending("n5", "a", 2, NOW - 40, ONE, preemptible=False),
        Pending("p2", "a", 1, NOW - 30, ONE),
    ]
    decision = decide(state, running, pending, NOW)
    assert sorted(preempted(decision)) == ["x0", "x1"]
    assert decision.reasons["n5"].startswith("non-preemptible: limited to team a's quota")
    without = decide(state, running, [pending[0], pending[2]], NOW)
    assert sorted(preempted(without)) == sorted(preempted(decision))


def test_a_non_preemptible_run_held_to_its_quota_does_not_stop_priority_preemption() -> None:
    state = cluster(quota("vision", 1), quota("nlp", 2), slots=3, priority_preemption=True)
    running = [
        Running("fixed", "vision", 0, NOW - 600, ONE, preemptible=False),
        Running("cheap0", "vision", 0, NOW - 600, ONE),
        Running("cheap1", "vision", 0, NOW - 900, ONE),
    ]
    pending = [
        Pending("vip1", "vision", 5, NOW - 50, ONE),
        Pending("n0", "vision", 4, NOW - 50, ONE, preemptible=False),
        Pending("vip2", "vision", 3, NOW - 40, ONE),
    ]
    decision = decide(state, running, pending, NOW)
    assert sorted(preempted(decision)) == ["cheap0", "cheap1"]
    assert decision.reasons["vip2"].startswith("will preempt run cheap")
    assert decision.reasons["n0"].startswith("non-preemptible: limited to team vision's quota")


# --- size ---------------------------------------------------------------------------------


def test_thousands_waiting_each_get_a_reason() -> None:
    teams = [quota(f"t{i}", 8) for i in range(4)]
    state = cluster(*teams, slots=32)
    pending = [
        Pending(f"r{i}", f"t{i % 5}", i % 3, NOW - i, ONE, preemptible=i % 7 != 0)
        for i in range(5000)
    ]
    decision = decide(state, holding("t0", 20), pending, NOW)
    assert len(decision.admit) == 12
    assert len(decision.admit) + len(decision.reasons) == 5000
