"""The worker's heartbeat (``worker/heartbeat.py``, ``protocol/workers.py``) against a real
Redis: reached over a unix socket as over TCP, and a drain request withdraws the worker's
slots in the very beat that first sees it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from protocol.workers import WorkerInfo, live_workers, publish_heartbeat, request_drain
from tests.support.services import RedisServer, free_port
from worker.heartbeat import Heartbeat, own_connection


@pytest.fixture
def unix_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    folder = tmp_path_factory.mktemp("redis-unix")
    # A short path: a unix socket's path is limited to about 100 bytes.
    socket = Path(f"/tmp/runyard-{free_port()}.sock")
    server = RedisServer(free_port(), folder, unixsocket=socket)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        socket.unlink(missing_ok=True)


def test_own_connection_accepts_a_unix_socket_url() -> None:
    own = own_connection(redis.Redis.from_url("unix:///tmp/x.sock"), 2.5)
    own.connection_pool.make_connection()  # built, not connected: what raised TypeError

    kwargs = own.connection_pool.connection_kwargs
    assert own.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert kwargs["path"] == "/tmp/x.sock" and kwargs["socket_timeout"] == 2.5
    assert "socket_keepalive" not in kwargs


def test_own_connection_keeps_tcp_connections_alive() -> None:
    own = own_connection(redis.Redis.from_url("redis://127.0.0.1:1/0"), 2.5)

    assert own.connection_pool.connection_kwargs["socket_keepalive"] is True


def test_a_worker_on_a_unix_socket_redis_beats(unix_redis: RedisServer) -> None:
    client = redis.Redis.from_url(unix_redis.unix_url)
    heartbeat = Heartbeat(client, "w-unix", ["c"], slots=2, interval=1.0, ttl=60.0)

    heartbeat.beat()
    heartbeat.add_run("run-1")

    assert heartbeat.last_beat is not None
    [worker] = live_workers(client)
    assert (worker.id, worker.slots, worker.runs) == ("w-unix", 2, ["run-1"])


def test_a_beat_that_fails_in_any_way_is_logged_and_skipped(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    heartbeat = Heartbeat(client, "w-1", ["c"], slots=1, interval=1.0, ttl=60.0)

    def broken(*_args: object, **_kwargs: object) -> bool:
        raise OSError("connection refused at connect time")

    monkeypatch.setattr("worker.heartbeat.publish_heartbeat", broken)
    heartbeat.beat()  # does not raise

    assert heartbeat.last_beat is None


def test_a_worker_asked_to_drain_is_never_announced_with_free_slots_again(
    client: redis.Redis,
) -> None:
    info = WorkerInfo(id="w-1", hostname="node-1", clusters=["c"], slots=2)
    publish_heartbeat(client, info, ttl=60)
    request_drain(client, "w-1")

    # The worker does not know yet: it still describes itself as taking runs.
    assert publish_heartbeat(client, info, ttl=60) is True

    [worker] = live_workers(client)
    assert worker.draining


def test_the_heartbeat_drains_once_and_tells_the_worker(client: redis.Redis) -> None:
    heartbeat = Heartbeat(client, "w-1", ["c"], slots=2, interval=1.0, ttl=60.0)
    told: list[bool] = []
    heartbeat.on_drain.append(lambda: told.append(True))
    heartbeat.beat()
    assert not live_workers(client)[0].draining

    request_drain(client, "w-1")
    heartbeat.beat()
    heartbeat.beat()

    assert heartbeat.draining and told == [True]
    assert live_workers(client)[0].draining


def test_a_worker_announces_its_nodes_gpus(client: redis.Redis) -> None:
    """What admission on a cluster with quotas counts a slot's GPUs by (capacity.gpus)."""
    heartbeat = Heartbeat(client, "w-gpu", ["c"], slots=2, interval=1.0, ttl=60.0, gpus=8)

    heartbeat.beat()

    [worker] = live_workers(client)
    assert (worker.slots, worker.gpus) == (2, 8)
