"""Every process splits runs over the same ingest shards, or a run's entries go where no
scheduler reads and every barrier waits for copies that never pass: a process started with
another ``RUNYARD_INGEST_SHARDS`` than the one recorded refuses to start, in one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from protocol import keys
from protocol.streams import agree_on_shards
from runyard.errors import ConfigurationError
from tests.support.services import RedisServer, runyard


def test_the_first_count_is_recorded_and_another_refused(redis_service: RedisServer) -> None:
    client = redis.Redis.from_url(redis_service.url)
    agree_on_shards(client, keys.DEFAULT_INGEST_SHARDS)  # every other test runs with it
    agree_on_shards(client, keys.DEFAULT_INGEST_SHARDS)
    with pytest.raises(ConfigurationError, match="RUNYARD_INGEST_SHARDS is 4 here but"):
        agree_on_shards(client, 4)
    assert int(client.get(keys.INGEST_SHARD_COUNT)) == keys.DEFAULT_INGEST_SHARDS


@pytest.mark.parametrize(
    "command",
    [["scheduler"], ["worker", "--cluster", "gpu", "--executors", "local"], ["api", "--port", "1"]],
    ids=["scheduler", "worker", "api"],
)
def test_a_process_with_another_shard_count_refuses_to_start(
    redis_service: RedisServer, tmp_path: Path, command: list[str]
) -> None:
    agree_on_shards(redis.Redis.from_url(redis_service.url), keys.DEFAULT_INGEST_SHARDS)
    env = {
        **os.environ,
        "RUNYARD_REDIS_URL": redis_service.url,
        "RUNYARD_DATA_DIR": str(tmp_path / "data"),
        "RUNYARD_WORK_DIR": str(tmp_path / "work"),
        "RUNYARD_INGEST_SHARDS": "4",
    }
    process = subprocess.run(
        runyard(*command), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert process.returncode == ConfigurationError.exit_code
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "RUNYARD_INGEST_SHARDS is 4 here but" in lines[0], lines
    assert "Traceback" not in process.stderr
