"""Getting what a worker produced to Redis and the API, waiting out their restarts.

A run's state, log and metrics are never dropped because Redis or the API restarted:
sends retry with backoff (Redis for a day, an upload for five minutes).
"""

from __future__ import annotations

import logging
from typing import BinaryIO

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from protocol.messages import Entry
from protocol.streams import send_to_ingest
from runyard.client import Client
from runyard.errors import ServiceUnavailable

log = logging.getLogger(__name__)


@retry(
    retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
    wait=wait_exponential(multiplier=0.1, max=5),
    stop=stop_after_delay(24 * 3600),
    reraise=True,
    before_sleep=lambda state: log.warning("redis unavailable; retrying (%s)", state.outcome),
)
def send(client: redis.Redis, entries: list[Entry]) -> None:
    send_to_ingest(client, entries)


@retry(
    retry=retry_if_exception_type(ServiceUnavailable),
    wait=wait_exponential(multiplier=0.5, max=15),
    stop=stop_after_delay(300),
    reraise=True,
)
def upload(api: Client, run_id: str, name: str, content: BinaryIO) -> None:
    """Upload a file the run wrote, opened by ``worker.run_folder`` (never through a link:
    the worker may be root, and a run could otherwise point one at the host's files)."""
    content.seek(0)  # from the start on every attempt
    api.upload_file(run_id, name, content)
