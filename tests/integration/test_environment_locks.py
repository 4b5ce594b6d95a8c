"""The build lock the workers sharing an engine or a registry take (Redis): held while its
build lasts because its holder renews it, free again within its short TTL once the holder is
gone (a worker killed mid-build blocks no one for long), and a wait on it ends with the
run's cancel."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from protocol import keys
from runyard.errors import BuildCanceled, ExecutionFailed
from worker.environments.build_log import Deadline
from worker.environments.locks import LOCK_TTL, cluster_lock

SCOPE = "engine-of-the-test"

HOLDER = """
import sys
import redis
from worker.environments.build_log import Deadline
from worker.environments.locks import cluster_lock

url, build_hash, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
with cluster_lock(redis.Redis.from_url(url), sys.argv[4], build_hash, Deadline(60), ttl=ttl):
    print("held", flush=True)
    sys.stdin.read()  # builds until the test ends it
"""


@contextlib.contextmanager
def builder(url: str, build_hash: str, ttl: float) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    """Another worker's process, holding the lock of ``build_hash`` as its build does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, build_hash, str(ttl), SCOPE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.communicate()


def test_a_killed_builder_s_lock_frees_within_its_short_ttl(redis_service) -> None:
    client = redis.Redis.from_url(redis_service.url)
    build_hash = secrets.token_hex(16)
    with builder(redis_service.url, build_hash, LOCK_TTL) as process:
        process.kill()  # mid-build: nothing releases the lock
        process.wait()
        # It is gone within a minute, not after the longest build a worker allows.
        assert 0 < client.pttl(keys.environment_build(SCOPE, build_hash)) <= LOCK_TTL * 1000

    short = secrets.token_hex(16)
    with builder(redis_service.url, short, ttl=1) as process:
        process.kill()
        process.wait()
        # The next builder waits out what is left of it, then holds it.
        with cluster_lock(client, SCOPE, short, Deadline(60), ttl=1):
            assert client.exists(keys.environment_build(SCOPE, short))
    assert not client.exists(keys.environment_build(SCOPE, short))  # released after it


def test_a_live_builder_keeps_its_lock_past_its_ttl(redis_service) -> None:
    client = redis.Redis.from_url(redis_service.url)
    build_hash = secrets.token_hex(16)
    # Three of its TTLs later it still holds it: the other worker's wait ends unserved.
    with (
        builder(redis_service.url, build_hash, ttl=1),
        pytest.raises(ExecutionFailed) as waited,
        cluster_lock(client, SCOPE, build_hash, Deadline(3), ttl=1),
    ):
        pass
    assert str(waited.value) == (
        f"environment {build_hash} is being built elsewhere and that build did not end within 3 s"
    )


def test_a_wait_for_the_lock_ends_when_the_run_is_canceled(redis_service) -> None:
    client = redis.Redis.from_url(redis_service.url)
    build_hash = secrets.token_hex(16)
    with (
        builder(redis_service.url, build_hash, LOCK_TTL),
        pytest.raises(BuildCanceled) as stopped,
        cluster_lock(client, SCOPE, build_hash, Deadline(600, lambda: True)),
    ):
        pass
    assert str(stopped.value) == "environment build stopped: the run was canceled"
