"""How a usage period is written (``store.usage.parse_moment``/``parse_groups``): ages,
dates and times as people write them; anything else refused in words that say what is
accepted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.errors import InvalidInput
from store.usage import parse_groups, parse_moment

NOW = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", NOW - timedelta(days=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5d", NOW - timedelta(hours=36)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01T12:00:00Z", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01T14:00:00+02:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
    ],
)
def test_moments_as_people_write_them(text: str, expected: datetime) -> None:
    assert parse_moment(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "30", "30x", "-5d", "2026-13-01"])
def test_anything_else_is_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_moment(text, NOW, "until")
    assert refused.value.field == "until"
    assert refused.value.message.startswith("until must be an age (30d, 12h, 90m, 2w)")


def test_an_age_before_the_calendar_is_refused_not_an_error() -> None:
    with pytest.raises(InvalidInput, match="since '99999999d' is too long ago"):
        parse_moment("99999999d", NOW)


def test_a_moment_whose_zone_takes_it_past_the_calendar_is_refused_not_an_error() -> None:
    with pytest.raises(InvalidInput, match="is outside the calendar"):
        parse_moment("9999-12-31T23:00:00-05:00", NOW)


def test_groups_comma_separated_or_repeated_in_the_order_asked() -> None:
    assert parse_groups(["team,day", "User", "team"]) == ["team", "day", "user"]
    assert parse_groups([""]) == []
    with pytest.raises(InvalidInput, match="cannot group usage by 'colour'"):
        parse_groups(["team,colour"])
