"""Usage accounting: the slot- and GPU-seconds run attempts held, per team, user (the
token that submitted the run), cluster and UTC day, within a period.

Every attempt counts (a requeued run's earlier attempts too), clipped to the period; one
still open counts up to now; one that spans midnight is split between the days. The
database sums the attempts clipped to the period, per group (and per day for those within
one day), so a report over 100,000 attempts returns one row per group; only attempts that
cross midnight, when days are asked for, are read one by one and cut at each midnight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, cast, extract, func, literal_column, or_
from sqlmodel import Session, col, select

from runyard.errors import InvalidInput
from store.models import USAGE_GROUPS, RunAttempt, UsageReport, UsageRow, utcnow

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Rows fetched per round trip while streaming.
_BATCH = 5000
_DAY = 86400.0
_UNIX_EPOCH_JULIAN_DAY = 2440587.5
_EPOCH_DATE = date(1970, 1, 1)

Key = tuple[str | date | None, ...]


def parse_moment(text: str, now: datetime, name: str = "since") -> datetime:
    """A moment as people write it: an age before ``now`` (``30d``, ``12h``, ``90m``,
    ``2w``), an ISO date (midnight UTC) or an ISO date and time (UTC unless it says)."""
    value = text.strip()
    age = _AGE.match(value)
    try:
        if age is not None:
            return now - timedelta(seconds=float(age[1]) * _UNIT_SECONDS[age[2]])
        moment = datetime.fromisoformat(value)
    except OverflowError:
        raise InvalidInput(f"{name} {text!r} is too long ago", field=name) from None
    except ValueError:
        raise InvalidInput(
            f"{name} must be an age (30d, 12h, 90m, 2w), a date (2026-11-01) or a date "
            f"and time (2026-11-01T12:00:00Z); got {text!r}",
            field=name,
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # a zone's offset past the calendar's end (9999-12-31T23:00-05:00)
        raise InvalidInput(f"{name} {text!r} is outside the calendar", field=name) from None


def parse_groups(by: Iterable[str]) -> list[str]:
    """What to group by, in the order asked (``team,day`` and repeated names alike)."""
    groups: list[str] = []
    for part in by:
        for name in part.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in USAGE_GROUPS:
                raise InvalidInput(
                    f"cannot group usage by {name!r}: choose from {', '.join(USAGE_GROUPS)}",
                    field="by",
                )
            if name not in groups:
                groups.append(name)
    return groups


def report(
    session: Session,
    since: datetime,
    until: datetime,
    by: Sequence[str],
    *,
    cluster: str | None = None,
    team: str | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> UsageReport:
    """The usage of the attempts that held a slot within ``[since, until]``, summed per
    group of ``by`` (see ``parse_groups``); ``cluster``, ``team`` and ``user`` narrow it
    to theirs."""
    now = now or utcnow()
    if since >= until:
        raise InvalidInput(f"since ({since.isoformat()}) must be before until", field="since")
    sql = _Dialect(session.get_bind().dialect.name)
    first, last, up_to_now = (sql.number(t.timestamp()) for t in (since, until, now))
    # Each attempt clipped to the period (an open one ends now), in seconds since 1970.
    start = sql.greatest(sql.epoch(col(RunAttempt.started_at)), first)
    end = sql.least(func.coalesce(sql.epoch(col(RunAttempt.ended_at)), up_to_now), last)
    held = [
        col(RunAttempt.started_at) <= until,
        or_(col(RunAttempt.ended_at).is_(None), col(RunAttempt.ended_at) >= since),
        end >= start,  # not one that started after now (clocks differ)
    ]
    if cluster is not None:
        held.append(col(RunAttempt.cluster) == cluster)
    if team is not None:
        held.append(col(RunAttempt.team) == team)
    if user is not None:
        held.append(col(RunAttempt.submitted_by) == user)
    groups = list(by)
    day = sql.day_of(start)
    next_midnight = (day + 1) * sql.number(_DAY)
    keyed = {
        "team": col(RunAttempt.team),
        "user": col(RunAttempt.submitted_by),
        "cluster": col(RunAttempt.cluster),
        "day": day,
    }
    sums: dict[Key, list[float]] = {}
    total = [0.0, 0.0, 0.0]

    # Attempts within one day (or all, when days are not asked for): summed by the database.
    keys = [keyed[g] for g in groups]
    seconds = end - start
    summed = select(
        *keys, func.count(), func.sum(seconds), func.sum(seconds * col(RunAttempt.gpus))
    ).where(*held)
    if "day" in groups:
        summed = summed.where(end <= next_midnight)
    for *key, attempts, slot_seconds, gpu_seconds in session.execute(summed.group_by(*keys)):
        if not attempts:
            continue  # no group asked for and nothing found: the one row of a bare count
        values = [attempts, slot_seconds or 0.0, gpu_seconds or 0.0]
        sums[_key(groups, key)] = values
        for n in range(3):
            total[n] += values[n]

    # Attempts across midnight, when days are asked for: read and cut at each midnight.
    if "day" in groups:
        across = select(
            col(RunAttempt.team),
            col(RunAttempt.submitted_by),
            col(RunAttempt.cluster),
            col(RunAttempt.gpus),
            start,
            end,
        ).where(*held, end > next_midnight)
        for team_of, user_of, cluster_of, gpus, started, ended in session.execute(
            across.execution_options(yield_per=_BATCH)
        ):
            named: dict[str, Any] = {"team": team_of, "user": user_of, "cluster": cluster_of}
            for day_of, piece in _days(started, ended):
                named["day"] = day_of
                found = sums.setdefault(tuple(named[g] for g in groups), [0.0, 0.0, 0.0])
                found[0] += 1
                found[1] += piece
                found[2] += piece * gpus
                total[1] += piece
                total[2] += piece * gpus
            total[0] += 1

    data = [_row(groups, key, values) for key, values in sorted(sums.items(), key=_order)]
    return UsageReport(since=since, until=until, by=groups, data=data, total=_row([], (), total))


class _Dialect:
    """The few expressions SQLite and PostgreSQL spell differently. Numbers are written
    into the statement, not bound: PostgreSQL groups by an expression only when it is the
    selected one to the letter, and two bound copies of it are not."""

    def __init__(self, name: str) -> None:
        self.postgresql = name == "postgresql"

    def number(self, value: float) -> ColumnElement[float]:
        return literal_column(repr(float(value)), Float)

    def epoch(self, column: ColumnElement[datetime]) -> ColumnElement[float]:
        """Seconds since 1970, computed by the database: a float is read far faster than
        a timestamp is parsed, and the sums need no more. SQLite stores UTC without a zone."""
        if self.postgresql:
            return cast(extract("epoch", column), Float)
        return (func.julianday(column) - self.number(_UNIX_EPOCH_JULIAN_DAY)) * self.number(_DAY)

    def greatest(self, a: ColumnElement[float], b: ColumnElement[float]) -> ColumnElement[float]:
        return func.greatest(a, b) if self.postgresql else func.max(a, b)

    def least(self, a: ColumnElement[float], b: ColumnElement[float]) -> ColumnElement[float]:
        return func.least(a, b) if self.postgresql else func.min(a, b)

    def day_of(self, seconds: ColumnElement[float]) -> ColumnElement[int]:
        """Days since 1970 (UTC) of a moment after it."""
        days = seconds / self.number(_DAY)
        return cast(func.floor(days) if self.postgresql else days, Integer)


def _key(groups: Sequence[str], values: Sequence[Any]) -> Key:
    """A group's key as the database returned it, its day (a day number) as a date."""
    return tuple(
        _EPOCH_DATE + timedelta(days=int(value)) if group == "day" else value
        for group, value in zip(groups, values, strict=True)
    )


def _days(start: float, end: float) -> list[tuple[date, float]]:
    """``[start, end]`` (seconds since 1970) cut at each UTC midnight: the seconds in each
    day it touches."""
    pieces = []
    day = int(start // _DAY)
    while True:
        midnight = (day + 1) * _DAY
        when = _EPOCH_DATE + timedelta(days=day)
        if end <= midnight:
            pieces.append((when, end - start))
            return pieces
        pieces.append((when, midnight - start))
        start, day = midnight, day + 1


def _order(item: tuple[Key, list[float]]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, str(value or "")) for value in item[0])


def _row(groups: Sequence[str], key: Key, values: Sequence[float]) -> UsageRow:
    attempts, slot_seconds, gpu_seconds = values
    return UsageRow(
        **dict(zip(groups, key, strict=True)),
        attempts=int(attempts),
        slot_seconds=round(slot_seconds, 3),
        gpu_seconds=round(gpu_seconds, 3),
        slot_hours=round(slot_seconds / 3600, 6),
        gpu_hours=round(gpu_seconds / 3600, 6),
    )
