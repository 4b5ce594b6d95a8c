"""The scheduling simulator (``bench/scheduling.py``) on a small workload: it replays
through the real ``decide`` without breaking its own checks (capacity never exceeded, no
non-preemptible run preempted), every run completes, and both ways of printing work."""

from __future__ import annotations

import json

import pytest

from bench import scheduling, team_admission
from bench.scheduling import Workload, render, simulate


def test_a_small_workload_runs_under_both_policies() -> None:
    w = Workload(runs=400, seed=3)
    fifo, teams = simulate(w)
    assert (fifo.policy, teams.policy) == ("fifo", "teams")
    assert fifo.preemptions == 0
    assert fifo.never_started == teams.never_started == 0
    for result in (fifo, teams):
        assert 0 <= result.wasted_percent <= 100
        assert 0 <= result.utilization_when_contended <= 100 + 1e-6
        assert set(result.wait_p95) == {team for team, _ in w.quotas}
    table = render(w, [fifo, teams])
    assert "utilization while demand > capacity" in table
    assert "wasted slot-time" in table


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduling.main(["--runs", "200", "--seed", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in printed["results"]] == ["fifo", "teams"]
    assert printed["workload"]["runs"] == 200
    with pytest.raises(SystemExit):
        scheduling.main(["--runs", "0"])
    assert "--runs must be at least 1" in capsys.readouterr().err


def test_water_filling_spreads_what_idle_teams_leave() -> None:
    share = scheduling.water_fill({"a": 100, "b": 100, "c": 0}, {"a": 16, "b": 8, "c": 8}, 32)
    assert share == pytest.approx({"a": 32 * 16 / 24, "b": 32 * 8 / 24, "c": 0})
    share = scheduling.water_fill({"a": 2, "b": 100}, {"a": 16, "b": 16}, 32)
    assert share == pytest.approx({"a": 2, "b": 30})


def test_figures_for_the_bench_table() -> None:
    rows = scheduling.figures(quick=True)
    assert [row.anchor for row in rows] == ["fifo"] * len(rows)
    assert rows[0].name == "scheduling: utilization while demand > capacity"


def test_the_team_admission_bench_fills_every_slot_each_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each round is a real decision over a real store (it raises when one does not fill
    every free slot); the command line prints both figures."""
    assert team_admission.main(["--queued", "60", "--slots", "8", "--rounds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "60 waiting runs, 4 teams, 8 free slots (SQLite): one decision " in printed
    with pytest.raises(SystemExit):
        team_admission.main(["--queued", "4", "--slots", "8"])
    assert "--queued must be at least --slots" in capsys.readouterr().err
