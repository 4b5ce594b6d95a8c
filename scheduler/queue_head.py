"""Which waiting runs a decision needs to see: the head of one queue (a team's runs of one
kind, preemptible or not) in the order ``policy.decide`` ranks them, whatever its length.

``decide`` ranks a team's waiting runs by priority raised by their wait (aging), then
submit time. Reading a queue by stored priority alone would miss an old run of low
priority that aging has lifted above newer ones (it would wait forever behind them); one
read without the kind would let a team's non-preemptible runs, held to its quota, hide its
preemptible runs behind them from capacity they may borrow. So the head is read per kind,
one priority at a time, highest first: the oldest runs of each priority are the best it
has, and a lower priority is read only while its oldest possible run could still rank
among the first ``count``. The service reads its database this way
(``store.queue.TeamQueue``), the simulator its memory (``bench.scheduling``): one rule.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol, TypeVar

from scheduler.policy import raised_priority

T = TypeVar("T")


class Levels(Protocol[T]):
    """One queue as the head selection reads it."""

    def priorities(self) -> Iterator[int]:
        """The stored priorities its waiting runs have, highest first."""
        ...

    def oldest(self) -> float | None:
        """The earliest submit time (epoch seconds) of its waiting runs; None: none wait."""
        ...

    def first(self, priority: int, count: int) -> list[tuple[float, str, T]]:
        """Its first ``count`` waiting runs of ``priority`` in submit order, each as
        (submit time in epoch seconds, run id, run)."""
        ...


def head(queue: Levels[T], count: int, now: float, aging_seconds: float) -> list[T]:
    """The first ``count`` waiting runs of ``queue`` by priority raised by their wait at
    ``now``, then submit time, then id (``policy.effective_priority``), in that order."""
    if count <= 0:
        return []
    best: list[tuple[int, float, str, T]] = []  # (-raised priority, submitted, id, run)
    lift: int | None = None  # the most any waiting run is raised: the oldest one's
    for priority in queue.priorities():
        if len(best) >= count:
            if lift is None:
                oldest = queue.oldest()
                lift = 0 if oldest is None else raised_priority(0, now - oldest, aging_seconds)
            worst_kept = -heapq.nsmallest(count, best)[-1][0]
            if priority + lift < worst_kept:
                break  # nothing of this priority or below can rank among the first
        for submitted, run_id, run in queue.first(priority, count):
            best.append(
                (-raised_priority(priority, now - submitted, aging_seconds), submitted, run_id, run)
            )
    return [entry[3] for entry in heapq.nsmallest(count, best)]
