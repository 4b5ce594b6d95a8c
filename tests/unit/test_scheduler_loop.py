"""The scheduler's loop outlives Redis restarting under it: a leader that learns a later
one wrote steps down, and when giving the lease back finds Redis still loading its data
(a restart), it retries like any step, rather than the process ending."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from protocol.settings import Settings
from scheduler.leadership import NotLeader
from scheduler.service import Scheduler


def test_a_redis_error_while_stepping_down_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: every Redis call below is one the test stands in for.
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:9/0")
    scheduler = Scheduler(settings, name="loop-test")
    steps: list[str] = []

    def step() -> None:
        steps.append("step")
        if len(steps) == 1:
            raise NotLeader("a later leader wrote")
        scheduler.stopping.set()  # the second step: the loop went on

    def step_down() -> None:
        steps.append("step down")
        raise redis.BusyLoadingError("Redis is loading the dataset in memory")

    monkeypatch.setattr(scheduler, "prepare", lambda: None)
    monkeypatch.setattr(scheduler, "leave", lambda: None)
    monkeypatch.setattr(scheduler, "step", step)
    monkeypatch.setattr(scheduler.lease, "step_down", step_down)
    monkeypatch.setattr(scheduler.stopping, "wait", lambda timeout=None: False)

    scheduler.run_forever()

    assert steps == ["step", "step down", "step"]
