"""Series summaries per ``ROLLUP_SPAN`` indexes, so a chart of a long series is fast.

The ingest refreshes the summaries of the spans a batch touched, from the stored points,
in the batch's transaction; a replayed batch recomputes the same rows. A downsampled read
of a wide range then merges a thousand summaries instead of scanning a million points
(``store.tracking.reads.history``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import literal
from sqlmodel import Session, col, func, select

from store.db import insert_ignoring
from store.models import ROLLUP_SPAN, MetricPoint, MetricRollup

Series = tuple[str, str]  # (name, column)


@dataclass(frozen=True)
class Block:
    """A stretch of a series: its first and last index, extremes and number of points."""

    first: int
    last: int
    low: float | None
    high: float | None
    n: int


def refresh(session: Session, run_id: str, touched: dict[Series, tuple[int, int]]) -> None:
    """Recompute the summaries of every span holding an index in ``touched[(name, column)]
    = (lowest, highest)``."""
    table = MetricRollup.__table__
    for (name, column), (lowest, highest) in touched.items():
        first_bucket, last_bucket = lowest // ROLLUP_SPAN, highest // ROLLUP_SPAN
        bucket = col(MetricPoint.idx) // ROLLUP_SPAN
        summary = (
            select(
                literal(run_id),
                literal(name),
                literal(column),
                bucket,
                func.min(MetricPoint.idx),
                func.max(MetricPoint.idx),
                func.min(MetricPoint.value),
                func.max(MetricPoint.value),
                func.count(),
            )
            .where(
                MetricPoint.run_id == run_id,
                MetricPoint.name == name,
                MetricPoint.column == column,
                col(MetricPoint.idx).between(
                    first_bucket * ROLLUP_SPAN, (last_bucket + 1) * ROLLUP_SPAN - 1
                ),
            )
            .group_by(bucket)
        )
        statement = insert_ignoring(session, table).from_select(
            ["run_id", "name", "column", "bucket", "first_idx", "last_idx", "min_value",
             "max_value", "n"],
            summary,
        )  # fmt: skip
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["run_id", "name", "column", "bucket"],
                set_={
                    "first_idx": excluded.first_idx,
                    "last_idx": excluded.last_idx,
                    "min_value": excluded.min_value,
                    "max_value": excluded.max_value,
                    "n": excluded.n,
                },
            )
        )


def blocks(
    session: Session, run_id: str, name: str, column: str, start: int, end: int | None
) -> list[Block]:
    """The series between ``start`` and ``end`` (inclusive) as blocks in index order:
    whole spans from the summaries, the partial spans at either edge from the points."""
    first_full = -(-start // ROLLUP_SPAN)
    query = select(
        MetricRollup.first_idx,
        MetricRollup.last_idx,
        MetricRollup.min_value,
        MetricRollup.max_value,
        MetricRollup.n,
    ).where(
        MetricRollup.run_id == run_id,
        MetricRollup.name == name,
        MetricRollup.column == column,
        col(MetricRollup.bucket) >= first_full,
    )
    last_full = None
    if end is not None:
        last_full = (end + 1) // ROLLUP_SPAN - 1
        query = query.where(col(MetricRollup.bucket) <= last_full)
    whole = [Block(*row) for row in session.exec(query.order_by(col(MetricRollup.bucket)))]
    head_end = first_full * ROLLUP_SPAN - 1
    if end is not None:
        head_end = min(head_end, end)
    edges = [_raw_block(session, run_id, name, column, start, head_end)]
    if end is not None and last_full is not None:
        # After the whole spans; or, when the range holds none, after the head (a range
        # crossing one span boundary has a head and a tail and nothing between).
        tail_start = max(last_full + 1, first_full) * ROLLUP_SPAN
        edges.append(_raw_block(session, run_id, name, column, tail_start, end))
    found = [b for b in edges if b is not None] + whole
    return sorted(found, key=lambda b: b.first)


def _raw_block(
    session: Session, run_id: str, name: str, column: str, start: int, end: int
) -> Block | None:
    if end < start:
        return None
    first, last, low, high, n = session.exec(
        select(
            func.min(MetricPoint.idx),
            func.max(MetricPoint.idx),
            func.min(MetricPoint.value),
            func.max(MetricPoint.value),
            func.count(),
        ).where(
            MetricPoint.run_id == run_id,
            MetricPoint.name == name,
            MetricPoint.column == column,
            col(MetricPoint.idx).between(start, end),
        )
    ).one()
    return Block(first, last, low, high, n) if n else None


def merge(found: Iterable[Block], buckets: int) -> list[Block]:
    """Blocks merged into at most ``buckets`` equal-width stretches of the index range."""
    found = list(found)
    if not found:
        return []
    low, high = found[0].first, found[-1].last
    width = max(-(-(high - low + 1) // buckets), 1)
    merged: dict[int, Block] = {}
    for block in found:
        key = (block.first - low) // width
        seen = merged.get(key)
        if seen is None:
            merged[key] = block
            continue
        merged[key] = Block(
            min(seen.first, block.first),
            max(seen.last, block.last),
            _pick(min, seen.low, block.low),
            _pick(max, seen.high, block.high),
            seen.n + block.n,
        )
    return [merged[k] for k in sorted(merged)]


def _pick(choose, a: float | None, b: float | None) -> float | None:  # type: ignore[no-untyped-def]
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)
