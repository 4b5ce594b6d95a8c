"""Series summaries (``store/tracking/rollups.py``): written as points arrive through the
ingest, and the downsampled reads of ``store.tracking.reads.history`` that go through them."""

from __future__ import annotations

import math

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from protocol.messages import TrackingBatch
from protocol.streams import send_to_ingest
from scheduler.ingest import Ingest
from store.models import ROLLUP_SPAN, HistoryWindow, MetricRollup
from store.tracking import reads


def test_long_series_are_summarised_as_they_arrive_and_read_back_downsampled(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    """Summaries stay equal to the points under replays, and a downsampled read through
    them keeps the range's first, last and extreme points."""
    total = 9 * ROLLUP_SPAN + 100
    values = [math.sin(i / 300) for i in range(total)]
    values[4321] = 50.0
    values[7777] = -50.0
    chunk = 700  # spans straddle batches
    batches = [
        TrackingBatch(
            run_id=queued_run,
            origin=queued_run,
            producer="p",
            events=[[n, {"r": queued_run, "k": "l", "n": "wave", "v": values[i : i + chunk]}]],
        )
        for n, i in enumerate(range(0, total, chunk))
    ]
    send_to_ingest(client, batches)
    send_to_ingest(client, batches[3:5])  # a replay changes nothing
    ingest.process(ingest.read(block_ms=100))
    ingest.process(ingest.read(block_ms=100))

    with Session(engine) as fresh:
        stored = fresh.exec(
            select(MetricRollup)
            .where(MetricRollup.run_id == queued_run)
            .order_by(col(MetricRollup.bucket))
        ).all()
        assert [r.n for r in stored] == [ROLLUP_SPAN] * 9 + [100]
        for row in stored:
            span = values[row.bucket * ROLLUP_SPAN : (row.bucket + 1) * ROLLUP_SPAN]
            assert (row.first_idx, row.last_idx) == (
                row.bucket * ROLLUP_SPAN,
                row.bucket * ROLLUP_SPAN + len(span) - 1,
            )
            assert (row.min_value, row.max_value) == (min(span), max(span))

        # (7986, 8961): a zoom that crosses one span boundary and holds no whole span.
        ranges = [(None, None, 16), (1000, 8000, 12), (0, 3000, 400), (7986, 8961, 400)]
        for start, end, max_points in ranges:
            window = HistoryWindow(start=start, end=end, max_points=max_points)
            found = reads.history(fresh, queued_run, "wave", window)
            low, high = start or 0, total - 1 if end is None else end
            part = values[low : high + 1]
            assert found.count == len(part) and found.downsampled
            assert len(found.points) <= max_points
            assert found.points[0] == [low, part[0]] and found.points[-1] == [high, part[-1]]
            ys = [y for _, y in found.points]
            assert max(ys) == max(part) and min(ys) == min(part)
            assert all(low <= x <= high for x, _ in found.points)

        whole = reads.history(
            fresh, queued_run, "wave", HistoryWindow(start=7986, end=8961, max_points=1200)
        )
        assert whole.count == 976 and not whole.downsampled
        assert whole.points == [[i, values[i]] for i in range(7986, 8962)]
