"""Stream entries of tracking: a batch the API passes through as its body, and how the
ingest joins a read's batches (``scheduler.ingest.joined``) without reordering a run."""

from __future__ import annotations

import json
import math

import pytest

from protocol.messages import LogChunk, MessageError, StateChanged, TrackingBatch, decode
from runyard.status import RunStatus
from runyard.tracking import events as ev
from scheduler.ingest import joined


def as_redis(fields: dict) -> dict:
    """What a Redis client hands back for an entry: bytes keys and values."""
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def test_a_passed_through_body_decodes_to_the_numbered_batch_the_api_built_before() -> None:
    events = [{"r": "r1", "k": ev.SCALAR, "n": "loss", "v": v, "t": 1.0} for v in (0.5, 7, "x")]
    body = json.dumps({"producer": "abc", "first_seq": 40, "events": events, "wait": True})
    entry = TrackingBatch(run_id="r1", origin="r1", producer="abc", events=[],
                          body=body.encode())  # fmt: skip

    found = decode(as_redis(entry.encode()))

    assert found == TrackingBatch(run_id="r1", origin="r1", producer="abc",
                                  events=[[40 + i, e] for i, e in enumerate(events)])  # fmt: skip
    assert isinstance(found, TrackingBatch) and found.checked


def test_nan_infinities_and_huge_integers_read_back_as_logged() -> None:
    events = [{"r": "r1", "k": ev.SCALAR, "n": "m", "v": v} for v in (math.nan, -math.inf, 2**70)]
    body = json.dumps({"producer": "p", "first_seq": 0, "events": events}).encode()
    entry = TrackingBatch(run_id="r1", origin="r1", producer="p", events=[], body=body)
    numbered = TrackingBatch(
        run_id="r1", origin="r1", producer="p", events=[[i, e] for i, e in enumerate(events)]
    )

    for found in (decode(as_redis(entry.encode())), decode(as_redis(numbered.encode()))):
        assert isinstance(found, TrackingBatch)
        values = [e["v"] for _, e in found.events]
        assert math.isnan(values[0]) and values[1] == -math.inf and values[2] == 2**70


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'{"producer": "p", "first_seq": "0", "events": []}', b"{", b"\xff"]
)
def test_a_malformed_body_is_a_message_error(body: bytes) -> None:
    entry = TrackingBatch(run_id="r1", origin="r1", producer="p", events=[], body=body)
    with pytest.raises(MessageError):
        decode(as_redis(entry.encode()))


def batch(run_id: str, seqs: range, producer: str = "p", origin: str = "") -> TrackingBatch:
    events = [[s, {"r": run_id, "k": ev.SCALAR, "n": "x", "v": float(s)}] for s in seqs]
    return TrackingBatch(run_id=run_id, origin=origin or run_id, producer=producer, events=events)


def seqs(entry: object) -> list[int]:
    assert isinstance(entry, TrackingBatch)
    return [s for s, _ in entry.events]


def test_each_runs_batches_are_joined_in_order_across_other_runs_and_log_lines() -> None:
    entries = [
        *(batch("a", range(0, 2)), batch("b", range(0, 3)), LogChunk("a", 0, "x\n")),
        *(batch("a", range(2, 4)), batch("b", range(3, 4)), batch("a", range(4, 5))),
    ]

    out = joined([(str(i), e) for i, e in enumerate(entries)])

    assert len(out) == 3
    assert (seqs(out[0]), seqs(out[1])) == ([0, 1, 2, 3, 4], [0, 1, 2, 3])
    assert out[2] == entries[2]


def test_a_state_report_or_another_producer_ends_a_join() -> None:
    entries = [
        *(batch("a", range(0, 2)), StateChanged("a", RunStatus.RUNNING)),
        *(batch("a", range(2, 3)), batch("a", range(0, 1), producer="q")),
        *(batch("a", range(3, 4)), batch("a_1", range(4, 5), origin="a")),
        *(StateChanged("a_1", RunStatus.COMPLETED), batch("a_1", range(5, 6), origin="a")),
    ]

    out = joined([(str(i), e) for i, e in enumerate(entries)])

    # Nothing moves past the state reports, the other producer or the child's batches.
    assert out == entries


def test_another_channels_batch_for_a_run_ends_a_join_of_that_run() -> None:
    """A parent's channel tags its child, the child's own channel tags it, the parent's
    again: the last tag must stay last (joining the third into the first would not)."""
    entries = [
        batch("a_1", range(0, 1), origin="a"),
        batch("a_1", range(0, 1), producer="own"),
        batch("a_1", range(1, 2), origin="a"),
    ]

    out = joined([(str(i), e) for i, e in enumerate(entries)])

    assert out == entries


GOOD = [
    b'{"producer": "ab:1", "first_seq": 3, "events": [{"r": "x"}], "wait": true}',
    b'{"producer": "p", "first_seq": 0, "events": []}',
]
REFUSED = [
    b'{"producer": "a b", "first_seq": 3, "events": []}',
    b'{"producer": "", "first_seq": 3, "events": []}',
    b'{"producer": "ab", "first_seq": -1, "events": []}',
    b'{"producer": "ab", "first_seq": true, "events": []}',
    b'{"producer": "ab", "first_seq": 1, "events": [], "extra": 1}',
    b'{"producer": "ab", "first_seq": 1, "events": [], "wait": 1}',
    b'{"producer": "ab", "first_seq": 1}',
    b'{"producer": "ab", "first_seq": 1, "events": [1]}',
    b"[]",
]


@pytest.mark.parametrize("body", GOOD)
def test_the_api_reads_a_plain_batch_as_its_model_does(body: bytes) -> None:
    from api.errors import validate_json
    from api.routes.tracking import _plain_batch
    from store.models import EventBatch

    assert _plain_batch(body) == validate_json(EventBatch, body)


@pytest.mark.parametrize("body", [*REFUSED, b'{"producer": "p", "first_seq": 0, "events": [NaN]}'])
def test_what_is_not_plainly_valid_goes_to_the_model(body: bytes) -> None:
    """The model decides (a 4xx with its usual reason, or NaN read as Python reads it);
    a batch refused here was never a shortcut past validation."""
    from api.routes.tracking import _plain_batch

    assert _plain_batch(body) is None
