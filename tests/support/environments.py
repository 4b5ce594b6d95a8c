"""Environments as runs record them: an example of what a worker that built one reports
(``protocol.environment_used``), and sending such a report down the stream workers write
to, for a test that stands in for a worker with a builder."""

from __future__ import annotations

from typing import Any

import redis

from protocol.messages import StateChanged
from protocol.streams import send_to_ingest
from runyard.status import RunStatus
from tests.support.services import Stack

# What a worker that built an environment reports with Starting.
BUILT: dict[str, Any] = {
    "name": "sklearn",
    "version": "3",
    "hash": "0123456789abcdef0123456789abcdef",
    "spec_hash": "fedcba9876543210fedcba9876543210",
    "packages": ["numpy==2.1.3", "scikit-learn==1.5.2", "scipy==1.14.1"],
    "image": None,
    "venv": "/var/cache/runyard/venvs/0123456789abcdef0123456789abcdef",
    "cached": False,
    "build_seconds": 12.5,
}


def report_as_a_worker(stack: Stack, run_id: str, environment: Any, *then: RunStatus) -> None:
    """Send a Starting report carrying ``environment`` down the stream workers write to,
    and the states ``then``."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        state = StateChanged(run_id=run_id, status=RunStatus.STARTING, environment=environment)
        send_to_ingest(client, [state, *(StateChanged(run_id=run_id, status=s) for s in then)])
    finally:
        client.close()
