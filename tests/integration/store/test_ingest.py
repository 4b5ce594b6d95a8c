"""The ingest consumer (``scheduler/ingest.py``): what workers send on the Redis stream is
written to the store once, in order, and acknowledged only then."""

from __future__ import annotations

import redis
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from protocol import keys
from protocol.messages import LogChunk, StateChanged, TrackingBatch
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from scheduler.ingest import Ingest
from store.models import MetricPoint, RunLog
from tests.support.database import CLUSTER, HAPPY_PATH, log_rows, pending_count, reload, walk


def test_ingest_stores_logs_and_applies_states(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id=queued_run, seq=0, text="epoch 1\n"),
            LogChunk(run_id=queued_run, seq=1, text="epoch 2\n"),
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING, worker_id="w-1"),
        ],
    )

    applied = ingest.process(ingest.read(block_ms=100))

    assert applied.clusters == set()
    assert log_rows(engine, queued_run) == [(0, "epoch 1\n"), (1, "epoch 2\n")]
    run = reload(engine, queued_run)
    assert (run.status, run.worker_id) == (RunStatus.RUNNING, "w-1")
    assert pending_count(client) == 0


def test_replayed_log_chunks_are_stored_once(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    chunks = [LogChunk(run_id=queued_run, seq=seq, text=f"line {seq}\n") for seq in range(3)]
    send_to_ingest(client, list(chunks))
    ingest.process(ingest.read(block_ms=100))

    send_to_ingest(client, [*chunks, LogChunk(run_id=queued_run, seq=0, text="changed\n")])
    ingest.process(ingest.read(block_ms=100))

    assert log_rows(engine, queued_run) == [(seq, f"line {seq}\n") for seq in range(3)]
    with Session(engine) as fresh:
        assert fresh.exec(select(func.count()).select_from(RunLog)).one() == 3


def test_a_terminal_state_reports_the_cluster_that_gained_a_slot(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(client, [StateChanged(run_id=queued_run, status=RunStatus.RUNNING)])
    ingest.process(ingest.read(block_ms=100))

    send_to_ingest(
        client,
        [
            StateChanged(
                run_id=queued_run, status=RunStatus.FAILED, exit_code=3, reason="exit code 3"
            )
        ],
    )
    applied = ingest.process(ingest.read(block_ms=100))

    assert applied.clusters == {CLUSTER}
    run = reload(engine, queued_run)
    assert (run.status, run.exit_code, run.failure_reason) == (RunStatus.FAILED, 3, "exit code 3")


def test_an_illegal_report_is_ignored_without_losing_the_rest_of_the_batch(
    engine: Engine, session: Session, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    walk(session, queued_run, *HAPPY_PATH)
    send_to_ingest(
        client,
        [
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING),
            StateChanged(run_id="no-such-run", status=RunStatus.RUNNING),
            LogChunk(run_id=queued_run, seq=0, text="late output\n"),
        ],
    )

    ingest.process(ingest.read(block_ms=100))

    assert reload(engine, queued_run).status == RunStatus.COMPLETED
    assert log_rows(engine, queued_run) == [(0, "late output\n")]
    assert pending_count(client) == 0


def test_a_malformed_entry_is_acknowledged_and_dropped(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    client.xadd(keys.INGEST_STREAM, {"v": "1", "type": "nope", "data": "{}"})
    client.xadd(keys.INGEST_STREAM, {"v": "1", "type": "log", "data": "{not json"})
    send_to_ingest(client, [LogChunk(run_id=queued_run, seq=0, text="still here\n")])

    raw = ingest.read(block_ms=100)
    ingest.process(raw)

    assert len(raw) == 3
    assert log_rows(engine, queued_run) == [(0, "still here\n")]
    assert pending_count(client) == 0


def test_entries_a_consumer_never_acknowledged_are_reclaimed_by_another(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id=queued_run, seq=0, text="orphaned\n"),
            StateChanged(run_id=queued_run, status=RunStatus.RUNNING),
        ],
    )
    assert len(ingest.read(block_ms=100)) == 2  # read, then the consumer "dies"
    assert pending_count(client) == 2

    survivor = Ingest(engine, client, "other-consumer")
    reclaimed = survivor.reclaim(min_idle_ms=0)
    survivor.process(reclaimed)

    assert len(reclaimed) == 2
    assert log_rows(engine, queued_run) == [(0, "orphaned\n")]
    assert reload(engine, queued_run).status == RunStatus.RUNNING
    assert pending_count(client) == 0
    assert survivor.reclaim(min_idle_ms=0) == []


def test_a_log_chunk_for_an_unknown_run_is_dropped_without_blocking_the_stream(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    send_to_ingest(
        client,
        [
            LogChunk(run_id="no-such-run", seq=0, text="orphan\n"),
            LogChunk(run_id=queued_run, seq=0, text="kept\n"),
        ],
    )

    ingest.process(ingest.read(block_ms=100))

    assert log_rows(engine, queued_run) == [(0, "kept\n")]
    assert pending_count(client) == 0


def test_a_new_consumer_applies_a_killed_ones_entries_before_newer_ones(
    engine: Engine, client: redis.Redis, ingest: Ingest, queued_run: str
) -> None:
    """Points keep their order even when the consumer dies holding a batch."""

    def points(first: int, count: int) -> TrackingBatch:
        events = [
            [seq, {"r": queued_run, "k": "m", "n": "step", "v": seq, "t": 0.0}]
            for seq in range(first, first + count)
        ]
        return TrackingBatch(run_id=queued_run, origin=queued_run, producer="p", events=events)

    send_to_ingest(client, [points(0, 100)])
    assert len(ingest.read(block_ms=100)) == 1  # read, then the consumer is killed
    send_to_ingest(client, [points(100, 100)])  # the worker goes on logging

    successor = Ingest(engine, client, "successor")
    successor.take_over()
    successor.process(successor.read(block_ms=100))

    with Session(engine) as fresh:
        ordered = fresh.exec(
            select(MetricPoint.value)
            .where(MetricPoint.run_id == queued_run, MetricPoint.name == "step")
            .order_by(col(MetricPoint.idx))
        ).all()
    assert ordered == [float(i) for i in range(200)]
    assert pending_count(client) == 0
