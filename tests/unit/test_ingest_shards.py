"""Sharded ingest, the parts that need no Redis: which shard a run's entries go to
(``protocol.streams``) and how schedulers share the shards (``scheduler.leadership``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any

from protocol import keys
from protocol.messages import Barrier, LogChunk, StateChanged, TrackingBatch, Wake
from protocol.streams import append, shard_of
from runyard.status import RunStatus
from scheduler.leadership import Shards, share


def test_a_run_goes_to_the_same_shard_in_every_process() -> None:
    """CRC-32, not hash(): a producer and a scheduler started with different hash seeds
    agree (the value is pinned, so a change of function is caught too)."""
    assert shard_of("mnist_1796092080_99009b13", 8) == 3
    code = "from protocol.streams import shard_of; print(shard_of('mnist_1796092080_99009b13', 8))"
    for seed in ("1", "2"):
        answer = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert answer.stdout.strip() == "3"


def test_runs_spread_over_every_shard() -> None:
    counts = Counter(shard_of(f"exp_{n}_{n * 7919:08x}", 8) for n in range(8000))
    assert sorted(counts) == list(range(8))
    assert min(counts.values()) > 800 and max(counts.values()) < 1200  # ~1000 each


class Pipe:
    """Records what ``append`` queues."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def xadd(self, stream: str, fields: dict[str, str], **_: Any) -> None:
        self.calls.append(("xadd", stream, fields["type"]))

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.calls.append(("set", key, value))

    def expire(self, key: str, ttl: int) -> None:
        pass


def test_each_entry_goes_to_its_runs_shard_and_a_barrier_to_every_shard_behind_them() -> None:
    pipe = Pipe()
    barrier = Barrier(waiter="w1")
    append(
        pipe,
        [
            StateChanged(run_id="run-a", status=RunStatus.RUNNING),
            LogChunk(run_id="run-b", seq=0, text="x\n"),
            TrackingBatch(run_id="run-a", origin="run-a", producer="p", events=[]),
            Wake(cluster="c"),
            barrier,
        ],
        shards=4,
    )
    ingest = [(stream, kind) for op, stream, kind in pipe.calls if op == "xadd"]
    ingest = [(s, k) for s, k in ingest if not s.endswith(":live")]
    shard_a, shard_b = (
        keys.ingest_shard(shard_of("run-a", 4)),
        keys.ingest_shard(shard_of("run-b", 4)),
    )
    assert ingest[:4] == [
        (shard_a, "state"),
        (shard_b, "log"),
        (shard_a, "track"),
        (keys.INGEST_WAKE_STREAM, "wake"),
    ]
    assert ingest[4:] == [(keys.ingest_shard(s), "barrier") for s in range(4)]
    # The count of copies is set before any copy, in the same MULTI.
    first_copy = pipe.calls.index(("xadd", keys.ingest_shard(0), "barrier"))
    assert pipe.calls.index(("set", keys.barrier_parts("w1"), 4)) < first_copy


def test_what_a_parent_logs_for_its_children_goes_to_the_parents_shard() -> None:
    """The API splits a tree's batch per run; the child is created by the parent's part, so
    the child's part must be applied after it: both on the shard of the channel's run."""
    parent = "exp_1_aaaa"
    children = [f"{parent}_{n}" for n in range(16)]
    assert {shard_of(c, 8) for c in children} != {shard_of(parent, 8)}  # spread by their ids
    pipe = Pipe()
    append(
        pipe,
        [TrackingBatch(run_id=parent, origin=parent, producer="p", events=[])]
        + [TrackingBatch(run_id=c, origin=parent, producer="p", events=[]) for c in children],
        shards=8,
    )
    ingest = {stream for op, stream, _ in pipe.calls if op == "xadd" and "live" not in stream}
    assert ingest == {keys.ingest_shard(shard_of(parent, 8))}


def test_share_is_enough_for_every_shard_to_be_held() -> None:
    assert [share(8, live) for live in (0, 1, 2, 3, 4, 8, 9)] == [8, 8, 4, 3, 2, 1, 1]


class FakeLease:
    """A shard lease in a dict instead of Redis: taken only if free, renewed while ours."""

    def __init__(self, holders: dict[int, str], shard: int, name: str) -> None:
        self.holders, self.shard, self.name = holders, shard, name
        self.token: int | None = None

    def held(self) -> bool:
        return self.token is not None

    def renew(self) -> bool:
        if self.token is not None and self.holders.get(self.shard) == self.name:
            return True
        self.token = None
        return False

    def take(self) -> bool:
        if self.shard not in self.holders:
            self.holders[self.shard] = self.name
            self.token = 1
        return self.token is not None

    def step_down(self) -> None:
        if self.holders.get(self.shard) == self.name:
            del self.holders[self.shard]
        self.token = None


def fake_shards(holders: dict[int, str], name: str, count: int = 8) -> Shards:
    return Shards(None, name, count, 3.0, lease=lambda shard: FakeLease(holders, shard, name))  # type: ignore[arg-type, return-value]


def test_a_newcomer_gets_its_share_as_the_others_give_back_their_surplus() -> None:
    holders: dict[int, str] = {}
    a = fake_shards(holders, "a")
    taken, given_back = a.tick(live=1)
    assert sorted(taken) == list(range(8)) and given_back == []

    b = fake_shards(holders, "b")
    assert b.tick(live=2) == ([], [])  # nothing free yet
    taken, given_back = a.tick(live=2)
    assert taken == [] and len(given_back) == 4
    taken, _ = b.tick(live=2)
    assert sorted(taken) == given_back
    assert sorted(a.held() + b.held()) == list(range(8))

    c = fake_shards(holders, "c")
    for _ in range(2):
        for scheduler in (c, a, b):
            scheduler.tick(live=3)
    assert sorted(len(s.held()) for s in (a, b, c)) == [2, 3, 3]
    assert sorted(a.held() + b.held() + c.held()) == list(range(8))


def test_a_dead_schedulers_shards_are_taken_once_its_leases_run_out() -> None:
    holders: dict[int, str] = {}
    a, b = fake_shards(holders, "a"), fake_shards(holders, "b")
    a.tick(live=1)
    a.tick(live=2)
    b.tick(live=2)
    for shard in a.held():  # a is killed: its leases run out
        del holders[shard]
    taken, _ = b.tick(live=1)
    assert sorted(taken + [s for s in b.held() if s not in taken]) == list(range(8))
    assert len(taken) == 4
    # a wakes (it was only paused): it finds its shards gone and reads none of them.
    _, lost = a.tick(live=2)
    assert len(lost) == 4 and a.held() == []
