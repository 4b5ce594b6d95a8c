"""Usage accounting (``store/usage.py``): the figures equal the attempts' hours summed by
hand, a requeued run's attempts each counting, an attempt across midnight split between
the days, a running one counted up to now, everything clipped to the period; on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session

from runyard.errors import InvalidInput
from store import usage
from store.models import UsageReport
from tests.support.database import make_cluster, queue_run
from tests.support.usage import add_attempts

DAY = datetime(2026, 11, 10, tzinfo=UTC)
NOW = DAY + timedelta(days=1, hours=8)
SINCE, UNTIL = DAY, DAY + timedelta(days=2)
H = 3600.0


def at(day: int, hour: float) -> datetime:
    return DAY + timedelta(days=day, hours=hour)


@pytest.fixture
def attempts(session: Session) -> None:
    """- vision (ada), requeued: attempt 1 10:00-11:00 (lost), attempt 2 12:00-14:00, 2 GPUs
    - nlp (bob): 22:00-03:00 the next day, 1 GPU
    - no team (ada), on cpu-b: running since 06:00 the next day (now: 08:00)
    - vision (ada): two days before the period, not counted"""
    make_cluster(session, "gpu-a")
    make_cluster(session, "cpu-b")
    requeued, nlp, running, old = (
        queue_run(session, "gpu-a"),
        queue_run(session, "gpu-a"),
        queue_run(session, "cpu-b"),
        queue_run(session, "gpu-a"),
    )
    rows = [
        (requeued, 1, "gpu-a", "vision", "ada", 2, at(0, 10), at(0, 11), "lost"),
        (requeued, 2, "gpu-a", "vision", "ada", 2, at(0, 12), at(0, 14), "completed"),
        (nlp, 1, "gpu-a", "nlp", "bob", 1, at(0, 22), at(1, 3), "failed"),
        (running, 1, "cpu-b", "", "ada", 0, at(1, 6), None, None),
        (old, 1, "gpu-a", "vision", "ada", 4, at(-2, 10), at(-2, 11), "completed"),
    ]
    add_attempts(session, rows)
    session.commit()


def figures(report: UsageReport, *keys: str) -> dict[tuple[object, ...], tuple[int, float, float]]:
    """Each row's (attempts, slot-hours, GPU-hours) by its keys."""
    return {
        tuple(getattr(row, k) for k in keys): (
            row.attempts,
            pytest.approx(row.slot_seconds / H),
            pytest.approx(row.gpu_seconds / H),
        )
        for row in report.data
    }


def test_usage_per_team_is_the_sum_of_its_attempts(session: Session, attempts: None) -> None:
    report = usage.report(session, SINCE, UNTIL, ["team"], now=NOW)

    assert figures(report, "team") == {
        ("",): (1, 2, 0),  # running: 06:00 to now (08:00)
        ("nlp",): (1, 5, 5),
        ("vision",): (2, 3, 6),  # both attempts of the requeued run
    }
    assert [row.team for row in report.data] == ["", "nlp", "vision"]
    assert report.data[2].slot_hours == pytest.approx(3)
    assert report.data[2].gpu_hours == pytest.approx(6)
    assert (report.total.attempts, report.total.slot_hours, report.total.gpu_hours) == (
        4,
        pytest.approx(10),
        pytest.approx(11),
    )


def test_an_attempt_across_midnight_is_split_between_the_days(
    session: Session, attempts: None
) -> None:
    report = usage.report(session, SINCE, UNTIL, ["team", "day"], now=NOW)

    first, second = date(2026, 11, 10), date(2026, 11, 11)
    assert figures(report, "team", "day") == {
        ("", second): (1, 2, 0),
        ("nlp", first): (1, 2, 2),
        ("nlp", second): (1, 3, 3),
        ("vision", first): (2, 3, 6),
    }
    assert report.total.attempts == 4  # the split attempt is one attempt
    assert report.total.slot_hours == pytest.approx(10)


def test_usage_per_user_and_cluster(session: Session, attempts: None) -> None:
    assert figures(usage.report(session, SINCE, UNTIL, ["user"], now=NOW), "user") == {
        ("ada",): (3, 5, 6),
        ("bob",): (1, 5, 5),
    }
    by_cluster = usage.report(session, SINCE, UNTIL, ["cluster", "user"], now=NOW)
    assert figures(by_cluster, "cluster", "user") == {
        ("cpu-b", "ada"): (1, 2, 0),
        ("gpu-a", "ada"): (2, 3, 6),
        ("gpu-a", "bob"): (1, 5, 5),
    }


def test_the_period_clips_the_attempts(session: Session, attempts: None) -> None:
    # From 23:00: an hour of nlp's night before midnight, nothing of vision's day.
    report = usage.report(session, at(0, 23), at(1, 7), ["team", "day"], now=NOW)

    assert figures(report, "team", "day") == {
        ("", date(2026, 11, 11)): (1, 1, 0),  # 06:00 to the period's end
        ("nlp", date(2026, 11, 10)): (1, 1, 1),
        ("nlp", date(2026, 11, 11)): (1, 3, 3),
    }


def test_filters_narrow_the_attempts(session: Session, attempts: None) -> None:
    on_gpu_a = usage.report(session, SINCE, UNTIL, ["team"], cluster="gpu-a", now=NOW)
    assert figures(on_gpu_a, "team") == {("nlp",): (1, 5, 5), ("vision",): (2, 3, 6)}
    no_team = usage.report(session, SINCE, UNTIL, ["cluster"], team="", now=NOW)
    assert figures(no_team, "cluster") == {("cpu-b",): (1, 2, 0)}
    bob = usage.report(session, SINCE, UNTIL, ["day"], user="bob", now=NOW)
    assert figures(bob, "day") == {
        (date(2026, 11, 10),): (1, 2, 2),
        (date(2026, 11, 11),): (1, 3, 3),
    }


def test_no_group_is_one_total_and_an_empty_period_no_rows(
    session: Session, attempts: None
) -> None:
    whole = usage.report(session, SINCE, UNTIL, [], now=NOW)
    assert [(row.attempts, row.slot_hours, row.gpu_hours) for row in whole.data] == [
        (4, pytest.approx(10), pytest.approx(11))
    ]
    empty = usage.report(session, at(5, 0), at(6, 0), ["team", "day"], now=NOW)
    assert (empty.data, empty.total.attempts, empty.total.slot_seconds) == ([], 0, 0)


def test_a_period_that_ends_before_it_starts_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInput, match=r"since .* must be before until"):
        usage.report(session, UNTIL, SINCE, ["team"], now=NOW)
