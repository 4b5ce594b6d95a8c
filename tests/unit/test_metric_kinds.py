"""Metric kinds: the one-letter code a script's event carries and the name the store keeps
and the API shows (``runyard.tracking.events``). Ingest turns each into the other."""

from __future__ import annotations

from runyard.tracking import events as ev


def test_every_metric_kind_has_one_stored_name_that_leads_back_to_it() -> None:
    assert set(ev.KIND_NAMES) == set(ev.METRIC_KINDS)
    assert {ev.KIND_CODES[ev.KIND_NAMES[code]] for code in ev.METRIC_KINDS} == set(ev.METRIC_KINDS)


def test_single_value_and_column_kinds_are_stored_names_of_compatible_kinds() -> None:
    """A name logged with log() may go on with log_list(), a row may follow a table: the
    groups the charts and tables read by stored name are those the ingest lets mix."""
    for group in (ev.SINGLE_VALUE_KINDS, ev.COLUMN_KINDS):
        first, then = (ev.KIND_CODES[name] for name in group)
        assert ev.compatible(first, then) and ev.compatible(then, first)
